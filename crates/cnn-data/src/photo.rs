//! Single photos for classification: decode, eval transform, normalise.

use std::path::Path;

use ndarray::Array3;

use crate::decode::decode_file;
use crate::error::DataError;
use crate::normalise::{normalise, Normalise};
use crate::transform::Transform;

/// Loads one image as the eval loader would see it: shorter side resized to `image_size`,
/// centre-cropped to `image_size x image_size`, ImageNet-normalised, `3 x H x W`.
pub fn load_image(path: impl AsRef<Path>, image_size: u32) -> Result<Array3<f32>, DataError> {
    let path = path.as_ref();
    if image_size == 0 {
        return Err(DataError::Config("image_size must be positive".into()));
    }
    let img = decode_file(path)?;
    let img = Transform::eval(image_size).apply(&img, image_size, 0, 0, 0);
    Ok(normalise(&img, &Normalise::IMAGENET))
}
