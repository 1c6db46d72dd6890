//! `Rgb8`: the one in-memory pixel format (8-bit RGB, row-major, interleaved) that every source produces.

/// An 8-bit RGB image, rows top to bottom, pixels `r, g, b` interleaved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rgb8 {
    pub width: u32,
    pub height: u32,
    /// `width * height * 3` bytes.
    pub pixels: Vec<u8>,
}

impl Rgb8 {
    /// Wraps `pixels`; `None` when the length is not `width * height * 3`.
    pub fn new(width: u32, height: u32, pixels: Vec<u8>) -> Option<Self> {
        (pixels.len() == width as usize * height as usize * 3).then_some(Rgb8 {
            width,
            height,
            pixels,
        })
    }

    /// A greyscale buffer (`width * height` bytes) replicated to three channels.
    pub fn from_grey(width: u32, height: u32, grey: &[u8]) -> Self {
        let pixels = grey.iter().flat_map(|&v| [v, v, v]).collect();
        Rgb8 {
            width,
            height,
            pixels,
        }
    }

    /// The pixel at column `x`, row `y`.
    pub fn get(&self, x: u32, y: u32) -> [u8; 3] {
        let i = (y as usize * self.width as usize + x as usize) * 3;
        [self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]]
    }

    /// Copies the `w x h` rectangle whose top-left corner is column `left`, row `top`.
    pub fn crop(&self, left: u32, top: u32, w: u32, h: u32) -> Rgb8 {
        debug_assert!(left + w <= self.width && top + h <= self.height);
        let row = self.width as usize * 3;
        let mut pixels = Vec::with_capacity(w as usize * h as usize * 3);
        for y in top..top + h {
            let start = y as usize * row + left as usize * 3;
            pixels.extend_from_slice(&self.pixels[start..start + w as usize * 3]);
        }
        Rgb8 {
            width: w,
            height: h,
            pixels,
        }
    }
}
