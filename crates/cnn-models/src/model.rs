//! A built network with its named tensors: the type downstream crates hold.

use crate::layers::Builder;
use crate::params::ParamStore;
use crate::pass::Pass;
use crate::registry::{find_arch, ArchSpec, Network};
use crate::ModelError;
use candle_core::{Device, Tensor};

/// A network ready to train or run: its architecture, class count and tensors.
pub struct Model {
    spec: &'static ArchSpec,
    num_classes: usize,
    device: Device,
    params: ParamStore,
    net: Box<dyn Network>,
}

impl Model {
    /// Builds `arch` for `num_classes` classes with initial values drawn from `seed`.
    pub fn new(
        arch: &str,
        num_classes: usize,
        seed: u64,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let spec = find_arch(arch)?;
        if num_classes == 0 {
            return Err(ModelError::NoClasses {
                arch: spec.name.to_string(),
            });
        }
        let mut builder = Builder::new(seed, device);
        let net = (spec.build)(&mut builder, num_classes)?;
        Ok(Self {
            spec,
            num_classes,
            device: device.clone(),
            params: builder.into_store(),
            net,
        })
    }

    /// The registry name, e.g. `resnet18`.
    pub fn arch(&self) -> &'static str {
        self.spec.name
    }

    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Smallest square input side this architecture accepts.
    pub fn min_image_size(&self) -> usize {
        self.spec.min_image_size
    }

    /// Every tensor under torchvision's names (trainable ones and BatchNorm buffers).
    pub fn params(&self) -> &ParamStore {
        &self.params
    }

    /// Logits `(batch, classes)` for an NCHW batch of normalised images.
    pub fn forward(&self, x: &Tensor, pass: &Pass) -> Result<Tensor, ModelError> {
        let arch = self.spec.name.to_string();
        let shape = x.dims().to_vec();
        let [_, 3, h, w] = shape[..] else {
            return Err(ModelError::BadInput { arch, shape });
        };
        let min = self.spec.min_image_size;
        if h < min || w < min {
            return Err(ModelError::ImageTooSmall {
                arch,
                min,
                height: h,
                width: w,
            });
        }
        Ok(self.net.forward(x, pass)?)
    }

    pub(crate) fn spec(&self) -> &'static ArchSpec {
        self.spec
    }
}
