//! Writes a montage of the synthetic set (one row per class) to a PNG.
//!
//! `cargo run -p cnn-data --release --example synthetic_montage -- montage.png [seed]`

use cnn_data::synthetic::{generate, CLASS_NAMES};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = args.first().map(String::as_str).unwrap_or("synthetic.png");
    let seed: u64 = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(0);
    let (size, cols) = (64u32, 8u32);
    let rows = CLASS_NAMES.len() as u32;
    let mut canvas = image::RgbImage::new(size * cols, size * rows);
    for class in 0..rows {
        for c in 0..cols {
            let img = generate(seed, (c * rows + class) as u64, class, size);
            for y in 0..size {
                for x in 0..size {
                    canvas.put_pixel(c * size + x, class * size + y, image::Rgb(img.get(x, y)));
                }
            }
        }
    }
    canvas.save(out)?;
    println!("wrote {out}: rows are {}", CLASS_NAMES.join(", "));
    Ok(())
}
