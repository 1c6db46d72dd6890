//! A built network with its named tensors: the type downstream crates hold.

use crate::error::ModelError;
use crate::layers::Builder;
use crate::network::{ArchSpec, Network};
use crate::params::ParamStore;
use crate::pass::Pass;
use crate::registry::find_arch;
use candle_core::{DType, Device, Tensor};

/// A network ready to train or run: its architecture, class count and tensors.
pub struct Model {
    spec: &'static ArchSpec,
    num_classes: usize,
    device: Device,
    params: ParamStore,
    net: Box<dyn Network>,
}

impl Model {
    /// Builds `arch` for `num_classes` classes with initial values drawn from `seed`, in
    /// float32.
    pub fn new(
        arch: &str,
        num_classes: usize,
        seed: u64,
        device: &Device,
    ) -> Result<Self, ModelError> {
        Self::with_dtype(arch, num_classes, seed, device, DType::F32)
    }

    /// [`Self::new`] with tensors of `dtype`: f32 to train, f64 as the reference the
    /// precision tests hold float32 to (every op computes in both).
    pub fn with_dtype(
        arch: &str,
        num_classes: usize,
        seed: u64,
        device: &Device,
        dtype: DType,
    ) -> Result<Self, ModelError> {
        let spec = find_arch(arch)?;
        if num_classes == 0 {
            return Err(ModelError::NoClasses {
                arch: spec.name.to_string(),
            });
        }
        if !matches!(dtype, DType::F32 | DType::F64) {
            return Err(ModelError::UnsupportedDType {
                arch: spec.name.to_string(),
                dtype,
            });
        }
        let mut builder = Builder::with_dtype(seed, device, dtype);
        let net = (spec.build)(&mut builder, num_classes)?;
        Ok(Self {
            spec,
            num_classes,
            device: device.clone(),
            params: builder.into_store(),
            net,
        })
    }

    /// A copy of this model (its every tensor, buffers included) in `dtype`, on the same
    /// device: float64 for a reference run of the same weights.
    pub fn to_dtype(&self, dtype: DType) -> Result<Self, ModelError> {
        let copy = Self::with_dtype(self.arch(), self.num_classes, 0, &self.device, dtype)?;
        for (from, to) in self.params.all().iter().zip(copy.params.all()) {
            to.var.set(&from.var.as_tensor().to_dtype(dtype)?)?;
        }
        Ok(copy)
    }

    /// The type the model's tensors hold and its ops compute in.
    pub fn dtype(&self) -> DType {
        self.params.all()[0].var.dtype()
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
        if x.dtype() != self.dtype() {
            return Err(ModelError::InputDTypeMismatch {
                arch,
                model: self.dtype(),
                input: x.dtype(),
            });
        }
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
