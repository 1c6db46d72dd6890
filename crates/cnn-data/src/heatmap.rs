//! Heat maps over pictures: a coarse grid of values in `[0, 1]` enlarged to an image's size,
//! coloured with the jet colour map and blended over it (Grad-CAM pictures), and PNG output.
//! Knows nothing of where the values come from.

use std::path::Path;

use crate::error::DataError;
use crate::rgb::Rgb8;

/// How a grid is enlarged to the picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enlarge {
    /// Bilinear between cell centres (as OpenCV's `resize` and torch's `align_corners=False`),
    /// the usual Grad-CAM picture.
    Smooth,
    /// Each cell a flat block: for grids too coarse for interpolation to mean anything.
    Blocks,
}

/// A grid of `rows x cols` values, row by row.
#[derive(Debug, Clone, Copy)]
pub struct Grid<'a> {
    pub values: &'a [f32],
    pub rows: usize,
    pub cols: usize,
}

/// `picture` with `grid` over it: enlarged to the picture's size as `enlarge` says,
/// coloured with [`jet`] and blended as `alpha * heat + (1 - alpha) * picture`.
pub fn overlay_heatmap(
    picture: &Rgb8,
    grid: Grid,
    enlarge: Enlarge,
    alpha: f32,
) -> Result<Rgb8, DataError> {
    if grid.rows == 0 || grid.cols == 0 || grid.values.len() != grid.rows * grid.cols {
        return Err(DataError::Config(format!(
            "a heat map of {}x{} needs {} values, got {}",
            grid.rows,
            grid.cols,
            grid.rows * grid.cols,
            grid.values.len()
        )));
    }
    let (w, h) = (picture.width as usize, picture.height as usize);
    let mut pixels = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            let v = match enlarge {
                Enlarge::Smooth => bilinear(
                    grid,
                    (y as f32 + 0.5) / h as f32,
                    (x as f32 + 0.5) / w as f32,
                ),
                Enlarge::Blocks => grid.values[(y * grid.rows / h) * grid.cols + x * grid.cols / w],
            };
            let heat = jet(v);
            let under = picture.get(x as u32, y as u32);
            for c in 0..3 {
                let blended = alpha * heat[c] as f32 + (1.0 - alpha) * under[c] as f32;
                pixels.push(blended.round().clamp(0.0, 255.0) as u8);
            }
        }
    }
    Ok(Rgb8::new(picture.width, picture.height, pixels).expect("sized for the picture"))
}

/// The grid's value at `(fy, fx)`, fractions of its height and width, interpolated between
/// cell centres (clamped at the borders).
fn bilinear(grid: Grid, fy: f32, fx: f32) -> f32 {
    let axis = |f: f32, n: usize| {
        let s = (f * n as f32 - 0.5).clamp(0.0, (n - 1) as f32);
        let i = (s.floor() as usize).min(n - 1);
        (i, (i + 1).min(n - 1), s - i as f32)
    };
    let (y0, y1, ty) = axis(fy, grid.rows);
    let (x0, x1, tx) = axis(fx, grid.cols);
    let at = |y: usize, x: usize| grid.values[y * grid.cols + x];
    let top = at(y0, x0) * (1.0 - tx) + at(y0, x1) * tx;
    let bottom = at(y1, x0) * (1.0 - tx) + at(y1, x1) * tx;
    top * (1.0 - ty) + bottom * ty
}

/// The jet colour map (OpenCV's `COLORMAP_JET`): dark blue at 0 through cyan, yellow and
/// red to dark red at 1; values outside `[0, 1]` are clamped.
pub fn jet(v: f32) -> [u8; 3] {
    let v = v.clamp(0.0, 1.0);
    let ramp =
        |centre: f32| ((1.5 - (4.0 * v - centre).abs()).clamp(0.0, 1.0) * 255.0).round() as u8;
    [ramp(3.0), ramp(2.0), ramp(1.0)]
}

/// Writes `picture` as a PNG file at `path`, through a temporary file renamed into place
/// so that a kill mid-write leaves no half file.
pub fn save_png(picture: &Rgb8, path: impl AsRef<Path>) -> Result<(), DataError> {
    let path = path.as_ref();
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    image::save_buffer_with_format(
        &tmp,
        &picture.pixels,
        picture.width,
        picture.height,
        image::ColorType::Rgb8,
        image::ImageFormat::Png,
    )
    .map_err(|e| DataError::path(&tmp, format!("cannot write the PNG: {e}")))?;
    std::fs::rename(&tmp, path)
        .map_err(|e| DataError::path(path, format!("cannot write the PNG: {e}")))
}
