//! What a network is to the rest of the crate: its forward pass, and how to build it by name.

use crate::layers::Builder;
use crate::pass::Pass;
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
    /// The module whose output Grad-CAM weighs (torchvision's path): the last convolutional
    /// stage, where the maps are smallest and most about classes (ResNets: `layer4`'s last
    /// block; AlexNet: the ReLU after the last convolution).
    pub cam_layer: &'static str,
    /// Creates the layers with a builder that registers and initialises their tensors.
    pub build: fn(&mut Builder, usize) -> Result<Box<dyn Network>>,
}
