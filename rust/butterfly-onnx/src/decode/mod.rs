//! Encoded bytes or a path -> RGB8, exactly as `PIL.Image.open(f).convert("RGB")` (what
//! torchvision's loader does; no EXIF rotation).
//!
//! One module per format, each following the Pillow plugin (and libImaging decoder) that
//! reads it, so that the pixels and the verdict on a damaged file are Pillow's:
//!
//! * `jpeg`: libjpeg-turbo (as MozJPEG, built by `mozjpeg-sys`) with Pillow's settings, after
//!   `JpegImagePlugin`'s marker walk;
//! * `png`, `gif`, `bmp`: parsed here as `PngImagePlugin` / `GifImagePlugin` /
//!   `BmpImagePlugin` parse them (zlib through `flate2`'s zlib-rs);
//! * `tiff`: `TiffImagePlugin` in Rust, libtiff 4.7.2 (butterfly-onnx-libtiff) for the codecs;
//! * `webp`: libwebp 1.6.0 (`libwebp-sys`), called as Pillow's `_webp.c` calls it.
//!
//! This file sniffs the format as Pillow does and holds the shared pieces: the pixel limit,
//! allocation, and Pillow's `convert("RGB")` rules on raw samples (palettes, CMYK).
//!
//! The pixel limit is checked from the header before any pixel is decoded. No input panics:
//! every failure is [`Error::ImageDecode`] (or `ImageTooLarge`) naming the source.

use std::path::Path;

use crate::preprocess::ImageView;
use crate::{Error, Result};

mod bmp;
mod gif;
mod jpeg;
mod png;
mod tiff;
mod webp;

/// A decoded image: `height` rows of `width` RGB8 pixels (HWC).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl RgbImage {
    pub fn view(&self) -> ImageView<'_> {
        ImageView { width: self.width, height: self.height, data: &self.data }
    }
}

/// Decompression-bomb protection: `width * height` above `max_pixels` is refused before
/// decoding (Pillow raises `DecompressionBombError` above `2 * Image.MAX_IMAGE_PIXELS`).
/// `None` means no limit of the caller's, but still [`PILLOW_BOMB_PIXELS`], as on the python
/// backend (Pillow's own check).
///
/// `jpeg_draft`: decode JPEGs at a reduced DCT scale (see [`JpegDraft`]); `None` (the
/// default) decodes every image at full size, as torchvision's loader does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecodeLimits {
    pub max_pixels: Option<u64>,
    pub jpeg_draft: Option<JpegDraft>,
}

/// JPEG draft mode: what Pillow's `im.draft("RGB", request)` does before `convert("RGB")`,
/// with `request` = the size torchvision's `Resize(resize_size, max_size=max_size)` gives
/// the full image (equivalent to `(resize_size, resize_size)` without `max_size`). libjpeg
/// then decodes at `1/scale` ([`Self::scale`]) with the IDCT's scaled outputs (everything
/// else as in the exact path), an image of `ceil(w / scale) x ceil(h / scale)` pixels, never
/// smaller than the resize target. Not torchvision-exact; other formats are unaffected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JpegDraft {
    pub resize_size: u32,
    pub max_size: Option<u32>,
}

impl JpegDraft {
    /// Pillow's `JpegImageFile.draft` rule for a `width x height` JPEG: the largest of 8, 4,
    /// 2, 1 not above `min(width // request_w, height // request_h)` (1 when the request is
    /// degenerate: the preprocessing reports that image).
    pub fn scale(&self, width: u32, height: u32) -> u32 {
        match crate::preprocess::resized_size(width, height, self.resize_size, self.max_size) {
            Ok((rw, rh)) => {
                let fit = (width / rw).min(height / rh);
                [8, 4, 2, 1].into_iter().find(|&s| fit >= s).unwrap_or(1)
            }
            Err(_) => 1,
        }
    }
}

/// Read and decode the image file at `path`; errors name the path as given.
pub fn read_rgb(path: &Path, limits: &DecodeLimits) -> Result<RgbImage> {
    let source_name = crate::error::path_name(path);
    match std::fs::read(path) {
        Ok(bytes) => decode_rgb(&bytes, &source_name, limits),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::ImageNotFound { source_name }),
        Err(e) => Err(decode_error(&source_name, format!("cannot read the file: {e}"))),
    }
}

/// Decode an encoded image (JPEG, PNG, GIF, BMP, TIFF, WebP) to RGB8.
pub fn decode_rgb(bytes: &[u8], source_name: &str, limits: &DecodeLimits) -> Result<RgbImage> {
    // The decoders report errors as values; should one of them panic on a malformed file
    // anyway, that is still a decode error about this input, not a crash of the caller, and
    // nothing is printed on stderr: the crate's one panic guard.
    crate::error::guard(source_name, "decoder failed", || decode_any(bytes, source_name, limits))
}

