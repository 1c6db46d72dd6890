//! Geometric transforms with torchvision's semantics: resize + centre crop (eval), RandomResizedCrop + flip (train).

use serde::{Deserialize, Serialize};

use crate::resize::{resize_bilinear, resize_shorter};
use crate::rgb::Rgb8;
use crate::rng::{Purpose, Stream};

/// RandomResizedCrop's area range (fraction of the image), torchvision's default.
pub const RRC_SCALE: (f64, f64) = (0.08, 1.0);
/// RandomResizedCrop's aspect-ratio range (w/h), torchvision's default.
pub const RRC_RATIO: (f64, f64) = (3.0 / 4.0, 4.0 / 3.0);

/// What happens to an image between decoding and normalisation. The output is always
/// `image_size x image_size` (the loader's `image_size`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Transform {
    /// `Resize(resize)` (shorter side) then `CenterCrop(image_size)`. `resize == image_size`
    /// keeps the whole shorter side; ImageNet's convention is `resize = image_size * 8 / 7`
    /// (256 for 224).
    Eval { resize: u32 },
    /// Training-time augmentation.
    Train(Augment),
}

/// Training augmentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Augment {
    /// Shorter side to `image_size`, centre crop: like `Eval { resize: image_size }`.
    None,
    /// As `None`, then `RandomHorizontalFlip(0.5)`.
    Flip,
    /// `RandomResizedCrop(image_size)` (scale 0.08-1, ratio 3/4-4/3) then `RandomHorizontalFlip(0.5)`.
    RandomResizedCropFlip,
}

impl Transform {
    /// Resize the shorter side to `image_size` and centre-crop a square.
    pub fn eval(image_size: u32) -> Self {
        Transform::Eval { resize: image_size }
    }

    /// The standard training transform: RandomResizedCrop + horizontal flip.
    pub fn train() -> Self {
        Transform::Train(Augment::RandomResizedCropFlip)
    }

    /// Whether the output depends on the (seed, epoch, index) random stream.
    pub fn is_random(&self) -> bool {
        matches!(
            self,
            Transform::Train(Augment::Flip | Augment::RandomResizedCropFlip)
        )
    }

    /// The largest shrink that leaves this transform's output unchanged: resize-and-crop
    /// transforms first resize the shorter side to a fixed length, so an image already
    /// shrunk to that length (with the same filter) resizes no further and crops the same
    /// pixels. A loader's `working_size` set to this keeps a decode cache at the size the
    /// network sees (about a fifth of the bytes of 224 px images at 100 px) and skips the
    /// resize on every later epoch. `None` for RandomResizedCrop, which crops the full image.
    pub fn exact_working_size(&self, image_size: u32) -> Option<u32> {
        match *self {
            Transform::Eval { resize } => Some(resize),
            Transform::Train(Augment::None | Augment::Flip) => Some(image_size),
            Transform::Train(Augment::RandomResizedCropFlip) => None,
        }
    }

    /// Applies the transform. Random choices come from `(seed, epoch, index)` only, so the
    /// result does not depend on which thread runs it or in which order.
    pub fn apply(&self, img: &Rgb8, image_size: u32, seed: u64, epoch: u64, index: u64) -> Rgb8 {
        let (out, mirror) = self.apply_unflipped(img, image_size, seed, epoch, index);
        if mirror {
            hflip(out)
        } else {
            out
        }
    }

    /// [`Transform::apply`] without its final flip, and whether to flip: the loader mirrors
    /// while normalising, saving a pass.
    pub(crate) fn apply_unflipped(
        &self,
        img: &Rgb8,
        image_size: u32,
        seed: u64,
        epoch: u64,
        index: u64,
    ) -> (Rgb8, bool) {
        let mut rng = Stream::new(seed, Purpose::Augment, epoch, index);
        match *self {
            Transform::Eval { resize } => {
                (centre_crop(&resize_shorter(img, resize), image_size), false)
            }
            Transform::Train(Augment::None) => (
                centre_crop(&resize_shorter(img, image_size), image_size),
                false,
            ),
            Transform::Train(Augment::Flip) => {
                let out = centre_crop(&resize_shorter(img, image_size), image_size);
                (out, coin(&mut rng))
            }
            Transform::Train(Augment::RandomResizedCropFlip) => {
                let c = rrc_params(img.width, img.height, &mut rng);
                let out = if (c.width, c.height) == (img.width, img.height) {
                    resize_bilinear(img, image_size, image_size)
                } else {
                    resize_bilinear(
                        &img.crop(c.left, c.top, c.width, c.height),
                        image_size,
                        image_size,
                    )
                };
                (out, coin(&mut rng))
            }
        }
    }
}

/// A crop rectangle in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropBox {
    pub left: u32,
    pub top: u32,
    pub width: u32,
    pub height: u32,
}

/// Python's `round` (half to even), which torchvision uses for crop sizes.
fn py_round(x: f64) -> i64 {
    x.round_ties_even() as i64
}

