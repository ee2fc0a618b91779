//! TIFF as Pillow 13 reads it. Pillow's TiffImagePlugin decides everything in Python: it
//! parses the first IFD its own way (ImageFileDirectory_v2), picks the mode and raw mode from
//! its OPEN_INFO table, checks the size, then decodes uncompressed images with its own raw
//! decoder (one tile per strip or tile offset) and everything else with libtiff
//! (TiffDecode.c: strips or tiles through the raw mode's unpacker, YCbCr through
//! TIFFRGBAImage, JPEG's YCbCr converted by libjpeg), and finally applies the Orientation tag
//! (ImageTiffFile.load_end's exif_transpose). The same steps are followed here, with the same
//! libtiff (4.7.2, vendored in butterfly-onnx-libtiff); `convert("RGB")` is applied from the
//! resulting mode. Layouts not reproduced here (LAB, "La",
//! LZMA, ZSTD, WebP-in-TIFF) are refused with an ImageDecodeError that says "not supported".
//!
//! The modules follow Pillow's own seams: `ifd` and `setup` are TiffImagePlugin.py
//! (`ImageFileDirectory_v2.load`, `TiffImageFile._setup`), `unpack` is Unpack.c, `libtiff` is
//! TiffDecode.c; this file holds the image in Pillow's mode, its `convert("RGB")`, the raw
//! decoder (ImageFile.load) and the order of the steps.

mod ifd;
mod libtiff;
mod setup;
mod unpack;

use super::{alloc_rgb, check_limit, decode_error, DecodeLimits, RgbImage};
use crate::Result;
use setup::{RawTile, Setup};
use unpack::{unpack, unpacker_bits};

/// Pillow's accepted TIFF prefixes (TiffImagePlugin.PREFIXES).
pub(super) fn is_tiff(b: &[u8]) -> bool {
    [b"MM\x00\x2a", b"II\x2a\x00", b"MM\x2a\x00", b"II\x00\x2a", b"MM\x00\x2b", b"II\x2b\x00"]
        .iter()
        .any(|p| b.starts_with(*p))
}

// -- Pillow's image modes ----------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    Bit,
    L,
    La,
    LA,
    P,
    PA,
    I16,
    I16B,
    I,
    F,
    Rgb,
    Rgba,
    Cmyk,
    YCbCr,
    Lab,
}

impl Mode {
    pub(super) fn pixel_size(self) -> usize {
        match self {
            Mode::Bit | Mode::L | Mode::P => 1,
            Mode::I16 | Mode::I16B => 2,
            _ => 4,
        }
    }
    pub(super) fn bands(self) -> usize {
        match self {
            Mode::Bit | Mode::L | Mode::P | Mode::I16 | Mode::I16B | Mode::I | Mode::F => 1,
            Mode::La | Mode::LA | Mode::PA => 2,
            Mode::Rgb | Mode::YCbCr | Mode::Lab => 3,
            Mode::Rgba | Mode::Cmyk => 4,
        }
    }
}

// -- the image in Pillow's mode, and convert("RGB") -----------------------------------------------

struct ModeImage {
    mode: Mode,
    width: usize,
    height: usize,
    data: Vec<u8>,
}

impl ModeImage {
    fn new(source_name: &str, mode: Mode, width: u64, height: u64) -> Result<Self> {
        let len = (width as usize)
            .checked_mul(height as usize)
            .and_then(|n| n.checked_mul(mode.pixel_size()))
            .ok_or_else(|| decode_error(source_name, "image too large for memory"))?;
        let mut data = Vec::new();
        data.try_reserve_exact(len).map_err(|_| decode_error(source_name, "cannot allocate the image"))?;
        data.resize(len, 0);
        // Pillow's new images: RGB and RGBX-like modes have their padding byte at 255.
        if matches!(mode, Mode::Rgb | Mode::YCbCr | Mode::Lab) {
            for p in data.chunks_exact_mut(4) {
                p[3] = 255;
            }
        }
        Ok(ModeImage { mode, width: width as usize, height: height as usize, data })
    }
    fn row(&mut self, y: usize, x: usize) -> &mut [u8] {
        let ps = self.mode.pixel_size();
        let start = (y * self.width + x) * ps;
        &mut self.data[start..(y + 1) * self.width * ps]
    }

