//! The named tensors of a model, in torchvision's `state_dict` order and names.

use candle_core::{Result, Tensor, Var};

/// Whether the optimiser updates a tensor or the forward pass maintains it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// Learned by gradient descent (weights and biases).
    Trainable,
    /// State kept by the model (BatchNorm running mean and variance).
    Buffer,
}

/// How a tensor is held, against torchvision's layout for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// In torchvision's layout.
    AsTorch,
    /// A convolution kernel tap by tap, `[out][kh][kw][in]` (OHWI), where torchvision's is
    /// `[out][in][kh][kw]`: the CPU convolutions multiply it in place on small maps, where
    /// a kernel in torchvision's layout is copied into this one, and its gradient back, on
    /// every step (see `cnn_ops::conv2d_ohwi`).
    KernelOhwi,
}

/// One named tensor of a model. `var` holds it as `stored` says: use [`Param::to_torch`]
/// for its value or gradient in torchvision's layout.
#[derive(Clone)]
pub struct Param {
    pub name: String,
    pub var: Var,
    pub kind: ParamKind,
    pub stored: Stored,
}

impl Param {
    /// `t`, of this tensor's stored dims (its value or its gradient), in torchvision's layout.
    pub fn to_torch(&self, t: &Tensor) -> Result<Tensor> {
        match self.stored {
            Stored::AsTorch => Ok(t.clone()),
            Stored::KernelOhwi => t.permute((0, 3, 1, 2))?.contiguous(),
        }
    }

    /// `t`, in torchvision's layout, as this tensor is stored.
    pub fn from_torch(&self, t: &Tensor) -> Result<Tensor> {
        match self.stored {
            Stored::AsTorch => Ok(t.clone()),
            Stored::KernelOhwi => t.permute((0, 2, 3, 1))?.contiguous(),
        }
    }

    /// The dims torchvision gives this tensor.
    pub fn torch_dims(&self) -> Vec<usize> {
        match (self.stored, self.var.dims()) {
            (Stored::KernelOhwi, &[o, h, w, i]) => vec![o, i, h, w],
            (_, dims) => dims.to_vec(),
        }
    }
}

/// Every tensor of a model, shared with the layers that use them: setting a `Var` here
/// (loading weights, an optimiser step) changes what the layer computes.
#[derive(Clone, Default)]
pub struct ParamStore {
    params: Vec<Param>,
}

impl ParamStore {
    pub(crate) fn push(&mut self, name: String, var: Var, kind: ParamKind, stored: Stored) {
        self.params.push(Param {
            name,
            var,
            kind,
            stored,
        });
    }

    /// All tensors, trainable and buffers, in registration order.
    pub fn all(&self) -> &[Param] {
        &self.params
    }

    /// The tensors the optimiser updates, in registration order.
    pub fn trainable(&self) -> impl Iterator<Item = &Param> {
        self.params
            .iter()
            .filter(|p| p.kind == ParamKind::Trainable)
    }

    /// The tensor called `name`, if any.
    pub fn get(&self, name: &str) -> Option<&Param> {
        self.params.iter().find(|p| p.name == name)
    }

    /// Number of scalar values in trainable tensors.
    pub fn trainable_count(&self) -> usize {
        self.trainable().map(|p| p.var.elem_count()).sum()
    }

    /// Number of scalar values in all tensors (trainable and buffers).
    pub fn total_count(&self) -> usize {
        self.params.iter().map(|p| p.var.elem_count()).sum()
    }

    /// Bytes held by all tensors.
    pub fn bytes(&self) -> usize {
        self.params
            .iter()
            .map(|p| p.var.elem_count() * p.var.dtype().size_in_bytes())
            .sum()
    }

    /// Every tensor by name in torchvision's layout: for tensors held in that layout,
    /// detached views of the live storage (a later update shows through, so save or copy
    /// them before the next step); for the convolution kernels, copies.
    pub fn tensors(&self) -> Result<Vec<(String, Tensor)>> {
        self.params
            .iter()
            .map(|p| Ok((p.name.clone(), p.to_torch(&p.var.as_tensor().detach())?)))
            .collect()
    }
}