/// torchvision's `RandomResizedCrop.get_params`: ten tries at a random area and log-uniform
/// aspect ratio; if none fits, a centre crop clamped to the ratio range.
pub(crate) fn rrc_params(width: u32, height: u32, rng: &mut Stream) -> CropBox {
    let (w_img, h_img) = (width as i64, height as i64);
    let area = (w_img * h_img) as f64;
    let (log_lo, log_hi) = (RRC_RATIO.0.ln(), RRC_RATIO.1.ln());
    for _ in 0..10 {
        let target_area = area * rng.uniform(RRC_SCALE.0, RRC_SCALE.1);
        let aspect = rng.uniform(log_lo, log_hi).exp();
        let w = py_round((target_area * aspect).sqrt());
        let h = py_round((target_area / aspect).sqrt());
        if 0 < w && w <= w_img && 0 < h && h <= h_img {
            let top = rng.below((h_img - h + 1) as u64) as u32;
            let left = rng.below((w_img - w + 1) as u64) as u32;
            return CropBox {
                left,
                top,
                width: w as u32,
                height: h as u32,
            };
        }
    }
    let in_ratio = w_img as f64 / h_img as f64;
    let (w, h) = if in_ratio < RRC_RATIO.0 {
        (w_img, py_round(w_img as f64 / RRC_RATIO.0))
    } else if in_ratio > RRC_RATIO.1 {
        (py_round(h_img as f64 * RRC_RATIO.1), h_img)
    } else {
        (w_img, h_img)
    };
    let (w, h) = (w.clamp(1, w_img), h.clamp(1, h_img));
    CropBox {
        left: ((w_img - w) / 2) as u32,
        top: ((h_img - h) / 2) as u32,
        width: w as u32,
        height: h as u32,
    }
}

/// torchvision's `CenterCrop(size)` on an image at least `size` on each side
/// (offsets `round((dim - size) / 2)`, half to even). Smaller images are zero-padded as
/// torchvision does.
pub fn centre_crop(img: &Rgb8, size: u32) -> Rgb8 {
    if img.width >= size && img.height >= size {
        let left = py_round((img.width - size) as f64 / 2.0) as u32;
        let top = py_round((img.height - size) as f64 / 2.0) as u32;
        return img.crop(left, top, size, size);
    }
    // torchvision pads with zeros on both sides ((size - dim) // 2 before), then crops.
    let mut out = Rgb8 {
        width: size,
        height: size,
        pixels: vec![0; size as usize * size as usize * 3],
    };
    let pad_l = size.saturating_sub(img.width) / 2;
    let pad_t = size.saturating_sub(img.height) / 2;
    let src_l = if img.width > size {
        py_round((img.width - size) as f64 / 2.0) as u32
    } else {
        0
    };
    let src_t = if img.height > size {
        py_round((img.height - size) as f64 / 2.0) as u32
    } else {
        0
    };
    let w = img.width.min(size);
    let h = img.height.min(size);
    for y in 0..h {
        let s = (((src_t + y) * img.width + src_l) * 3) as usize;
        let d = (((pad_t + y) * size + pad_l) * 3) as usize;
        out.pixels[d..d + w as usize * 3].copy_from_slice(&img.pixels[s..s + w as usize * 3]);
    }
    out
}

/// Mirrors left-right.
pub fn hflip(mut img: Rgb8) -> Rgb8 {
    let row = img.width as usize * 3;
    for line in img.pixels.chunks_exact_mut(row) {
        let n = line.len() / 3;
        for x in 0..n / 2 {
            let (a, b) = (x * 3, (n - 1 - x) * 3);
            for c in 0..3 {
                line.swap(a + c, b + c);
            }
        }
    }
    img
}

