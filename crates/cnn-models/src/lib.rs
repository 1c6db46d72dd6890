//! AlexNet and ResNet on candle, trainable and numerically equal to PyTorch's.
//!
//! Networks use torchvision's layout and tensor names, draw their initial values from a
//! seeded generator with torchvision's distributions, load and save safetensors, and print
//! a layer summary. Every op they call lives in the `cnn-ops` crate, the one place faster
//! kernels go.
//! Convolution kernels are held tap by tap (`[out][kh][kw][in]`, see [`Stored`]), the
//! layout the CPU convolutions multiply; files and [`Param::to_torch`] give torchvision's.
//!
//! ```no_run
//! use cnn_models::{Model, Pass};
//! use candle_core::{Device, Tensor};
//! let model = Model::new("resnet18", 10, 0, &Device::Cpu)?;
//! let x = Tensor::zeros((2, 3, 224, 224), candle_core::DType::F32, &Device::Cpu)?;
//! let logits = model.forward(&x, &Pass::infer())?; // (2, 10), no graph kept
//! println!("{}", model.summary(224, 64)?);
//! # Ok::<(), cnn_models::ModelError>(())
//! ```

mod alexnet;
mod cam;
mod error;
mod init;
mod layers;
mod model;
mod network;
mod params;
mod pass;
mod pretrained;
mod pth;
mod registry;
mod resnet;
mod summary;
mod weights;

pub use cam::{grad_cam_map, GradCam};
pub use error::ModelError;
pub use init::{Init, InitRng};
pub use layers::Builder;
pub use model::Model;
pub use network::{ArchSpec, Network};
pub use params::{Param, ParamKind, ParamStore, Stored};
pub use pass::{ConvLayer, LayerOutput, LayerRecord, Mode, Pass};
pub use pretrained::InitReport;
pub use pth::{read_pth, read_tensors};
pub use registry::{find_arch, ARCHITECTURES};
pub use summary::{thousands, Summary};
