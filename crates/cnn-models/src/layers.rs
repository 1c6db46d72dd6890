//! The layers the networks are built from, each holding its tensors under torchvision's
//! names, plus the builder that creates and registers them with seeded initial values.

use crate::init::{Init, InitRng};
use crate::params::{ParamKind, ParamStore, Stored};
use crate::pass::Pass;
use candle_core::{DType, Device, Result, Tensor, Var};
use cnn_ops as ops;

/// Creates layers, draws their initial values in order from one seeded stream, and
/// registers their tensors by name.
pub struct Builder {
    store: ParamStore,
    rng: InitRng,
    device: Device,
    dtype: DType,
}

impl Builder {
    /// Layers in float32, the type networks train in.
    pub fn new(seed: u64, device: &Device) -> Self {
        Self::with_dtype(seed, device, DType::F32)
    }

    /// Layers whose tensors are of `dtype` (f32 or f64: the types the ops compute in).
    /// The values are drawn as in float32 and converted, so a seed builds the same model
    /// in either type.
    pub fn with_dtype(seed: u64, device: &Device, dtype: DType) -> Self {
        Self {
            store: ParamStore::default(),
            rng: InitRng::new(seed),
            device: device.clone(),
            dtype,
        }
    }

    pub fn into_store(self) -> ParamStore {
        self.store
    }

    /// A tensor of torchvision's `shape` drawn from `init`, held as `stored` says.
    fn tensor(
        &mut self,
        name: String,
        shape: &[usize],
        init: Init,
        (kind, stored): (ParamKind, Stored),
    ) -> Result<Var> {
        let len = shape.iter().product();
        // Drawn in torchvision's order whatever the layout: the same seed, the same model.
        let values = Tensor::from_vec(self.rng.draw(init, len), shape, &self.device)?
            .to_dtype(self.dtype)?;
        let values = match stored {
            Stored::AsTorch => values,
            Stored::KernelOhwi => values.permute((0, 2, 3, 1))?.contiguous()?,
        };
        let var = Var::from_tensor(&values)?;
        self.store.push(name, var.clone(), kind, stored);
        Ok(var)
    }

    /// `nn.Conv2d(cin, cout, kernel, stride, padding, bias)` initialised with `weight_init`
    /// (bias, when present, always gets PyTorch's default), the kernel held tap by tap
    /// ([`Stored::KernelOhwi`]).
    #[allow(clippy::too_many_arguments)]
    pub fn conv2d(
        &mut self,
        name: &str,
        cin: usize,
        cout: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        bias: bool,
        weight_init: Init,
    ) -> Result<Conv2d> {
        let fan_in = cin * kernel * kernel;
        let weight = self.tensor(
            format!("{name}.weight"),
            &[cout, cin, kernel, kernel],
            weight_init,
            (ParamKind::Trainable, Stored::KernelOhwi),
        )?;
        let bias = match bias {
            true => Some(self.tensor(
                format!("{name}.bias"),
                &[cout],
                Init::TorchDefault { fan_in },
                (ParamKind::Trainable, Stored::AsTorch),
            )?),
            false => None,
        };
        Ok(Conv2d {
            name: name.to_string(),
            weight,
            bias,
            stride,
            padding,
        })
    }

    /// `nn.BatchNorm2d(channels)`: weight 1, bias 0, running mean 0, running var 1.
    pub fn batch_norm2d(&mut self, name: &str, channels: usize) -> Result<BatchNorm2d> {
        let mut t = |suffix: &str, value, kind| {
            self.tensor(
                format!("{name}.{suffix}"),
                &[channels],
                Init::Constant(value),
                (kind, Stored::AsTorch),
            )
        };
        Ok(BatchNorm2d {
            name: name.to_string(),
            weight: t("weight", 1.0, ParamKind::Trainable)?,
            bias: t("bias", 0.0, ParamKind::Trainable)?,
            running_mean: t("running_mean", 0.0, ParamKind::Buffer)?,
            running_var: t("running_var", 1.0, ParamKind::Buffer)?,
            momentum: 0.1,
            eps: 1e-5,
        })
    }

    /// `nn.Linear(inputs, outputs)` with PyTorch's default initialisation.
    pub fn linear(&mut self, name: &str, inputs: usize, outputs: usize) -> Result<Linear> {
        let init = Init::TorchDefault { fan_in: inputs };
        Ok(Linear {
            name: name.to_string(),
            weight: self.tensor(
                format!("{name}.weight"),
                &[outputs, inputs],
                init,
                (ParamKind::Trainable, Stored::AsTorch),
            )?,
            bias: self.tensor(
                format!("{name}.bias"),
                &[outputs],
                init,
                (ParamKind::Trainable, Stored::AsTorch),
            )?,
        })
    }
}

/// `nn.Conv2d`.
pub struct Conv2d {
    name: String,
    weight: Var,
    bias: Option<Var>,
    stride: usize,
    padding: usize,
}

impl Conv2d {
    pub fn forward(&self, x: &Tensor, pass: &Pass) -> Result<Tensor> {
        let bias = self.bias.as_ref().map(|b| pass.param(b));
        let weight = pass.param(&self.weight);
        if let &[cout, kh, kw, _] = weight.dims() {
            let geometry = (self.stride, self.padding);
            pass.record_conv(&self.name, x, (cout, [kh, kw]), geometry);
        }
        let y = ops::conv2d_ohwi(x, &weight, bias.as_ref(), self.stride, self.padding)?;
        let params = self.weight.elem_count() + self.bias.as_ref().map_or(0, |b| b.elem_count());
        pass.record(&self.name, "Conv2d", &y, params);
        Ok(y)
    }
}

