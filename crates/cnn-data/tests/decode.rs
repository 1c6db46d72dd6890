//! Decoding: every colour type becomes 8-bit RGB as PIL's `convert("RGB")` would make it.

mod common;

use std::path::Path;

use cnn_data::{decode_bytes, decode_file, load_image, probe_file, IMAGENET_MEAN, IMAGENET_STD};

fn encode(img: image::DynamicImage, format: image::ImageFormat) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

#[test]
fn greyscale_alpha_and_16_bit_png_become_rgb8() {
    let p = Path::new("x.png");
    let grey = image::GrayImage::from_fn(3, 2, |x, y| image::Luma([(x * 50 + y * 7) as u8]));
    let rgb = decode_bytes(p, &encode(grey.into(), image::ImageFormat::Png)).unwrap();
    assert_eq!(rgb.get(2, 1), [107, 107, 107]);

    let rgba = image::RgbaImage::from_fn(2, 1, |x, _| {
        image::Rgba([10, 20, 30, if x == 0 { 0 } else { 255 }])
    });
    let rgb = decode_bytes(p, &encode(rgba.into(), image::ImageFormat::Png)).unwrap();
    // Alpha is dropped, not composited (PIL's convert("RGB")).
    assert_eq!(rgb.get(0, 0), [10, 20, 30]);

    let deep = image::ImageBuffer::<image::Rgb<u16>, _>::from_fn(2, 1, |x, _| {
        image::Rgb([if x == 0 { 65535 } else { 257 * 100 }, 0, 32896])
    });
    let rgb = decode_bytes(
        p,
        &encode(
            image::DynamicImage::ImageRgb16(deep),
            image::ImageFormat::Png,
        ),
    )
    .unwrap();
    assert_eq!(rgb.get(0, 0), [255, 0, 128]); // 32896 / 257 = 128
    assert_eq!(rgb.get(1, 0), [100, 0, 128]);

    let la16 = image::ImageBuffer::<image::LumaA<u16>, _>::from_fn(1, 1, |_, _| {
        image::LumaA([257 * 9, 0])
    });
    let rgb = decode_bytes(
        p,
        &encode(
            image::DynamicImage::ImageLumaA16(la16),
            image::ImageFormat::Png,
        ),
    )
    .unwrap();
    assert_eq!(rgb.get(0, 0), [9, 9, 9]);
}

#[test]
fn palette_png_is_expanded() {
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, 2, 2);
        enc.set_color(png::ColorType::Indexed);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_palette(vec![255, 0, 0, 0, 0, 255, 1, 2, 3]);
        let mut w = enc.write_header().unwrap();
        w.write_image_data(&[0, 1, 2, 0]).unwrap();
    }
    let rgb = decode_bytes(Path::new("pal.png"), &bytes).unwrap();
    assert_eq!(rgb.pixels, vec![255, 0, 0, 0, 0, 255, 1, 2, 3, 255, 0, 0]);
}

#[test]
fn greyscale_jpeg_and_bmp_become_rgb8() {
    let grey = image::GrayImage::from_pixel(16, 8, image::Luma([90]));
    let rgb = decode_bytes(
        Path::new("g.jpg"),
        &encode(grey.into(), image::ImageFormat::Jpeg),
    )
    .unwrap();
    assert_eq!((rgb.width, rgb.height), (16, 8));
    let [r, g, b] = rgb.get(5, 5);
    assert!(r == g && g == b && r.abs_diff(90) <= 1, "{r} {g} {b}");

    let img = common::pattern(5, 3, 1);
    let rgb = decode_bytes(
        Path::new("a.bmp"),
        &encode(img.clone().into(), image::ImageFormat::Bmp),
    )
    .unwrap();
    assert_eq!(rgb.pixels, img.into_raw());
}

#[test]
fn probe_reads_only_the_header_and_load_image_is_the_eval_view() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.png");
    // 4x2: pixel (x, y) = (x*40 + 7, y*40, (x+y)*20).
    common::write_png(&path, 4, 2, 7);
    assert_eq!(probe_file(&path).unwrap(), (4, 2));
    assert_eq!(decode_file(&path).unwrap().get(3, 1), [127, 40, 80]);
    // Eval at 2: shorter side 2 -> 2 (long side int(2*4/2) = 4, unchanged), centre crop
    // columns round((4-2)/2) = 1 .. 3. So out(0,0) is source (1,0) = (47, 0, 20).
    let a = load_image(&path, 2).unwrap();
    assert_eq!(a.shape(), &[3, 2, 2]);
    let n = |v: f32, c: usize| (v / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
    let close = |x: f32, y: f32| assert!((x - y).abs() < 1e-5, "{x} vs {y}");
    close(a[[0, 0, 0]], n(47.0, 0));
    close(a[[1, 0, 0]], n(0.0, 1));
    close(a[[2, 0, 0]], n(20.0, 2));
    // out(1,1) is source (2,1) = (87, 40, 60).
    close(a[[0, 1, 1]], n(87.0, 0));
    close(a[[1, 1, 1]], n(40.0, 1));
    close(a[[2, 1, 1]], n(60.0, 2));
    assert!(load_image(dir.path().join("missing.png"), 2)
        .unwrap_err()
        .to_string()
        .contains("missing.png"));
}