fn decode_any(bytes: &[u8], source_name: &str, limits: &DecodeLimits) -> Result<RgbImage> {
    if bytes.is_empty() {
        return Err(decode_error(source_name, "empty file (0 bytes)"));
    }
    // Pillow's JpegImagePlugin accepts files starting with FF D8 FF.
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return jpeg::decode(bytes, source_name, limits);
    }
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        return png::decode(bytes, source_name, limits);
    }
    if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        return gif::decode(bytes, source_name, limits);
    }
    if bytes.starts_with(b"BM") {
        return bmp::decode(bytes, source_name, limits);
    }
    if tiff::is_tiff(bytes) {
        return tiff::decode(bytes, source_name, limits);
    }
    match image::guess_format(bytes) {
        Ok(image::ImageFormat::WebP) => webp::decode(bytes, source_name, limits),
        Ok(other) => Err(decode_error(source_name, format!("unsupported image format {other:?}"))),
        Err(_) => {
            // Pillow has no magic number for TGA and tries it on whatever no other plugin
            // took; a damaged file of ours may pass its header checks, and then Pillow
            // checks that header's size. Refused either way, but in the same order.
            if let Some((width, height)) = pillow_tga_size(bytes) {
                check_limit(source_name, width, height, limits)?;
            }
            Err(decode_error(source_name, "unknown image format (not JPEG, PNG, GIF, BMP, TIFF or WebP)"))
        }
    }
}

/// The size `TgaImagePlugin._open` reads when it accepts the header (it has no magic number).
fn pillow_tga_size(b: &[u8]) -> Option<(u64, u64)> {
    let s = b.get(..18)?;
    let le16 = |at: usize| u16::from_le_bytes([s[at], s[at + 1]]) as u64;
    let (colormap, imagetype, depth) = (s[1], s[2], s[16]);
    let (width, height) = (le16(12), le16(14));
    let accepted = colormap <= 1
        && width > 0
        && height > 0
        && matches!(depth, 1 | 8 | 16 | 24 | 32)
        && matches!(imagetype, 1 | 2 | 3 | 9 | 10 | 11)
        && (colormap == 0 || matches!(s[7], 16 | 24 | 32));
    accepted.then_some((width, height))
}

fn decode_error(source_name: &str, reason: impl Into<String>) -> Error {
    Error::ImageDecode { source_name: source_name.to_string(), reason: reason.into() }
}

/// What `max_pixels: None` still refuses: Pillow's own decompression-bomb ceiling with its
/// default `MAX_IMAGE_PIXELS` (`Image.open` raises `DecompressionBombError` above
/// `2 * 89_478_485` pixels, which the python backend reports as ImageTooLargeError even with
/// `max_image_pixels=None`). A few header bytes never allocate more than ~0.5 GB; a larger
/// explicit limit lifts it.
pub const PILLOW_BOMB_PIXELS: u64 = 2 * 89_478_485;

fn check_limit(source_name: &str, width: u64, height: u64, limits: &DecodeLimits) -> Result<()> {
    if width == 0 || height == 0 {
        return Err(decode_error(source_name, format!("invalid image size {width}x{height}")));
    }
    let pixels = width.saturating_mul(height);
    match limits.max_pixels.unwrap_or(PILLOW_BOMB_PIXELS) {
        limit if pixels > limit => {
            Err(Error::ImageTooLarge { source_name: source_name.to_string(), width, height, pixels, limit })
        }
        _ => Ok(()),
    }
}

fn alloc_rgb(source_name: &str, width: u32, height: u32) -> Result<Vec<u8>> {
    let len = (width as usize)
        .checked_mul(height as usize)
        .and_then(|n| n.checked_mul(3))
        .ok_or_else(|| decode_error(source_name, "image too large for memory"))?;
    let mut data = Vec::new();
    data.try_reserve_exact(len)
        .map_err(|_| decode_error(source_name, format!("cannot allocate {len} bytes for {width}x{height} pixels")))?;
    data.resize(len, 0);
    Ok(data)
}

// -- Pillow's convert("RGB") rules on raw samples ----------------------------------------

/// Pillow's palette: the file's entries (at most 256), then black for unset indices
/// (`ImagingPaletteNew` zero-fills).
fn palette_table(palette: &[u8]) -> [[u8; 3]; 256] {
    let mut table = [[0u8; 3]; 256];
    for (entry, rgb) in table.iter_mut().zip(palette.chunks_exact(3)) {
        *entry = [rgb[0], rgb[1], rgb[2]];
    }
    table
}

/// Pillow's `cmyk2rgb` (Convert.c): `nk = 255 - k; c' = nk - MULDIV255(c, nk)` (clipped).
#[inline]
fn cmyk_to_rgb(c: u8, m: u8, y: u8, k: u8) -> [u8; 3] {
    let nk = 255 - k as i32;
    let muldiv255 = |a: i32, b: i32| {
        let tmp = a * b + 128;
        ((tmp >> 8) + tmp) >> 8
    };
    let f = |v: u8| (nk - muldiv255(v as i32, nk)).clamp(0, 255) as u8;
    [f(c), f(m), f(y)]
}
