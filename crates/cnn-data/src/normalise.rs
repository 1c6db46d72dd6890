//! Normalisation to f32 CHW: `(v / 255 - mean) / std` per channel, ImageNet statistics by default.

use std::mem::MaybeUninit;

use ndarray::Array3;
use serde::{Deserialize, Serialize};

use crate::rgb::Rgb8;

/// ImageNet channel means (R, G, B), as torchvision's models expect.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations (R, G, B).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Per-channel mean and standard deviation applied after scaling bytes to `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Normalise {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Normalise {
    /// ImageNet mean/std (the default).
    pub const IMAGENET: Normalise = Normalise {
        mean: IMAGENET_MEAN,
        std: IMAGENET_STD,
    };
    /// Only scale to `[0, 1]`.
    pub const UNIT: Normalise = Normalise {
        mean: [0.0; 3],
        std: [1.0; 3],
    };

    /// Lookup table: `lut[c][v]` is the normalised value of byte `v` in channel `c`.
    /// Computed as torchvision does: `(v / 255 - mean) / std` in f32.
    pub(crate) fn lut(&self) -> [[f32; 256]; 3] {
        let mut lut = [[0.0f32; 256]; 3];
        for (c, table) in lut.iter_mut().enumerate() {
            for (v, slot) in table.iter_mut().enumerate() {
                *slot = (v as f32 / 255.0 - self.mean[c]) / self.std[c];
            }
        }
        lut
    }
}

impl Default for Normalise {
    fn default() -> Self {
        Normalise::IMAGENET
    }
}

/// Writes `img` as planar CHW into `out` (length `3 * height * width`), mirrored left-right
/// when `mirror` (so a horizontal flip costs no extra pass). Every element of `out` is written.
pub(crate) fn write_chw(
    img: &Rgb8,
    lut: &[[f32; 256]; 3],
    mirror: bool,
    out: &mut [MaybeUninit<f32>],
) {
    let (w, h) = (img.width as usize, img.height as usize);
    let plane = w * h;
    assert_eq!(out.len(), 3 * plane);
    let (r, rest) = out.split_at_mut(plane);
    let (g, b) = rest.split_at_mut(plane);
    for y in 0..h {
        let src = &img.pixels[y * w * 3..(y + 1) * w * 3];
        let (r, g, b) = (
            &mut r[y * w..(y + 1) * w],
            &mut g[y * w..(y + 1) * w],
            &mut b[y * w..(y + 1) * w],
        );
        let pixels = src.chunks_exact(3);
        if mirror {
            for (((px, r), g), b) in pixels
                .zip(r.iter_mut().rev())
                .zip(g.iter_mut().rev())
                .zip(b.iter_mut().rev())
            {
                r.write(lut[0][px[0] as usize]);
                g.write(lut[1][px[1] as usize]);
                b.write(lut[2][px[2] as usize]);
            }
        } else {
            for (((px, r), g), b) in pixels.zip(r.iter_mut()).zip(g.iter_mut()).zip(b.iter_mut()) {
                r.write(lut[0][px[0] as usize]);
                g.write(lut[1][px[1] as usize]);
                b.write(lut[2][px[2] as usize]);
            }
        }
    }
}

/// `img` as a normalised `3 x H x W` array.
pub fn normalise(img: &Rgb8, norm: &Normalise) -> Array3<f32> {
    let (h, w) = (img.height as usize, img.width as usize);
    let mut data = Vec::with_capacity(3 * h * w);
    write_chw(
        img,
        &norm.lut(),
        false,
        &mut data.spare_capacity_mut()[..3 * h * w],
    );
    // SAFETY: write_chw initialised all 3*h*w elements.
    unsafe { data.set_len(3 * h * w) };
    Array3::from_shape_vec((3, h, w), data).expect("length matches the shape")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalise_by_hand() {
        let img = Rgb8::new(2, 1, vec![255, 0, 51, 0, 255, 102]).unwrap();
        let a = normalise(&img, &Normalise::IMAGENET);
        assert_eq!(a.shape(), &[3, 1, 2]);
        let close = |x: f32, y: f32| assert!((x - y).abs() < 1e-5, "{x} vs {y}");
        close(a[[0, 0, 0]], (1.0 - 0.485) / 0.229); // 2.2489
        close(a[[0, 0, 1]], (0.0 - 0.485) / 0.229); // -2.1179
        close(a[[1, 0, 0]], (0.0 - 0.456) / 0.224);
        close(a[[1, 0, 1]], (1.0 - 0.456) / 0.224);
        close(a[[2, 0, 0]], (0.2 - 0.406) / 0.225); // 51/255 = 0.2
        close(a[[2, 0, 1]], (0.4 - 0.406) / 0.225);
        let u = normalise(&img, &Normalise::UNIT);
        close(u[[2, 0, 1]], 0.4);
    }
}
