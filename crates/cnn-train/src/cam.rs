//! Grad-CAM pictures of photos for a trained run: the photo cropped as the model saw it,
//! with the top class's class-activation map over it.

use crate::error::Result;
use crate::run::TrainedRun;
use cnn_data::{Enlarge, Grid, Rgb8, Transform};
use cnn_models::GradCam;
use std::path::Path;

/// The smallest map side drawn as a smooth heat map. A coarser map says little about where
/// a model looks (a 1x1 map is one number for the whole photo): it is drawn as flat blocks
/// and [`PhotoCam::note`] says so.
pub const MIN_CAM_SIDE: usize = 4;

/// How much of a pixel of the picture is heat (the rest is the photo).
const HEAT_ALPHA: f32 = 0.45;

/// One photo's Grad-CAM for one run.
pub struct PhotoCam {
    /// The map, for the top class.
    pub cam: GradCam,
    /// The photo cropped as the eval transform crops it, `side` pixels square, the map
    /// over it.
    pub picture: Rgb8,
    /// Why the map cannot show where the model looks, when it is under
    /// [`MIN_CAM_SIDE`] a side.
    pub note: Option<String>,
}

impl TrainedRun {
    /// Grad-CAM of the top class for the image file `path`, drawn over the photo at `side`
    /// pixels (the crop the model saw, at a size for people).
    pub fn photo_cam(&self, path: impl AsRef<Path>, side: u32) -> Result<PhotoCam> {
        let photo = cnn_data::decode_file(path)?;
        let cam = self.model.grad_cam(&self.prepare(&photo)?, None)?;
        let size = self.config.image_size as u32;
        // The eval transform's crop at `side` px: the shorter side resized in proportion.
        let resize = self.config.data.eval_resize.unwrap_or(size) as u64;
        let display = Transform::Eval {
            resize: ((resize * side as u64 + size as u64 / 2) / size as u64).max(side as u64)
                as u32,
        };
        let crop = display.apply(&photo, side, 0, 0, 0);
        let coarse = cam.height.min(cam.width) < MIN_CAM_SIDE;
        let grid = Grid {
            values: &cam.values,
            rows: cam.height,
            cols: cam.width,
        };
        let enlarge = if coarse {
            Enlarge::Blocks
        } else {
            Enlarge::Smooth
        };
        let picture = cnn_data::overlay_heatmap(&crop, grid, enlarge, HEAT_ALPHA)?;
        let note = coarse.then(|| {
            format!(
                "{}'s map is {}x{} at {size} px, too coarse to show where the model looks \
                 (drawn as blocks; a larger image size gives a finer map)",
                cam.layer, cam.height, cam.width
            )
        });
        Ok(PhotoCam { cam, picture, note })
    }
}
