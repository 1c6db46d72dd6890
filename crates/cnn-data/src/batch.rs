//! `Batch`: what the loader hands the trainer, host arrays only.

use ndarray::Array4;

/// A batch of normalised images with their labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// `N x 3 x H x W`, normalised, contiguous (row-major).
    pub images: Array4<f32>,
    /// Class index of each image.
    pub labels: Vec<u32>,
    /// Index of each image in the split it came from.
    pub indices: Vec<usize>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}
