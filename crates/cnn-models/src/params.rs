//! The named tensors of a model, in torchvision's `state_dict` order and names.

use candle_core::{Tensor, Var};

/// Whether the optimiser updates a tensor or the forward pass maintains it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// Learned by gradient descent (weights and biases).
    Trainable,
    /// State kept by the model (BatchNorm running mean and variance).
    Buffer,
}

/// One named tensor of a model.
#[derive(Clone)]
pub struct Param {
    pub name: String,
    pub var: Var,
    pub kind: ParamKind,
}

/// Every tensor of a model, shared with the layers that use them: setting a `Var` here
/// (loading weights, an optimiser step) changes what the layer computes.
#[derive(Clone, Default)]
pub struct ParamStore {
    params: Vec<Param>,
}

impl ParamStore {
    pub(crate) fn push(&mut self, name: String, var: Var, kind: ParamKind) {
        self.params.push(Param { name, var, kind });
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

    /// Every tensor by name, as detached views of the live storage: a later update shows
    /// through, so save or copy them before the next step.
    pub fn tensors(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .map(|p| (p.name.clone(), p.var.as_tensor().detach()))
            .collect()
    }
}
