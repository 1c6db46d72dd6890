//! Grad-CAM (Selvaraju et al., 2017): which positions of the last convolutional stage a
//! class's logit comes from, as a map over that stage's grid.

use crate::error::ModelError;
use crate::model::Model;
use crate::pass::Pass;
use candle_core::{DType, IndexOp, Tensor};

/// The class-activation map of one image.
#[derive(Debug, Clone, PartialEq)]
pub struct GradCam {
    /// The module whose output was weighed (torchvision's path, e.g. `layer4.1`).
    pub layer: &'static str,
    /// The class explained.
    pub class: usize,
    /// That class's logit.
    pub logit: f32,
    /// Rows and columns of the map: the layer's output grid.
    pub height: usize,
    pub width: usize,
    /// `height * width` values, row by row, in `[0, 1]`: [`grad_cam_map`] divided by its
    /// largest value (all zero where no position speaks for the class).
    pub values: Vec<f32>,
}

impl Model {
    /// The module Grad-CAM weighs in this architecture (see [`crate::ArchSpec::cam_layer`]).
    pub fn cam_layer(&self) -> &'static str {
        self.spec().cam_layer
    }

    /// Grad-CAM of one image `(1, 3, H, W)` for `class`, or for the top class when `None`,
    /// in eval mode. The backward pass runs from the class's logit to the CAM layer only.
    pub fn grad_cam(&self, image: &Tensor, class: Option<usize>) -> Result<GradCam, ModelError> {
        if image.dims().first() != Some(&1) {
            return Err(ModelError::BadInput {
                arch: self.arch().to_string(),
                shape: image.dims().to_vec(),
            });
        }
        let layer = self.cam_layer();
        let pass = Pass::infer().probing(layer);
        let logits = self.forward(image, &pass)?.i(0)?;
        let class = match class {
            Some(c) if c >= self.num_classes() => {
                return Err(ModelError::NoSuchClass {
                    class: c,
                    classes: self.num_classes(),
                })
            }
            Some(c) => c,
            None => logits.argmax(0)?.to_scalar::<u32>()? as usize,
        };
        let (activations, probe) = pass.take_probe().ok_or_else(|| ModelError::NoSuchLayer {
            arch: self.arch().to_string(),
            layer: layer.to_string(),
        })?;
        let score = logits.i(class)?;
        let logit = score.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        let grads = score.backward()?;
        let gradient = match grads.get(probe.as_tensor()) {
            Some(g) => g.clone(),
            // The logit does not depend on the layer at all (e.g. its weights are zero).
            None => activations.zeros_like()?,
        };
        let map = grad_cam_map(&activations.i(0)?, &gradient.i(0)?)?;
        let (height, width) = map.dims2()?;
        let raw = map.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        Ok(GradCam {
            layer,
            class,
            logit,
            height,
            width,
            values: scaled_to_one(raw),
        })
    }
}

/// Grad-CAM's map from a layer's activations `A` and the gradient of a class's logit with
/// respect to them, both `(channels, H, W)`: each channel weighed by its gradient's mean
/// over the grid, `alpha_k`, and `ReLU(sum_k alpha_k A_k)`, `(H, W)`.
pub fn grad_cam_map(activations: &Tensor, gradient: &Tensor) -> candle_core::Result<Tensor> {
    let alpha = gradient.mean_keepdim((1, 2))?;
    activations.broadcast_mul(&alpha)?.sum(0)?.relu()
}

/// `values` divided by the largest (they are non-negative); all zero stays all zero.
fn scaled_to_one(mut values: Vec<f32>) -> Vec<f32> {
    let max = values.iter().copied().fold(0.0f32, f32::max);
    if max > 0.0 {
        values.iter_mut().for_each(|v| *v /= max);
    }
    values
}