    fn to_rgb(&self, source_name: &str, palette: Option<&[[u8; 3]]>) -> Result<Vec<u8>> {
        let mut rgb = alloc_rgb(source_name, self.width as u32, self.height as u32)?;
        let ps = self.mode.pixel_size();
        for (o, p) in rgb.chunks_exact_mut(3).zip(self.data.chunks_exact(ps)) {
            match self.mode {
                Mode::Bit => o.fill(if p[0] != 0 { 255 } else { 0 }),
                Mode::L => o.fill(p[0]),
                Mode::LA => o.fill(p[0]),
                Mode::P | Mode::PA => o.copy_from_slice(&palette.unwrap()[p[0] as usize]),
                Mode::I16 => o.fill(if p[1] == 0 { p[0] } else { 255 }),
                Mode::I16B => o.fill(if p[0] == 0 { p[1] } else { 255 }),
                Mode::I => o.fill(i32::from_ne_bytes([p[0], p[1], p[2], p[3]]).clamp(0, 255) as u8),
                Mode::Rgb | Mode::Rgba => o.copy_from_slice(&p[..3]),
                Mode::Cmyk => o.copy_from_slice(&super::cmyk_to_rgb(p[0], p[1], p[2], p[3])),
                Mode::F => {
                    // F -> L: clipped, truncated toward zero (NaN compares false: 0)
                    let v = f32::from_ne_bytes([p[0], p[1], p[2], p[3]]);
                    o.fill(if v.is_nan() || v <= 0.0 {
                        0
                    } else if v >= 255.0 {
                        255
                    } else {
                        v as u8
                    })
                }
                Mode::YCbCr => o.copy_from_slice(&ycbcr_to_rgb(p[0], p[1], p[2])),
                Mode::La | Mode::Lab => {
                    return Err(decode_error(source_name, format!("TIFF mode {:?} is not supported", self.mode)));
                }
            }
        }
        Ok(rgb)
    }
}

/// Pillow's YCbCr -> RGB (ConvertYCbCr.c): JFIF coefficients in 6-bit fixed point, each
/// table entry `int(c * 64 * (v - 128) + 0.5)` (truncated toward zero, as Python's int()).
fn ycbcr_to_rgb(y: u8, cb: u8, cr: u8) -> [u8; 3] {
    let t = |c: f64, v: u8| (c * 64.0 * (v as f64 - 128.0) + 0.5) as i32;
    let y = y as i32;
    let r = y + (t(1.40200, cr) >> 6);
    let g = y + ((t(-0.34414, cb) + t(-0.71414, cr)) >> 6);
    let b = y + (t(1.77200, cb) >> 6);
    [r.clamp(0, 255) as u8, g.clamp(0, 255) as u8, b.clamp(0, 255) as u8]
}

/// ImageOps.exif_transpose for orientations 2..8, on RGB pixels.
fn transpose(rgb: Vec<u8>, w: usize, h: usize, orientation: i64) -> (Vec<u8>, usize, usize) {
    if !(2..=8).contains(&orientation) {
        return (rgb, w, h);
    }
    let swap = orientation >= 5;
    let (nw, nh) = if swap { (h, w) } else { (w, h) };
    let mut out = vec![0u8; rgb.len()];
    for y in 0..nh {
        for x in 0..nw {
            // source pixel for destination (x, y)
            let (sx, sy) = match orientation {
                2 => (w - 1 - x, y),
                3 => (w - 1 - x, h - 1 - y),
                4 => (x, h - 1 - y),
                5 => (y, x),
                6 => (y, h - 1 - x),
                7 => (w - 1 - y, h - 1 - x),
                _ => (w - 1 - y, x),
            };
            let s = (sy * w + sx) * 3;
            let d = (y * nw + x) * 3;
            out[d..d + 3].copy_from_slice(&rgb[s..s + 3]);
        }
    }
    (out, nw, nh)
}

