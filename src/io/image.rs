//! Image decoding: PNG / JPEG / WebP files → RGB8.
//!
//! The format is detected from the file's content, never from its extension: frame folders in the
//! wild contain JPEGs named `.png` and the other way round, and a misnamed file should still decode.

use std::path::Path;

use image::{ImageDecoder, ImageFormat, RgbImage};

use super::limits::InputLimits;
use super::DecodeError;

/// The formats avseg is built to decode (the `image` features enabled in Cargo.toml).
const SUPPORTED: &[ImageFormat] = &[ImageFormat::Png, ImageFormat::Jpeg, ImageFormat::WebP];

/// Decodes an image file to 8-bit RGB.
///
/// Any colour type and bit depth is accepted: grey is replicated to three channels, 16-bit samples
/// are scaled to 8 bits, and alpha is dropped without compositing. Dropping alpha is what
/// `PIL.Image.convert('RGB')` does, and that is how the official dataloaders read frames.
pub fn decode_image(path: &Path) -> Result<RgbImage, DecodeError> {
    decode_image_with(path, &InputLimits::default())
}

/// [`decode_image`] within `limits`: an image over them is refused from its header, before its
/// pixels are allocated, and a file too large to hold an image within them is not read.
pub fn decode_image_with(path: &Path, limits: &InputLimits) -> Result<RgbImage, DecodeError> {
    let read_err = |source| DecodeError::Read { path: path.to_path_buf(), source };
    let size = std::fs::metadata(path).map_err(read_err)?.len();
    if size > limits.max_image_file_bytes() {
        return Err(DecodeError::Limit {
            path: path.to_path_buf(),
            detail: format!(
                "{:.1} MB is too large for an image within the limit of {} pixels (InputLimits::max_image_pixels, \
                 `--max-image-mpx` in the CLI)",
                size as f64 / 1e6,
                limits.max_image_pixels
            ),
        });
    }
    let bytes = std::fs::read(path).map_err(read_err)?;
    decode_image_bytes_with(path, &bytes, limits)
}

/// Decodes an in-memory image within the default limits; `path` is only used to name the source in
/// errors.
pub fn decode_image_bytes(path: &Path, bytes: &[u8]) -> Result<RgbImage, DecodeError> {
    decode_image_bytes_with(path, bytes, &InputLimits::default())
}

/// [`decode_image_bytes`] within `limits`.
pub fn decode_image_bytes_with(path: &Path, bytes: &[u8], limits: &InputLimits) -> Result<RgbImage, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty { path: path.to_path_buf() });
    }
    let err = |detail: String| DecodeError::Image { path: path.to_path_buf(), detail };
    let format = image::guess_format(bytes).map_err(|_| {
        err(format!(
            "unsupported or unrecognised image format (starts with {}); expected PNG, JPEG or WebP",
            magic(bytes)
        ))
    })?;
    if !SUPPORTED.contains(&format) {
        return Err(err(format!("{format:?} images are not supported; expected PNG, JPEG or WebP")));
    }
    let corrupt = |e: image::ImageError| err(format!("corrupt or truncated {format:?} ({} bytes): {e}", bytes.len()));
    let mut reader = image::ImageReader::with_format(std::io::Cursor::new(bytes), format);
    let mut decoder_limits = image::Limits::default();
    decoder_limits.max_image_width = Some(limits.max_image_side);
    decoder_limits.max_image_height = Some(limits.max_image_side);
    // The widest buffer a decoder fills: 16-bit RGBA, before the conversion to RGB8.
    decoder_limits.max_alloc = Some(limits.max_image_pixels.saturating_mul(8).saturating_add(1 << 20));
    reader.limits(decoder_limits);
    let limit_err = |detail: String| DecodeError::Limit { path: path.to_path_buf(), detail };
    let decoder = reader.into_decoder().map_err(|e| match e {
        image::ImageError::Limits(_) => limit_err(format!(
            "image exceeds the limit of {} pixels per side or {} pixels (InputLimits; `--max-image-side`, \
             `--max-image-mpx` in the CLI): {e}",
            limits.max_image_side, limits.max_image_pixels
        )),
        e => corrupt(e),
    })?;
    let (w, h) = decoder.dimensions();
    if w.max(h) > limits.max_image_side || w as u64 * h as u64 > limits.max_image_pixels {
        return Err(limit_err(format!(
            "image is {w}x{h}, over the limit of {} pixels per side and {} pixels (InputLimits; \
             `--max-image-side`, `--max-image-mpx` in the CLI)",
            limits.max_image_side, limits.max_image_pixels
        )));
    }
    let img = image::DynamicImage::from_decoder(decoder).map_err(corrupt)?;
    if img.width() == 0 || img.height() == 0 {
        return Err(err(format!("image is {}x{}", img.width(), img.height())));
    }
    Ok(match img {
        // Avoid a copy in the common case.
        image::DynamicImage::ImageRgb8(rgb) => rgb,
        other => other.to_rgb8(),
    })
}

/// The first bytes of a file, printable, so an error shows what the file actually is
/// (e.g. `"<!DOCTYPE"` for an HTML page saved as `.png`).
fn magic(bytes: &[u8]) -> String {
    let head = &bytes[..bytes.len().min(8)];
    let text: String = head.iter().map(|&b| if b.is_ascii_graphic() || b == b' ' { b as char } else { '.' }).collect();
    format!("{text:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_bytes_are_reported_as_empty() {
        let e = decode_image_bytes(Path::new("x.png"), &[]).unwrap_err();
        assert!(matches!(e, DecodeError::Empty { .. }), "{e}");
        assert!(e.to_string().contains("x.png"));
    }

    #[test]
    fn magic_is_printable() {
        assert_eq!(magic(b"\x89PNG\r\n\x1a\n"), "\".PNG....\"");
        assert_eq!(magic(b"hi"), "\"hi\"");
    }
}
