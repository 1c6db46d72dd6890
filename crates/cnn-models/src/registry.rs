//! Architecture names and their builders: adding a network is one new file and one line here.

use crate::layers::Builder;
use crate::pass::Pass;
use crate::{alexnet, resnet, ModelError};
use candle_core::{Result, Tensor};

/// A network's forward pass over its layers (the tensors live in the model's `ParamStore`).
pub trait Network: Send + Sync {
    /// Logits `(batch, classes)` for an NCHW batch.
    fn forward(&self, x: &Tensor, pass: &Pass) -> Result<Tensor>;
}

/// How to build one architecture.
#[derive(Clone, Copy)]
pub struct ArchSpec {
    /// The name users pass (`--arch`).
    pub name: &'static str,
    /// One line for listings.
    pub description: &'static str,
    /// Smallest square input side the network accepts.
    pub min_image_size: usize,
    /// Creates the layers with a builder that registers and initialises their tensors.
    pub build: fn(&mut Builder, usize) -> Result<Box<dyn Network>>,
}

/// Every architecture the crate knows.
pub const ARCHITECTURES: &[ArchSpec] = &[
    alexnet::ALEXNET,
    alexnet::ALEXNET_D2L,
    resnet::RESNET18,
    resnet::RESNET34,
];

/// The architecture called `name` (`_` and `-` are interchangeable, case is ignored).
pub fn find_arch(name: &str) -> std::result::Result<&'static ArchSpec, ModelError> {
    let wanted = name.to_ascii_lowercase().replace('_', "-");
    ARCHITECTURES
        .iter()
        .find(|a| a.name == wanted)
        .ok_or_else(|| ModelError::UnknownArch {
            name: name.to_string(),
            known: ARCHITECTURES
                .iter()
                .map(|a| a.name)
                .collect::<Vec<_>>()
                .join(", "),
        })
}