// -- decoding ---------------------------------------------------------------------------------------

/// Decode a TIFF as Pillow's `Image.open(...).convert("RGB")` does.
pub(super) fn decode(b: &[u8], source_name: &str, limits: &DecodeLimits) -> Result<RgbImage> {
    let ifd = ifd::parse_ifd(b).map_err(|e| decode_error(source_name, e))?;
    let s = setup::setup(&ifd).map_err(|e| decode_error(source_name, e))?;
    check_limit(source_name, s.width, s.height, limits)?;
    if let Some(err) = &s.load_error {
        return Err(decode_error(source_name, err.clone()));
    }
    let unsupported = |what: &str| decode_error(source_name, format!("{what} is not supported"));
    if matches!(s.mode, Mode::La | Mode::Lab) {
        return Err(unsupported(&format!("TIFF mode {:?}", s.mode)));
    }
    let mut img = ModeImage::new(source_name, s.mode, s.width, s.height)?;
    if s.compression == 1 {
        decode_raw(b, &s, &mut img, source_name)?;
    } else {
        if matches!(s.compression, 34925 | 50000 | 50001) {
            return Err(unsupported("TIFF compression LZMA, ZSTD or WebP"));
        }
        libtiff::decode_libtiff(b, &ifd, &s, &mut img, source_name)?;
    }
    let rgb = img.to_rgb(source_name, s.palette.as_deref())?;
    let (data, w, h) = transpose(rgb, img.width, img.height, s.orientation.unwrap_or(1));
    Ok(RgbImage { width: w as u32, height: h as u32, data })
}

/// Pillow's raw decoder over its tile list (ImageFile.load).
fn decode_raw(b: &[u8], s: &Setup, img: &mut ModeImage, source_name: &str) -> Result<()> {
    let mut tiles = s.raw_tiles.clone();
    tiles.sort_by_key(|t| t.offset); // stable, like Python's sort
    let mut kept: Vec<RawTile> = Vec::new();
    for t in tiles {
        match kept.last_mut() {
            Some(last)
                if (last.x0, last.y0, last.x1, last.y1, &last.rawmode, last.stride)
                    == (t.x0, t.y0, t.x1, t.y1, &t.rawmode, t.stride) =>
            {
                *last = t
            }
            _ => kept.push(t),
        }
    }
    if kept.is_empty() {
        return Err(decode_error(source_name, "cannot load this image"));
    }
    for t in &kept {
        let Some(bits) = unpacker_bits(s.mode, &t.rawmode) else {
            return Err(decode_error(source_name, format!("unknown raw mode for given image mode ({})", t.rawmode)));
        };
        if t.x1 <= t.x0 || t.y1 <= t.y0 || t.x1 > s.width || t.y1 > s.height {
            return Err(decode_error(source_name, "tile cannot extend outside image"));
        }
        let xs = (t.x1 - t.x0) as usize;
        let bytes = (xs * bits).div_ceil(8);
        let skip = if t.stride != 0 {
            let k = t.stride - bytes as i64;
            if k < 0 {
                return Err(decode_error(source_name, "decoder error -8"));
            }
            k as usize
        } else {
            0
        };
        let rows = (t.y1 - t.y0) as usize;
        let mut at = t.offset.max(0) as usize;
        for r in 0..rows {
            if r > 0 {
                at = at.saturating_add(skip);
            }
            let end = at.saturating_add(bytes);
            if t.offset < 0 || end > b.len() {
                return Err(decode_error(source_name, "image file is truncated"));
            }
            let out = img.row(t.y0 as usize + r, t.x0 as usize);
            unpack(s.mode, &t.rawmode, out, &b[at..end], xs);
            at = end;
        }
    }
    Ok(())
}