/// `RandomHorizontalFlip(0.5)`'s draw.
fn coin(rng: &mut Stream) -> bool {
    rng.unit() < 0.5
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(w: u32, h: u32) -> Rgb8 {
        let px = (0..w * h).flat_map(|i| [i as u8, 0, 0]).collect();
        Rgb8::new(w, h, px).unwrap()
    }

    #[test]
    fn centre_crop_offsets_round_half_to_even() {
        // 5 wide -> 4: offset round(0.5) = 0; 7 wide -> 4: round(1.5) = 2.
        let c = centre_crop(&ramp(5, 4), 4);
        assert_eq!(c.get(0, 0)[0], 0);
        let c = centre_crop(&ramp(7, 4), 4);
        assert_eq!(c.get(0, 0)[0], 2);
        assert_eq!(c.get(3, 3)[0], (3 * 7 + 5) as u8);
    }

    #[test]
    fn centre_crop_pads_small_images_with_zeros() {
        let c = centre_crop(&Rgb8::new(1, 1, vec![9, 9, 9]).unwrap(), 3);
        assert_eq!(c.get(1, 1), [9, 9, 9]);
        assert_eq!(c.get(0, 0), [0, 0, 0]);
    }

    #[test]
    fn hflip_mirrors_rows() {
        let f = hflip(ramp(3, 2));
        let row0: Vec<u8> = (0..3).map(|x| f.get(x, 0)[0]).collect();
        let row1: Vec<u8> = (0..3).map(|x| f.get(x, 1)[0]).collect();
        assert_eq!(row0, vec![2, 1, 0]);
        assert_eq!(row1, vec![5, 4, 3]);
    }

    #[test]
    fn rrc_boxes_fit_and_cover_the_scale_range() {
        let mut areas = Vec::new();
        for i in 0..2000 {
            let mut rng = Stream::new(3, Purpose::Augment, 0, i);
            let c = rrc_params(500, 375, &mut rng);
            assert!(c.left + c.width <= 500 && c.top + c.height <= 375, "{c:?}");
            assert!(c.width > 0 && c.height > 0);
            areas.push((c.width * c.height) as f64 / (500.0 * 375.0));
            let r = c.width as f64 / c.height as f64;
            assert!(r > 0.70 && r < 1.40, "{c:?}");
        }
        let min = areas.iter().cloned().fold(1.0, f64::min);
        let max = areas.iter().cloned().fold(0.0, f64::max);
        assert!(min < 0.1 && max > 0.9, "{min} {max}");
    }

    /// A very thin image never fits in ten tries, so torchvision's fallback applies: for
    /// 100x1 the ratio 100 > 4/3, so h = 1 and w = round(1 * 4/3) = 1, centred at
    /// left = (100 - 1) // 2 = 49.
    #[test]
    fn rrc_fallback_matches_torchvision() {
        let mut rng = Stream::new(0, Purpose::Augment, 0, 0);
        let c = rrc_params(100, 1, &mut rng);
        assert_eq!(
            c,
            CropBox {
                left: 49,
                top: 0,
                width: 1,
                height: 1
            }
        );
        // 1x40: ratio 0.025 < 3/4, so w = 1, h = round(1 / 0.75) = 1, top = (40 - 1) // 2 = 19.
        let mut rng = Stream::new(0, Purpose::Augment, 0, 0);
        let c = rrc_params(1, 40, &mut rng);
        assert_eq!(
            c,
            CropBox {
                left: 0,
                top: 19,
                width: 1,
                height: 1
            }
        );
    }

    /// The 4x2 example by hand: eval at size 2 resizes the shorter side 2 -> 2 (no change,
    /// long side int(2*4/2) = 4) and crops columns 1..3.
    #[test]
    fn eval_on_a_4x2_image_by_hand() {
        let img = ramp(4, 2);
        let out = Transform::eval(2).apply(&img, 2, 0, 0, 0);
        let got: Vec<u8> = out.pixels.chunks(3).map(|p| p[0]).collect();
        assert_eq!(got, vec![1, 2, 5, 6]);
    }

    /// A photo-like image of `w x h` (not a ramp, so resampling shows).
    fn texture(w: u32, h: u32) -> Rgb8 {
        let px = (0..w * h)
            .flat_map(|i| {
                let (x, y) = (i % w, i / w);
                [(x * 37 + y * 11) as u8, (x * y) as u8, (x ^ (y * 5)) as u8]
            })
            .collect();
        Rgb8::new(w, h, px).unwrap()
    }

    /// Shrinking to `exact_working_size` first (as a loader's working size does, with
    /// `cap_shorter`) gives every resize-and-crop transform the very same pixels, flips
    /// included; an image already smaller is left as it is.
    #[test]
    fn exact_working_size_changes_no_pixel() {
        let transforms = [
            Transform::eval(9),
            Transform::Eval { resize: 11 },
            Transform::Train(Augment::None),
            Transform::Train(Augment::Flip),
        ];
        for (w, h) in [(37, 23), (23, 37), (9, 14), (6, 5)] {
            let img = texture(w, h);
            for t in transforms {
                let size = t.exact_working_size(9).unwrap();
                let shrunk = crate::resize::cap_shorter(img.clone(), size);
                for index in 0..4 {
                    assert_eq!(
                        t.apply(&shrunk, 9, 5, 1, index),
                        t.apply(&img, 9, 5, 1, index),
                        "{t:?} on {w}x{h}"
                    );
                }
            }
        }
        assert_eq!(Transform::train().exact_working_size(9), None);
    }

    #[test]
    fn train_transform_is_a_function_of_seed_epoch_index() {
        let img = ramp(16, 12);
        let t = Transform::train();
        let a = t.apply(&img, 8, 1, 2, 3);
        assert_eq!(a, t.apply(&img, 8, 1, 2, 3));
        let differs = (0..20).any(|i| t.apply(&img, 8, 1, 2, 4 + i) != a);
        assert!(differs);
        assert_eq!((a.width, a.height), (8, 8));
    }
}
