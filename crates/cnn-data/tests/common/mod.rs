//! Helpers shared by the integration tests: writing small images, finding the shared data.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// A `w x h` RGB image whose pixel (x, y) is `(x * 40 + seed, y * 40, (x + y) * 20)` (wrapping).
pub fn pattern(w: u32, h: u32, seed: u8) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (x as u8).wrapping_mul(40).wrapping_add(seed),
            (y as u8).wrapping_mul(40),
            ((x + y) as u8).wrapping_mul(20),
        ])
    })
}

pub fn write_png(path: &Path, w: u32, h: u32, seed: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    pattern(w, h, seed)
        .save_with_format(path, image::ImageFormat::Png)
        .unwrap();
}

pub fn write_jpeg(path: &Path, w: u32, h: u32, seed: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    pattern(w, h, seed)
        .save_with_format(path, image::ImageFormat::Jpeg)
        .unwrap();
}

pub fn jpeg_bytes(w: u32, h: u32) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    pattern(w, h, 0)
        .write_to(&mut out, image::ImageFormat::Jpeg)
        .unwrap();
    out.into_inner()
}

/// `n` PNGs per class under `root/<class>/`.
pub fn class_tree(root: &Path, classes: &[&str], n: usize) {
    for (c, name) in classes.iter().enumerate() {
        for i in 0..n {
            write_png(
                &root.join(name).join(format!("{i:03}.png")),
                6,
                5,
                (c * 16 + i) as u8,
            );
        }
    }
}

/// `../shared/datasets` (from the workspace root), or `$CNN_SHARED_DIR/datasets`. `None`
/// (with a note) when absent; under `CI=true` an absent folder fails the test.
pub fn shared_datasets() -> Option<PathBuf> {
    let base = match std::env::var_os("CNN_SHARED_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    };
    let dir = base.join("datasets");
    if dir.is_dir() {
        return Some(dir);
    }
    let ci = std::env::var("CI")
        .map(|v| v == "true" || v == "1")
        .unwrap_or(false);
    assert!(
        !ci,
        "shared datasets not found at {} (set CNN_SHARED_DIR); CI=true requires them",
        dir.display()
    );
    eprintln!(
        "SKIP: shared datasets not found at {} (set CNN_SHARED_DIR)",
        dir.display()
    );
    None
}
