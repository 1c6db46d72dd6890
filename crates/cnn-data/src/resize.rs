//! Resizing with `fast_image_resize` (SIMD), using the filter that matches torchvision.
//!
//! torchvision resizes PIL images with Pillow's `BILINEAR` filter and tensors with
//! `interpolate(mode="bilinear", antialias=True)`, which reproduces Pillow: a triangle kernel
//! whose support widens with the downscale factor (so shrinking averages every covered pixel
//! instead of sampling two). `fast_image_resize` is a port of Pillow(-SIMD)'s convolution
//! resampler, and `ResizeAlg::Convolution(FilterType::Bilinear)` is exactly that filter,
//! including 8-bit rounding after the horizontal and vertical passes. (Its
//! `Interpolation(Bilinear)` is OpenCV-style, without antialiasing: not what torchvision does.)

use std::cell::RefCell;

use fast_image_resize::{images::Image, images::ImageRef, FilterType, PixelType, ResizeAlg};
use fast_image_resize::{ResizeOptions, Resizer};

use crate::rgb::Rgb8;

thread_local! {
    static RESIZER: RefCell<Resizer> = RefCell::new(Resizer::new());
}

/// Resizes `src` to `width x height` with Pillow's antialiased bilinear filter.
pub fn resize_bilinear(src: &Rgb8, width: u32, height: u32) -> Rgb8 {
    if src.width == width && src.height == height {
        return src.clone();
    }
    let view = ImageRef::new(src.width, src.height, &src.pixels, PixelType::U8x3)
        .expect("Rgb8 buffer length is width*height*3");
    let mut dst = Image::new(width, height, PixelType::U8x3);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
    RESIZER.with(|r| {
        r.borrow_mut()
            .resize(&view, &mut dst, &options)
            .expect("same pixel type and non-empty sizes")
    });
    Rgb8 {
        width,
        height,
        pixels: dst.into_vec(),
    }
}

/// torchvision's size for "resize the shorter side to `short`": the longer side becomes
/// `int(short * long / shorter)` (truncated), as in `_compute_resized_output_size`.
pub fn shorter_side_size(width: u32, height: u32, short: u32) -> (u32, u32) {
    if width <= height {
        let h = (short as u64 * height as u64 / width as u64) as u32;
        (short, h.max(1))
    } else {
        let w = (short as u64 * width as u64 / height as u64) as u32;
        (w.max(1), short)
    }
}

/// Resizes so that the shorter side is `short` (torchvision `Resize(short)`).
pub fn resize_shorter(src: &Rgb8, short: u32) -> Rgb8 {
    let (w, h) = shorter_side_size(src.width, src.height, short);
    resize_bilinear(src, w, h)
}

/// Shrinks (never enlarges) so that the shorter side is at most `cap`.
pub fn cap_shorter(src: Rgb8, cap: u32) -> Rgb8 {
    if src.width.min(src.height) <= cap {
        src
    } else {
        resize_shorter(&src, cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorter_side_truncates_like_torchvision() {
        // int(256 * 500 / 375) = int(341.33) = 341
        assert_eq!(shorter_side_size(500, 375, 256), (341, 256));
        assert_eq!(shorter_side_size(375, 500, 256), (256, 341));
        assert_eq!(shorter_side_size(7, 3, 2), (4, 2)); // int(2*7/3) = 4
    }

    /// Pillow's weights for a 4 -> 2 downscale (scale 2, support 2): output 0 takes source
    /// pixels 0,1,2 with weights 3/7,3/7,1/7; output 1 takes 1,2,3 with 1/7,3/7,3/7.
    /// Vertically 2 -> 1 averages the two rows.
    #[test]
    fn downscale_matches_pillow_weights_by_hand() {
        let row0 = [0u8, 70, 0, 140]; // out0 = (0*3 + 70*3 + 0)/7 = 30; out1 = (70 + 0 + 420)/7 = 70
        let row1 = [140u8, 0, 70, 0]; // out0 = (420 + 0 + 70)/7 = 70; out1 = (0 + 210 + 0)/7 = 30
        let mut px = Vec::new();
        for v in row0.iter().chain(row1.iter()) {
            px.extend_from_slice(&[*v, *v / 2, 255 - *v]);
        }
        let src = Rgb8::new(4, 2, px).unwrap();
        let out = resize_bilinear(&src, 2, 1);
        // rows averaged: (30 + 70) / 2 = 50 for both outputs.
        assert_eq!(out.get(0, 0)[0], 50);
        assert_eq!(out.get(1, 0)[0], 50);
        // second channel: v/2 -> row0 (0,35,0,70) -> 15, 35; row1 (70,0,35,0) -> 35, 15
        assert_eq!(out.get(0, 0)[1], 25);
        assert_eq!(out.get(1, 0)[1], 25);
        // third channel is 255 - first: 205.
        assert_eq!(out.get(0, 0)[2], 205);
    }

    /// Upscaling 2 -> 4 is plain bilinear with half-pixel centres and edge clamping:
    /// outputs sit at source x = -0.25, 0.25, 0.75, 1.25.
    #[test]
    fn upscale_is_half_pixel_bilinear() {
        let src = Rgb8::new(2, 1, vec![0, 0, 0, 200, 200, 200]).unwrap();
        let out = resize_bilinear(&src, 4, 1);
        let got: Vec<u8> = (0..4).map(|x| out.get(x, 0)[0]).collect();
        assert_eq!(got, vec![0, 50, 150, 200]);
    }
}