/// `nn.BatchNorm2d` with PyTorch's momentum 0.1 and eps 1e-5.
pub struct BatchNorm2d {
    name: String,
    weight: Var,
    bias: Var,
    running_mean: Var,
    running_var: Var,
    momentum: f64,
    eps: f64,
}

impl BatchNorm2d {
    /// Train mode also moves the running statistics towards the batch's.
    pub fn forward(&self, x: &Tensor, pass: &Pass) -> Result<Tensor> {
        self.apply(x, None, pass, None)
    }

    /// [`Self::forward`] then `nn.ReLU` (recorded in the trace as `relu_name`), computed as
    /// one op: no separate ReLU output or gradient tensor, one pass fewer each way.
    pub fn forward_relu(&self, x: &Tensor, pass: &Pass, relu_name: &str) -> Result<Tensor> {
        self.apply(x, None, pass, Some(relu_name))
    }

    /// `relu(self.forward(x) + residual)`, a residual block's end (the ReLU recorded as
    /// `relu_name`), as one op: no normalised or summed tensor is kept, forward or backward.
    /// The BN's own row is not recorded: call [`Self::record`] where PyTorch's order has it.
    pub fn forward_add_relu(
        &self,
        x: &Tensor,
        residual: &Tensor,
        pass: &Pass,
        relu_name: &str,
    ) -> Result<Tensor> {
        self.apply(x, Some(residual), pass, Some(relu_name))
    }

    /// Records this layer's row in the pass's trace, with an output shaped like `like`.
    pub(crate) fn record(&self, like: &Tensor, pass: &Pass) {
        pass.record(
            &self.name,
            "BatchNorm2d",
            like,
            2 * self.weight.elem_count(),
        );
    }

    fn apply(
        &self,
        x: &Tensor,
        residual: Option<&Tensor>,
        pass: &Pass,
        relu: Option<&str>,
    ) -> Result<Tensor> {
        let y = if pass.is_train() {
            let (w, b, eps) = (&self.weight, &self.bias, self.eps);
            let (y, stats) = match (residual, relu) {
                (Some(r), _) => ops::batch_norm_add_relu_train(x, w, b, r, eps)?,
                (None, Some(_)) => ops::batch_norm_relu_train(x, w, b, eps)?,
                (None, None) => ops::batch_norm_train(x, w, b, eps)?,
            };
            let m = self.momentum;
            let blend = |old: &Var, new: &Tensor| -> Result<()> {
                old.set(&((old.as_tensor() * (1.0 - m))? + (new * m)?)?)
            };
            blend(&self.running_mean, &stats.mean)?;
            blend(&self.running_var, &stats.unbiased_var)?;
            y
        } else {
            let (w, b) = (&pass.param(&self.weight), &pass.param(&self.bias));
            let (rm, rv) = (
                &pass.param(&self.running_mean),
                &pass.param(&self.running_var),
            );
            match (residual, relu) {
                (Some(r), _) => ops::batch_norm_add_relu_eval(x, w, b, rm, rv, r, self.eps)?,
                (None, Some(_)) => ops::batch_norm_relu_eval(x, w, b, rm, rv, self.eps)?,
                (None, None) => ops::batch_norm_eval(x, w, b, rm, rv, self.eps)?,
            }
        };
        if residual.is_none() {
            self.record(&y, pass);
        }
        if let Some(name) = relu {
            pass.record(name, "ReLU", &y, 0);
        }
        Ok(y)
    }
}

/// `nn.Linear`.
pub struct Linear {
    name: String,
    weight: Var,
    bias: Var,
}

impl Linear {
    pub fn forward(&self, x: &Tensor, pass: &Pass) -> Result<Tensor> {
        let (w, b) = (pass.param(&self.weight), pass.param(&self.bias));
        let y = ops::linear(x, &w, Some(&b))?;
        pass.record(
            &self.name,
            "Linear",
            &y,
            self.weight.elem_count() + self.bias.elem_count(),
        );
        Ok(y)
    }
}

/// `nn.ReLU`, recorded under `name` in the summary.
pub fn relu(x: &Tensor, name: &str, pass: &Pass) -> Result<Tensor> {
    let y = ops::relu(x)?;
    pass.record(name, "ReLU", &y, 0);
    pass.through_probe(name, y)
}

/// `nn.MaxPool2d(kernel, stride, padding)`.
pub fn max_pool2d(
    x: &Tensor,
    kernel: usize,
    stride: usize,
    padding: usize,
    name: &str,
    pass: &Pass,
) -> Result<Tensor> {
    let y = ops::max_pool2d(x, kernel, stride, padding)?;
    pass.record(name, "MaxPool2d", &y, 0);
    Ok(y)
}

/// `nn.AdaptiveAvgPool2d((h, w))`.
pub fn adaptive_avg_pool2d(
    x: &Tensor,
    h: usize,
    w: usize,
    name: &str,
    pass: &Pass,
) -> Result<Tensor> {
    let y = ops::adaptive_avg_pool2d(x, h, w)?;
    pass.record(name, "AdaptiveAvgPool2d", &y, 0);
    Ok(y)
}

/// `nn.Dropout(p)`: active in train mode only. `layer_id` makes each layer's mask distinct.
pub fn dropout(x: &Tensor, p: f64, layer_id: u64, name: &str, pass: &Pass) -> Result<Tensor> {
    let y = if pass.is_train() {
        // SplitMix-style mixing so neighbouring seeds and ids give unrelated streams.
        let seed = pass.dropout_seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ layer_id.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        ops::dropout(x, p, seed)?
    } else {
        x.clone()
    };
    pass.record(name, "Dropout", &y, 0);
    Ok(y)
}
