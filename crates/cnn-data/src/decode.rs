//! Decoding files to 8-bit RGB with bounded memory, and cheap header checks for scanning.
//!
//! Decoding goes through the `image` crate (zune-jpeg for JPEG, `png`, `image-webp`).
//! Everything becomes 8-bit RGB the way PIL's `convert("RGB")` does: greyscale is replicated,
//! palettes are expanded, alpha is dropped (not composited), CMYK JPEGs are converted by the
//! decoder. 16-bit samples are scaled to 8 bits with rounding (`v * 255 / 65535`) where PIL
//! would clip 16-bit greyscale; EXIF orientation is ignored, as torchvision ignores it.
//!
//! A declared size is checked before any pixel buffer is allocated (`image::Limits`), so a
//! header claiming 100000x100000 is an error, not a 30 GB allocation.

use std::fs::File;
use std::io::{BufReader, Cursor, Read};
use std::path::Path;

use image::{ImageFormat, ImageReader, Limits};

use crate::error::DataError;
use crate::rgb::Rgb8;

/// Largest accepted width or height.
pub const MAX_SIDE: u32 = 16_384;
/// Largest allocation a decoder may make for one image.
pub const MAX_DECODE_BYTES: u64 = 512 << 20;

fn limits() -> Limits {
    let mut l = Limits::default();
    l.max_image_width = Some(MAX_SIDE);
    l.max_image_height = Some(MAX_SIDE);
    l.max_alloc = Some(MAX_DECODE_BYTES);
    l
}

/// The image format a file name promises, if its extension is one this crate reads.
pub fn format_from_extension(path: &Path) -> Option<ImageFormat> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    match ext.as_str() {
        "jpg" | "jpeg" | "jpe" => Some(ImageFormat::Jpeg),
        "png" => Some(ImageFormat::Png),
        "bmp" => Some(ImageFormat::Bmp),
        "webp" => Some(ImageFormat::WebP),
        _ => None,
    }
}

/// The format the first bytes announce; errors name what is wrong.
fn sniff(path: &Path, head: &[u8]) -> Result<ImageFormat, DataError> {
    if head.is_empty() {
        return Err(DataError::bad_file(path, "empty file (0 bytes)"));
    }
    let content = image::guess_format(head).map_err(|_| {
        let shown: Vec<String> = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
        DataError::bad_file(
            path,
            format!(
                "not an image: content matches no known format (starts {})",
                shown.join(" ")
            ),
        )
    })?;
    if !matches!(
        content,
        ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::Bmp | ImageFormat::WebP
    ) {
        return Err(DataError::bad_file(
            path,
            format!("unsupported image format {content:?}"),
        ));
    }
    if let Some(named) = format_from_extension(path) {
        if named != content {
            return Err(DataError::bad_file(
                path,
                format!("mislabelled: extension says {named:?} but the content is {content:?}"),
            ));
        }
    }
    Ok(content)
}

/// A JPEG whose last scan is not followed by an end-of-image marker was cut short.
/// (zune-jpeg fills the missing part with grey instead of failing; PIL reports
/// "image file is truncated".)
fn check_jpeg_complete(path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    let last_sos = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    let eoi_after = match last_sos {
        Some(p) => bytes[p..].windows(2).any(|w| w == [0xFF, 0xD9]),
        None => false,
    };
    if eoi_after {
        Ok(())
    } else {
        Err(DataError::bad_file(
            path,
            format!(
                "truncated JPEG: no end-of-image marker after the last scan ({} bytes)",
                bytes.len()
            ),
        ))
    }
}

fn describe(format: ImageFormat, e: image::ImageError) -> String {
    match e {
        image::ImageError::Limits(l) => format!(
            "{format:?} declares a size beyond the limits ({MAX_SIDE} px a side, {} MiB): {l}",
            MAX_DECODE_BYTES >> 20
        ),
        image::ImageError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            format!("truncated {format:?}: data ends early")
        }
        other => format!("corrupt {format:?}: {other}"),
    }
}

/// Decodes an encoded image held in memory; `path` is only used in errors.
pub fn decode_bytes(path: impl AsRef<Path>, bytes: &[u8]) -> Result<Rgb8, DataError> {
    let path = path.as_ref();
    let format = sniff(path, bytes)?;
    if format == ImageFormat::Jpeg {
        check_jpeg_complete(path, bytes)?;
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(limits());
    let img = reader
        .decode()
        .map_err(|e| DataError::bad_file(path, describe(format, e)))?;
    let (w, h) = (img.width(), img.height());
    if w == 0 || h == 0 {
        return Err(DataError::bad_file(path, "image has zero width or height"));
    }
    let rgb = img.into_rgb8();
    Ok(Rgb8 {
        width: w,
        height: h,
        pixels: rgb.into_raw(),
    })
}

/// Reads and decodes an image file to 8-bit RGB.
pub fn decode_file(path: impl AsRef<Path>) -> Result<Rgb8, DataError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| DataError::bad_file(path, e.to_string()))?;
    decode_bytes(path, &bytes)
}

/// Checks a file without decoding its pixels: not empty, a known format matching its
/// extension, a readable header with a size within the limits. Returns `(width, height)`.
pub fn probe_file(path: impl AsRef<Path>) -> Result<(u32, u32), DataError> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|e| DataError::bad_file(path, e.to_string()))?;
    let mut reader = BufReader::new(file);
    let mut head = Vec::with_capacity(32);
    (&mut reader)
        .take(32)
        .read_to_end(&mut head)
        .map_err(|e| DataError::bad_file(path, e.to_string()))?;
    let format = sniff(path, &head)?;
    let file = File::open(path).map_err(|e| DataError::bad_file(path, e.to_string()))?;
    let mut reader = ImageReader::with_format(BufReader::new(file), format);
    reader.limits(limits());
    let (w, h) = reader
        .into_dimensions()
        .map_err(|e| DataError::bad_file(path, describe(format, e)))?;
    if w == 0 || h == 0 {
        return Err(DataError::bad_file(path, "image has zero width or height"));
    }
    if w > MAX_SIDE || h > MAX_SIDE {
        return Err(DataError::bad_file(
            path,
            format!("{format:?} declares {w}x{h}, beyond the limit of {MAX_SIDE} px a side"),
        ));
    }
    Ok((w, h))
}
