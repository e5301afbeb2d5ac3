//! Image decoding: PNG / JPEG / WebP files → RGB8.
//!
//! The format is detected from the file's content, never from its extension: frame folders in the
//! wild contain JPEGs named `.png` and the other way round, and a misnamed file should still decode.

use std::path::Path;

use image::{ImageFormat, RgbImage};

use super::DecodeError;

/// The formats avseg is built to decode (the `image` features enabled in Cargo.toml).
const SUPPORTED: &[ImageFormat] = &[ImageFormat::Png, ImageFormat::Jpeg, ImageFormat::WebP];

/// Decodes an image file to 8-bit RGB.
///
/// Any colour type and bit depth is accepted: grey is replicated to three channels, 16-bit samples
/// are scaled to 8 bits, and alpha is dropped without compositing. Dropping alpha is what
/// `PIL.Image.convert('RGB')` does, and that is how the official dataloaders read frames.
pub fn decode_image(path: &Path) -> Result<RgbImage, DecodeError> {
    let bytes = std::fs::read(path).map_err(|source| DecodeError::Read { path: path.to_path_buf(), source })?;
    decode_image_bytes(path, &bytes)
}

/// Decodes an in-memory image; `path` is only used to name the source in errors.
pub fn decode_image_bytes(path: &Path, bytes: &[u8]) -> Result<RgbImage, DecodeError> {
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
    let img = image::load_from_memory_with_format(bytes, format)
        .map_err(|e| err(format!("corrupt or truncated {format:?} ({} bytes): {e}", bytes.len())))?;
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
