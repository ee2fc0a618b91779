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

use butterfly_onnx_libtiff as lt;
use std::ffi::{c_char, c_int, c_void, CStr};

use super::{alloc_rgb, check_limit, decode_error, DecodeLimits, RgbImage};
use crate::Result;

/// Pillow's accepted TIFF prefixes (TiffImagePlugin.PREFIXES).
pub(super) fn is_tiff(b: &[u8]) -> bool {
    [b"MM\x00\x2a", b"II\x2a\x00", b"MM\x2a\x00", b"II\x00\x2a", b"MM\x00\x2b", b"II\x2b\x00"]
        .iter()
        .any(|p| b.starts_with(*p))
}

// -- the first IFD, as ImageFileDirectory_v2.load reads it ---------------------------------------

/// A tag's value as Pillow's loaders give it, reduced to what the decoder needs.
#[derive(Clone, Debug, PartialEq)]
enum Value {
    /// SHORT, LONG, SBYTE, SSHORT, SLONG, LONG8, IFD: Python ints.
    Ints(Vec<i64>),
    /// Integral RATIONAL / FLOAT / DOUBLE values: equal to ints in Python, but not ints.
    Floats(Vec<i64>),
    /// BYTE: Python bytes (not equal to an int tuple, but iterable as ints).
    Bytes(Vec<i64>),
    /// Every other value (UNDEFINED bytes, ASCII str, non-integral RATIONAL / FLOAT...): not
    /// an int tuple; the tags read here refuse such values as not supported, except the strip
    /// and tile offsets, which Pillow only uses at load time. The count is the number of items
    /// of the tuple Pillow stores (one str or one bytes object; each float).
    Other(usize),
    /// Non-integral RATIONAL / FLOAT / DOUBLE values (Python floats / IFDRationals; a zero
    /// denominator is NaN, as IFDRational makes it).
    Reals(Vec<f64>),
}

struct Ifd {
    little: bool,
    offset: u64,
    tags: Vec<(u16, Value)>,
}

fn unit_size(typ: u16) -> Option<u64> {
    Some(match typ {
        1 | 2 | 6 | 7 => 1,
        3 | 8 => 2,
        4 | 9 | 11 | 13 => 4,
        5 | 10 | 12 | 16 => 8,
        _ => return None,
    })
}

fn read_uint(b: &[u8], little: bool) -> u64 {
    let mut v = 0u64;
    if little {
        for &x in b.iter().rev() {
            v = v << 8 | x as u64;
        }
    } else {
        for &x in b {
            v = v << 8 | x as u64;
        }
    }
    v
}

fn parse_ifd(b: &[u8]) -> std::result::Result<Ifd, &'static str> {
    if !is_tiff(b) || b.len() < 8 {
        return Err("not a TIFF file");
    }
    let little = b[0] == b'I';
    let bigtiff = b[2] == 43 || b[3] == 43;
    let head = if bigtiff { 16 } else { 8 };
    if b.len() < head {
        return Err("truncated TIFF header");
    }
    let first = if bigtiff { read_uint(&b[8..16], little) } else { read_uint(&b[4..8], little) };
    if first == 0 {
        return Err("TIFF without an image directory");
    }
    if first >= 1 << 63 {
        return Err("Unable to seek to frame");
    }
    let mut ifd = Ifd { little, offset: first, tags: Vec::new() };
    let limit = b.len() as u64;
    let (count_len, entry_len, inline) = if bigtiff { (8u64, 20u64, 8u64) } else { (2, 12, 4) };
    let at = |pos: u64, len: u64| -> Option<&[u8]> {
        let end = pos.checked_add(len)?;
        if end > limit {
            return None;
        }
        Some(&b[pos as usize..end as usize])
    };
    let Some(count) = at(first, count_len) else { return Ok(ifd) };
    let count = read_uint(count, little);
    let mut seen = std::collections::HashSet::new();
    let mut total = 0u64;
    for i in 0..count {
        let Some(entry) = first.checked_add(count_len + i * entry_len).and_then(|p| at(p, entry_len)) else {
            break; // Pillow stops at a truncated directory and keeps the tags read so far
        };
        let tag = read_uint(&entry[0..2], little) as u16;
        let typ = read_uint(&entry[2..4], little) as u16;
        let n = if bigtiff { read_uint(&entry[4..12], little) } else { read_uint(&entry[4..8], little) };
        let field = &entry[entry_len as usize - inline as usize..];
        if seen.contains(&tag) {
            continue;
        }
        let Some(unit) = unit_size(typ) else { continue };
        let Some(size) = n.checked_mul(unit) else { continue };
        let data: &[u8] = if size > inline {
            let off = read_uint(field, little);
            if off >= 1 << 63 {
                continue;
            }
            total = total.saturating_add(size);
            if total > limit {
                continue;
            }
            // ImageFile._safe_read reads it from the file,
            // and a short read raises ("Truncated File Read"), which ends the whole directory
            match at(off, size) {
                Some(d) => d,
                None => break,
            }
        } else {
            &field[..size as usize]
        };
        if data.is_empty() {
            continue;
        }
        seen.insert(tag);
        let value = match typ {
            3 | 4 | 13 | 16 | 6 | 8 | 9 => {
                let mut v = Vec::with_capacity(n.min(1 << 16) as usize);
                for c in data.chunks_exact(unit as usize) {
                    let u = read_uint(c, little);
                    v.push(match typ {
                        6 => u as u8 as i8 as i64,
                        8 => u as u16 as i16 as i64,
                        9 => u as u32 as i32 as i64,
                        // Python ints are unbounded: saturated, a size this large fails the size check
                        16 => u.min(i64::MAX as u64) as i64,
                        _ => u as i64,
                    });
                }
                Value::Ints(v)
            }
            // RATIONAL, SRATIONAL, FLOAT, DOUBLE: numbers that Python compares (and hashes)
            // equal to ints when integral -- OPEN_INFO and COMPRESSION_INFO lookups succeed.
            5 | 10 | 11 | 12 => {
                let mut v = Vec::new();
                for c in data.chunks_exact(unit as usize) {
                    let f = match typ {
                        5 | 10 => {
                            let (num, den) = (read_uint(&c[..4], little), read_uint(&c[4..], little));
                            let (num, den) = if typ == 5 {
                                (num as f64, den as f64)
                            } else {
                                (num as u32 as i32 as f64, den as u32 as i32 as f64)
                            };
                            if den == 0.0 {
                                f64::NAN
                            } else {
                                num / den
                            }
                        }
                        11 => f32::from_bits(read_uint(c, little) as u32) as f64,
                        _ => f64::from_bits(read_uint(c, little)),
                    };
                    v.push(f);
                }
                if v.iter().all(|f| f.is_finite() && f.fract() == 0.0 && f.abs() < 1e15) {
                    Value::Floats(v.iter().map(|&f| f as i64).collect())
                } else {
                    Value::Reals(v)
                }
            }
            // BYTE: a bytes object (iterating it gives ints). UNDEFINED is a tuple holding one
            // bytes object (Other).
            1 => Value::Bytes(data.iter().map(|&v| v as i64).collect()),
            // ASCII: one str; UNDEFINED: one bytes object.
            _ => Value::Other(1),
        };
        ifd.tags.push((tag, value));
    }
    Ok(ifd)
}

impl Ifd {
    fn get(&self, tag: u16) -> Option<&Value> {
        self.tags.iter().find(|t| t.0 == tag).map(|t| &t.1)
    }
    /// A tag TiffTags declares with one value: Pillow keeps the first of several.
    fn single(&self, tag: u16, default: i64) -> std::result::Result<i64, &'static str> {
        // A PhotometricInterpretation of several values is dropped by Pillow's _setitem.
        let several = match self.get(tag) {
            Some(Value::Ints(v) | Value::Floats(v)) => v.len() > 1,
            Some(Value::Reals(v)) => v.len() > 1,
            _ => false,
        };
        if tag == 262 && several {
            return Ok(default);
        }
        match self.get(tag) {
            None => Ok(default),
            Some(Value::Ints(v) | Value::Floats(v)) => Ok(v[0]),
            Some(_) => Err("TIFF tag of a type not supported here"),
        }
    }
    fn single_opt(&self, tag: u16) -> std::result::Result<Option<i64>, &'static str> {
        match self.get(tag) {
            None => Ok(None),
            Some(Value::Ints(v)) => Ok(Some(v[0])),
            Some(_) => Err("TIFF tag of a type not supported here"),
        }
    }
    /// A tag Pillow only iterates (offsets, the colour map): bytes work as their values.
    fn iterable(&self, tag: u16) -> std::result::Result<Option<Vec<i64>>, &'static str> {
        match self.get(tag) {
            Some(Value::Bytes(v)) => Ok(Some(v.clone())),
            _ => self.tuple(tag),
        }
    }
    /// Strip or tile offsets: `_setup` only counts them (tiles are made for any values; a value
    /// that is not an int fails in ImageFile.load's seek, after the size check), so values of
    /// any type give that many placeholders here (the caller marks them as a load error).
    fn offsets(&self, tag: u16) -> std::result::Result<Option<Vec<i64>>, &'static str> {
        match self.get(tag) {
            Some(Value::Other(n)) => Ok(Some(vec![0; *n])),
            Some(Value::Reals(v)) => Ok(Some(vec![0; v.len()])),
            _ => self.iterable(tag),
        }
    }
    fn tuple(&self, tag: u16) -> std::result::Result<Option<Vec<i64>>, &'static str> {
        match self.get(tag) {
            None => Ok(None),
            Some(Value::Ints(v) | Value::Floats(v)) => Ok(Some(v.clone())),
            Some(_) => Err("TIFF tag of a type not supported here"),
        }
    }
}

// -- TiffImageFile._setup ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
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
    fn pixel_size(self) -> usize {
        match self {
            Mode::Bit | Mode::L | Mode::P => 1,
            Mode::I16 | Mode::I16B => 2,
            _ => 4,
        }
    }
    fn bands(self) -> usize {
        match self {
            Mode::Bit | Mode::L | Mode::P | Mode::I16 | Mode::I16B | Mode::I | Mode::F => 1,
            Mode::La | Mode::LA | Mode::PA => 2,
            Mode::Rgb | Mode::YCbCr | Mode::Lab => 3,
            Mode::Rgba | Mode::Cmyk => 4,
        }
    }
}

/// OPEN_INFO[(byte order, photometric, sample format, fill order, bits, extra samples)].
fn open_info(
    little: bool,
    photo: i64,
    sf: &[i64],
    fill: i64,
    bps: &[i64],
    extra: &[i64],
) -> Option<(Mode, &'static str)> {
    use Mode::*;
    let s = |v: &[i64]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",");
    let key = format!("{photo}|{}|{fill}|{}|{}", s(sf), s(bps), s(extra));
    let both = match key.as_str() {
        "0|1|1|1|" => (Bit, "1;I"),
        "0|1|2|1|" => (Bit, "1;IR"),
        "1|1|1|1|" => (Bit, "1"),
        "1|1|2|1|" => (Bit, "1;R"),
        "0|1|1|2|" => (L, "L;2I"),
        "0|1|2|2|" => (L, "L;2IR"),
        "1|1|1|2|" => (L, "L;2"),
        "1|1|2|2|" => (L, "L;2R"),
        "0|1|1|4|" => (L, "L;4I"),
        "0|1|2|4|" => (L, "L;4IR"),
        "1|1|1|4|" => (L, "L;4"),
        "1|1|2|4|" => (L, "L;4R"),
        "0|1|1|8|" => (L, "L;I"),
        "0|1|2|8|" => (L, "L;IR"),
        "1|1|1|8|" | "1|2|1|8|" => (L, "L"),
        "1|1|2|8|" => (L, "L;R"),
        "1|2|1|32|" => (I, if little { "I;32S" } else { "I;32BS" }),
        "0|3|1|32|" | "1|3|1|32|" => (F, if little { "F;32F" } else { "F;32BF" }),
        "1|1|1|8,8|0" => (L, "LX"),
        "1|1|1|8,8|1" => (La, "La"),
        "1|1|1|8,8|2" => (LA, "LA"),
        "2|1|1|8,8,8|" => (Rgb, "RGB"),
        "2|1|2|8,8,8|" => (Rgb, "RGB;R"),
        "2|1|1|8,8,8,8|" | "2|1|1|8,8,8,8|2" | "2|1|1|8,8,8,8|999" => (Rgba, "RGBA"),
        "2|1|1|8,8,8,8|0" => (Rgb, "RGBX"),
        "2|1|1|8,8,8,8,8|0,0" => (Rgb, "RGBXX"),
        "2|1|1|8,8,8,8,8,8|0,0,0" => (Rgb, "RGBXXX"),
        "2|1|1|8,8,8,8|1" => (Rgba, "RGBa"),
        "2|1|1|8,8,8,8,8|1,0" => (Rgba, "RGBaX"),
        "2|1|1|8,8,8,8,8,8|1,0,0" => (Rgba, "RGBaXX"),
        "2|1|1|8,8,8,8,8|2,0" => (Rgba, "RGBAX"),
        "2|1|1|8,8,8,8,8,8|2,0,0" => (Rgba, "RGBAXX"),
        "2|1|1|16,16,16|" => (Rgb, if little { "RGB;16L" } else { "RGB;16B" }),
        "2|1|1|16,16,16,16|" | "2|1|1|16,16,16,16|2" => (Rgba, if little { "RGBA;16L" } else { "RGBA;16B" }),
        "2|1|1|16,16,16,16|0" => (Rgb, if little { "RGBX;16L" } else { "RGBX;16B" }),
        "2|1|1|16,16,16,16|1" => (Rgba, if little { "RGBa;16L" } else { "RGBa;16B" }),
        "3|1|1|1|" => (P, "P;1"),
        "3|1|2|1|" => (P, "P;1R"),
        "3|1|1|2|" => (P, "P;2"),
        "3|1|2|2|" => (P, "P;2R"),
        "3|1|1|4|" => (P, "P;4"),
        "3|1|2|4|" => (P, "P;4R"),
        "3|1|1|8|" => (P, "P"),
        "3|1|1|8,8|0" => (P, "PX"),
        "3|1|1|8,8|2" => (PA, "PA"),
        "3|1|2|8|" => (P, "P;R"),
        "5|1|1|8,8,8,8|" => (Cmyk, "CMYK"),
        "5|1|1|8,8,8,8,8|0" => (Cmyk, "CMYKX"),
        "5|1|1|8,8,8,8,8,8|0,0" => (Cmyk, "CMYKXX"),
        "5|1|1|16,16,16,16|" => (Cmyk, if little { "CMYK;16L" } else { "CMYK;16B" }),
        "6|1|1|8|" => (L, "L"),
        "6|1|1|8,8,8|" => (YCbCr, "YCbCr"),
        "8|1|1|8,8,8|" => (Lab, "LAB"),
        _ => {
            // The little-endian-only and big-endian-only entries.
            return match (little, key.as_str()) {
                (true, "1|1|1|12|") => Some((I16, "I;12")),
                (true, "0|1|1|16|") | (true, "1|1|1|16|") => Some((I16, "I;16")),
                (false, "1|1|1|16|") => Some((I16B, "I;16B")),
                (true, "1|1|2|16|") => Some((I16, "I;16R")),
                (true, "1|2|1|16|") => Some((I, "I;16S")),
                (false, "1|2|1|16|") => Some((I, "I;16BS")),
                (true, "1|1|1|32|") => Some((I, "I;32N")),
                _ => None,
            };
        }
    };
    Some(both)
}

struct Setup {
    width: u64,
    height: u64,
    mode: Mode,
    rawmode: String,
    compression: i64,
    planar: i64,
    bps: Vec<i64>,
    orientation: Option<i64>,
    palette: Option<Vec<[u8; 3]>>,
    /// Uncompressed: Pillow's raw tiles (decoder name "raw", extents, offset, rawmode, stride).
    raw_tiles: Vec<RawTile>,
    /// An error Pillow raises only when loading (after its size check).
    load_error: Option<String>,
}

#[derive(Clone, PartialEq)]
struct RawTile {
    x0: u64,
    y0: u64,
    x1: u64,
    y1: u64,
    offset: i64,
    rawmode: String,
    stride: i64,
}

fn setup(ifd: &Ifd) -> std::result::Result<Setup, String> {
    let e = |s: &str| s.to_string();
    if ifd.get(0xBC01).is_some() {
        return Err(e("Windows Media Photo files not yet supported"));
    }
    let compression = ifd.single(259, 1)?;
    if !matches!(compression, 1..=8 | 32771 | 32773 | 32809 | 32946 | 34676 | 34677 | 34925 | 50000 | 50001) {
        return Err(format!("unknown TIFF compression {compression}"));
    }
    // A PlanarConfiguration that is not an int (bytes, str) equals neither 1 nor 2.
    let planar = match ifd.get(284) {
        Some(Value::Bytes(_) | Value::Other(_) | Value::Reals(_)) => -1,
        _ => ifd.single(284, 1)?,
    };
    let mut photo = ifd.single(262, 0)?;
    if compression == 6 {
        photo = 6;
    }
    let fill = ifd.single(266, 1)?;
    let (Some(width), Some(height)) = (ifd.single_opt(256)?, ifd.single_opt(257)?) else {
        return Err(e("Missing dimensions"));
    };
    // Not an int (bytes, str, a rational): neither the size swap nor exif_transpose applies.
    let orientation = match ifd.get(274) {
        Some(Value::Ints(v)) => Some(v[0]),
        _ => None,
    };
    let mut sample_format = ifd.tuple(339)?.unwrap_or_else(|| vec![1]);
    if sample_format.len() > 1 && sample_format.iter().all(|&v| v == sample_format[0]) {
        sample_format.truncate(1);
    }
    let mut bps = ifd.tuple(258)?.unwrap_or_else(|| vec![1]);
    let mut extra = ifd.tuple(338)?.unwrap_or_default();
    let mut spp = ifd.single(277, if compression == 6 && matches!(photo, 2 | 6) { 3 } else { 1 })?;
    let mut bps_count: usize = match photo {
        2 | 6 | 8 => 3,
        5 => 4,
        _ => 1,
    };
    if planar == 2 && !extra.is_empty() && extra.iter().max() == Some(&0) {
        let keep = bps.len().saturating_sub(extra.len());
        bps.truncate(keep);
        spp -= extra.len() as i64;
        extra.clear();
    }
    bps_count += extra.len();
    if spp > 6 {
        return Err(e("Invalid value for samples per pixel"));
    }
    if spp < bps.len() as i64 {
        bps.truncate(spp.max(0) as usize);
    } else if spp > bps.len() as i64 && bps.len() == 1 {
        bps = vec![bps[0]; spp as usize];
    }
    if bps.len() as i64 != spp {
        return Err(e("unknown data organization"));
    }
    let Some((mut mode, rawmode)) = open_info(ifd.little, photo, &sample_format, fill, &bps, &extra) else {
        return Err(e("unknown pixel mode"));
    };
    let mut rawmode = rawmode.to_string();
    let (w, h) = (width, height);
    let mut raw_tiles = Vec::new();
    let mut load_error = None;
    if compression != 1 {
        if fill == 2 {
            let Some((m, r)) = open_info(ifd.little, photo, &sample_format, 1, &bps, &extra) else {
                return Err(e("unknown pixel mode"));
            };
            mode = m;
            rawmode = r.to_string();
        }
        if photo == 6 {
            mode = Mode::Rgb;
            // `self._compression in "jpeg"`: a substring test ("jpeg" itself here).
            rawmode = if compression == 7 && planar == 1 { "RGB" } else { "RGBX" }.to_string();
        } else if rawmode == "I;16" {
            rawmode = "I;16N".to_string();
        } else if rawmode.ends_with(";16B") || rawmode.ends_with(";16L") {
            rawmode.pop();
            rawmode.push('N');
        }
    } else {
        // A RowsPerStrip that is a non-integral number makes float tiles, which fail only at
        // load time: after the size check.
        let mut real_rows = None;
        let (offsets, tw, th) = if let Some(o) = ifd.offsets(273)? {
            let th = match ifd.get(278) {
                Some(Value::Reals(v)) => {
                    real_rows = Some(v[0]);
                    h
                }
                _ => ifd.single(278, h)?,
            };
            (o, w, th)
        } else if let Some(o) = ifd.offsets(324)? {
            let (Some(tw), Some(th)) = (ifd.single_opt(322)?, ifd.single_opt(323)?) else {
                return Err(e("Invalid tile dimensions"));
            };
            (o, tw, th)
        } else {
            return Err(e("unknown data organization"));
        };
        // Offsets that are not ints (an UNDEFINED bytes tuple, rationals) fail later, in
        // ImageFile.load's seek:
        // after the size check.
        let tag = if ifd.get(273).is_some() { 273 } else { 324 };
        if !matches!(ifd.get(tag), Some(Value::Ints(_) | Value::Bytes(_))) {
            load_error = Some(e("TIFF strip or tile offsets that are not integers"));
        }
        let mut offsets = offsets;
        if let Some(rows) = real_rows {
            // _setup's tile loop in floats: only its `rawmode[layer]` can fail before the size
            // check (planar configuration 2); no tile is ever decoded.
            let (mut x, mut y, mut layer) = (0i64, 0f64, 0usize);
            for _ in &offsets {
                if planar == 2 && layer >= rawmode.chars().count() {
                    return Err(e("string index out of range"));
                }
                x += tw;
                if x >= w {
                    (x, y) = (0, y + rows);
                    if y >= h as f64 {
                        (y, layer) = (0.0, layer + 1);
                    }
                }
            }
            load_error = Some(e("TIFF RowsPerStrip that is not an integer"));
            offsets.clear();
        }
        if tw == w && th == h && planar != 2 && real_rows.is_none() {
            offsets = offsets.last().copied().into_iter().collect(); // Pillow's offsets[-1:]
        }
        let (mut x, mut y, mut layer) = (0i64, 0i64, 0usize);
        let bits: i64 = bps.iter().sum();
        if offsets.len() > 1 << 20 {
            return Err(e("too many TIFF strips"));
        }
        for offset in offsets {
            let mut stride = if x + tw > w { (tw * bits) as f64 / 8.0 } else { 0.0 };
            let mut tile_rawmode = rawmode.clone();
            if planar == 2 {
                let Some(c) = rawmode.chars().nth(layer) else {
                    return Err(e("string index out of range"));
                };
                tile_rawmode = c.to_string();
                stride /= bps_count as f64;
            }
            if x < 0 || y < 0 {
                return Err(e("tile cannot extend outside image"));
            }
            raw_tiles.push(RawTile {
                x0: x as u64,
                y0: y as u64,
                x1: (x + tw).min(w).max(i64::MIN / 4) as u64,
                y1: (y + th).min(h).max(i64::MIN / 4) as u64,
                offset,
                rawmode: tile_rawmode,
                stride: stride as i64,
            });
            x += tw;
            if x >= w {
                x = 0;
                y += th;
                if y >= h {
                    y = 0;
                    layer += 1;
                }
            }
        }
    }
    let palette = if matches!(mode, Mode::P | Mode::PA) {
        let Some(map) = ifd.iterable(320)? else { return Err(e("TIFF palette image without a ColorMap")) };
        let bytes: Vec<u8> = map.iter().map(|&v| (v.div_euclid(256)) as u8).collect();
        if map.iter().any(|&v| !(0..65536).contains(&v)) {
            return Err(e("TIFF ColorMap value not supported"));
        }
        let n = bytes.len() / 3;
        if n > 256 {
            return Err(e("TIFF ColorMap with more than 256 entries not supported"));
        }
        let mut pal = vec![[0u8; 3]; 256];
        for (i, p) in pal.iter_mut().enumerate().take(n) {
            *p = [bytes[i], bytes[n + i], bytes[2 * n + i]];
        }
        Some(pal)
    } else {
        None
    };
    if width < 0 || height < 0 {
        return Err(e("TIFF with a negative size"));
    }
    Ok(Setup {
        width: width as u64,
        height: height as u64,
        mode,
        rawmode,
        compression,
        planar,
        bps,
        orientation,
        palette,
        raw_tiles,
        load_error,
    })
}

// -- Pillow's unpackers for the raw modes used above ---------------------------------------------

const fn bitflip(v: u8) -> u8 {
    v.reverse_bits()
}

/// Bits per pixel of a raw mode's unpacker for `mode`, or None when Pillow has none.
fn unpacker_bits(mode: Mode, raw: &str) -> Option<usize> {
    use Mode::*;
    Some(match (mode, raw) {
        (Bit, "1" | "1;I" | "1;R" | "1;IR") | (P, "P;1" | "P;1R") => 1,
        (L, "L;2" | "L;2I" | "L;2R" | "L;2IR") | (P, "P;2" | "P;2R") => 2,
        (L, "L;4" | "L;4I" | "L;4R" | "L;4IR") | (P, "P;4" | "P;4R") => 4,
        (L, "L" | "L;I" | "L;R" | "L;IR") | (P, "P" | "P;R") => 8,
        (L, "LX") | (LA, "LA") | (P, "PX") | (PA, "PA") => 16,
        (I16, "I;12") => 12,
        (I16, "I;16" | "I;16N" | "I;16R") | (I16B, "I;16B" | "I;16N") | (I, "I;16S" | "I;16BS") => 16,
        (I, "I;32N" | "I;32S" | "I;32BS") | (F, "F;32F" | "F;32BF") => 32,
        (Rgb, "RGB" | "RGB;R") | (YCbCr, "YCbCr") => 24,
        (Rgb, "RGBX") | (Rgba, "RGBA" | "RGBa") | (Cmyk, "CMYK") => 32,
        (Rgb, "RGBXX") | (Rgba, "RGBaX" | "RGBAX") | (Cmyk, "CMYKX") => 40,
        (Rgb, "RGBXXX") | (Rgba, "RGBaXX" | "RGBAXX") | (Cmyk, "CMYKXX") => 48,
        (Rgb, "RGB;16L" | "RGB;16B" | "RGB;16N") => 48,
        (Rgb, "RGBX;16L" | "RGBX;16B" | "RGBX;16N") => 64,
        (Rgba, "RGBA;16L" | "RGBA;16B" | "RGBA;16N" | "RGBa;16L" | "RGBa;16B" | "RGBa;16N") => 64,
        (Cmyk, "CMYK;16L" | "CMYK;16B" | "CMYK;16N") => 64,
        // one band of a planar image (Pillow's raw decoder: rawmode[layer])
        (Rgb | Rgba, "R" | "G" | "B") | (Rgba, "A") | (Cmyk, "C" | "M" | "Y" | "K") => 8,
        (LA, "L" | "A") | (PA, "P" | "A") => 8,
        _ => return None,
    })
}

fn unpremultiply(r: u8, g: u8, b: u8, a: u8) -> [u8; 4] {
    match a {
        0 => [0, 0, 0, 0],
        255 => [r, g, b, 255],
        _ => {
            let f = |v: u8| (v as u32 * 255 / a as u32).min(255) as u8;
            [f(r), f(g), f(b), a]
        }
    }
}

/// Unpacks `n` pixels of `raw` from `src` into `out` (pixels of `mode`, Pillow's layout).
fn unpack(mode: Mode, raw: &str, out: &mut [u8], src: &[u8], n: usize) {
    let ps = mode.pixel_size();
    let bit = |i: usize, rev: bool| {
        let byte = src[i / 8];
        let byte = if rev { bitflip(byte) } else { byte };
        (byte >> (7 - i % 8)) & 1
    };
    let sub = |i: usize, bits: usize, rev: bool| {
        let per = 8 / bits;
        let byte = src[i / per];
        let byte = if rev { bitflip(byte) } else { byte };
        (byte >> (8 - bits * (i % per + 1))) & ((1 << bits) - 1) as u8
    };
    let put4 = |out: &mut [u8], i: usize, v: [u8; 4]| out[i * 4..i * 4 + 4].copy_from_slice(&v);
    let hi16 = |s: &[u8], k: usize, little: bool| if little { s[2 * k + 1] } else { s[2 * k] };
    for i in 0..n {
        match raw {
            "1" | "1;R" => out[i] = if bit(i, raw == "1;R") == 1 { 255 } else { 0 },
            "1;I" | "1;IR" => out[i] = if bit(i, raw == "1;IR") == 1 { 0 } else { 255 },
            "P;1" | "P;1R" => out[i] = bit(i, raw == "P;1R"),
            "P;2" | "P;2R" => out[i] = sub(i, 2, raw == "P;2R"),
            "P;4" | "P;4R" => out[i] = sub(i, 4, raw == "P;4R"),
            "L;2" | "L;2R" => out[i] = sub(i, 2, raw == "L;2R") * 0x55,
            "L;2I" | "L;2IR" => out[i] = 255 - sub(i, 2, raw == "L;2IR") * 0x55,
            "L;4" | "L;4R" => out[i] = sub(i, 4, raw == "L;4R") * 0x11,
            "L;4I" | "L;4IR" => out[i] = 255 - sub(i, 4, raw == "L;4IR") * 0x11,
            "L" | "P" if ps == 1 => out[i] = src[i],
            "L;I" => out[i] = 255 - src[i],
            "L;R" | "P;R" => out[i] = bitflip(src[i]),
            "L;IR" => out[i] = 255 - bitflip(src[i]),
            "LX" | "PX" => out[i] = src[2 * i],
            "LA" | "PA" => put4(out, i, [src[2 * i], src[2 * i], src[2 * i], src[2 * i + 1]]),
            "I;16" | "I;16N" if mode == Mode::I16 => out[2 * i..2 * i + 2].copy_from_slice(&src[2 * i..2 * i + 2]),
            "I;16R" => out[2 * i..2 * i + 2].copy_from_slice(&[bitflip(src[2 * i]), bitflip(src[2 * i + 1])]),
            "I;12" => {
                // two 12-bit samples in three bytes, most significant bits first
                let k = 3 * (i / 2);
                let v = if i % 2 == 0 {
                    (src[k] as u16) << 4 | (src[k + 1] >> 4) as u16
                } else {
                    ((src[k + 1] & 0x0F) as u16) << 8 | src[k + 2] as u16
                };
                out[2 * i..2 * i + 2].copy_from_slice(&v.to_le_bytes());
            }
            "I;16N" => out[2 * i..2 * i + 2].copy_from_slice(&[src[2 * i + 1], src[2 * i]]),
            "I;16B" => out[2 * i..2 * i + 2].copy_from_slice(&src[2 * i..2 * i + 2]),
            "I;16S" | "I;16BS" => {
                let u = read_uint(&src[2 * i..2 * i + 2], raw == "I;16S") as u16 as i16 as i32;
                out[4 * i..4 * i + 4].copy_from_slice(&u.to_ne_bytes());
            }
            "I;32N" | "I;32S" | "I;32BS" => {
                let u = read_uint(&src[4 * i..4 * i + 4], raw != "I;32BS") as u32 as i32;
                out[4 * i..4 * i + 4].copy_from_slice(&u.to_ne_bytes());
            }
            "F;32F" | "F;32BF" => {
                let u = read_uint(&src[4 * i..4 * i + 4], raw == "F;32F") as u32;
                out[4 * i..4 * i + 4].copy_from_slice(&f32::from_bits(u).to_ne_bytes());
            }
            "YCbCr" => put4(out, i, [src[3 * i], src[3 * i + 1], src[3 * i + 2], 255]),
            "RGB" => put4(out, i, [src[3 * i], src[3 * i + 1], src[3 * i + 2], 255]),
            "RGB;R" => put4(out, i, [bitflip(src[3 * i]), bitflip(src[3 * i + 1]), bitflip(src[3 * i + 2]), 255]),
            "RGBX" | "RGBA" | "CMYK" => out[4 * i..4 * i + 4].copy_from_slice(&src[4 * i..4 * i + 4]),
            "RGBXX" | "RGBAX" | "CMYKX" => out[4 * i..4 * i + 4].copy_from_slice(&src[5 * i..5 * i + 4]),
            "RGBXXX" | "RGBAXX" | "CMYKXX" => out[4 * i..4 * i + 4].copy_from_slice(&src[6 * i..6 * i + 4]),
            "RGBa" | "RGBaX" | "RGBaXX" => {
                let step = raw.len(); // 4, 5 or 6 bytes per pixel
                let p = &src[step * i..step * i + 4];
                put4(out, i, unpremultiply(p[0], p[1], p[2], p[3]));
            }
            "RGB;16L" | "RGB;16B" | "RGB;16N" => {
                let s = &src[6 * i..6 * i + 6];
                let l = raw != "RGB;16B";
                put4(out, i, [hi16(s, 0, l), hi16(s, 1, l), hi16(s, 2, l), 255]);
            }
            "RGBX;16L" | "RGBX;16B" | "RGBX;16N" | "RGBA;16L" | "RGBA;16B" | "RGBA;16N" | "CMYK;16L" | "CMYK;16B"
            | "CMYK;16N" => {
                let s = &src[8 * i..8 * i + 8];
                let l = !raw.ends_with('B');
                put4(out, i, [hi16(s, 0, l), hi16(s, 1, l), hi16(s, 2, l), hi16(s, 3, l)]);
            }
            "RGBa;16L" | "RGBa;16B" | "RGBa;16N" => {
                let s = &src[8 * i..8 * i + 8];
                let l = !raw.ends_with('B');
                put4(out, i, unpremultiply(hi16(s, 0, l), hi16(s, 1, l), hi16(s, 2, l), hi16(s, 3, l)));
            }
            _ => {
                // one band: R G B A / C M Y K / L P A (8 bits)
                let band = match raw {
                    "R" | "C" | "L" | "P" => 0,
                    "G" | "M" => 1,
                    "B" | "Y" => 2,
                    _ => 3,
                };
                if ps == 1 {
                    out[i] = src[i];
                } else {
                    out[4 * i + band] = src[i];
                }
            }
        }
    }
}

/// The 16-bit native planar unpackers of TiffDecode.c (R;16N ... A;16N): the high byte.
fn unpack_band16(out: &mut [u8], src: &[u8], band: usize, n: usize) {
    for i in 0..n {
        out[4 * i + band] = src[2 * i + 1];
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
    let ifd = parse_ifd(b).map_err(|e| decode_error(source_name, e))?;
    let s = setup(&ifd).map_err(|e| decode_error(source_name, e))?;
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
        decode_libtiff(b, &ifd, &s, &mut img, source_name)?;
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

struct Memory<'a> {
    data: &'a [u8],
    loc: u64,
}

unsafe extern "C" fn read_proc(h: lt::thandle_t, buf: *mut c_void, size: lt::tmsize_t) -> lt::tmsize_t {
    let m = unsafe { &mut *(h as *mut Memory) };
    let eof = m.data.len() as u64;
    if m.loc > eof || size < 0 {
        return 0;
    }
    let n = (size as u64).min(eof - m.loc) as usize;
    if n == 0 || buf.is_null() {
        return 0;
    }
    unsafe { std::ptr::copy_nonoverlapping(m.data.as_ptr().add(m.loc as usize), buf as *mut u8, n) };
    m.loc += n as u64;
    n as lt::tmsize_t
}
unsafe extern "C" fn write_proc(_: lt::thandle_t, _: *mut c_void, _: lt::tmsize_t) -> lt::tmsize_t {
    0
}
unsafe extern "C" fn seek_proc(h: lt::thandle_t, off: lt::toff_t, whence: c_int) -> lt::toff_t {
    let m = unsafe { &mut *(h as *mut Memory) };
    match whence {
        0 => m.loc = off,
        1 => m.loc = m.loc.wrapping_add(off),
        2 => m.loc = (m.data.len() as u64).wrapping_add(off),
        _ => {}
    }
    m.loc
}
unsafe extern "C" fn close_proc(_: lt::thandle_t) -> c_int {
    0
}
unsafe extern "C" fn size_proc(h: lt::thandle_t) -> lt::toff_t {
    let m = unsafe { &*(h as *mut Memory) };
    m.data.len() as u64
}
unsafe extern "C" fn map_proc(h: lt::thandle_t, base: *mut *mut c_void, size: *mut lt::toff_t) -> c_int {
    let m = unsafe { &*(h as *mut Memory) };
    unsafe {
        *base = m.data.as_ptr() as *mut c_void;
        *size = m.data.len() as u64;
    }
    1
}
unsafe extern "C" fn unmap_proc(_: lt::thandle_t, _: *mut c_void, _: lt::toff_t) {}

const TAG_IMAGEWIDTH: u32 = 256;
const TAG_IMAGELENGTH: u32 = 257;
const TAG_BITSPERSAMPLE: u32 = 258;
const TAG_COMPRESSION: u32 = 259;
const TAG_PHOTOMETRIC: u32 = 262;
const TAG_ROWSPERSTRIP: u32 = 278;
const TAG_PLANARCONFIG: u32 = 284;
const TAG_TILEWIDTH: u32 = 322;
const TAG_TILELENGTH: u32 = 323;
const TAG_EXTRASAMPLES: u32 = 338;
const TAG_JPEGCOLORMODE: u32 = 65538;

/// A libtiff handle on the file in memory, closed on drop, with its captured messages.
struct Handle {
    tif: *mut lt::TIFF,
    _messages: Box<lt::Messages>,
    messages: *mut lt::Messages,
}

impl Drop for Handle {
    fn drop(&mut self) {
        if !self.tif.is_null() {
            unsafe { lt::TIFFClose(self.tif) };
        }
    }
}

impl Handle {
    fn error(&self) -> String {
        let m = unsafe { &*self.messages };
        if m.errors > 0 {
            unsafe { CStr::from_ptr(m.error.as_ptr()) }.to_string_lossy().into_owned()
        } else {
            String::new()
        }
    }
}

fn broken(source_name: &str, h: Option<&Handle>) -> crate::Error {
    let detail = h.map(|h| h.error()).filter(|e| !e.is_empty());
    match detail {
        Some(d) => decode_error(source_name, format!("decoder error -2 (libtiff: {d})")),
        None => decode_error(source_name, "decoder error -2"),
    }
}

/// TiffDecode.c's ImagingLibTiffDecode.
fn decode_libtiff(b: &[u8], ifd: &Ifd, s: &Setup, img: &mut ModeImage, source_name: &str) -> Result<()> {
    static SILENCE: std::sync::Once = std::sync::Once::new();
    SILENCE.call_once(|| unsafe { lt::bo_tiff_silence_globals() });
    let _ = (s.planar, &s.bps);
    let mut memory = Memory { data: b, loc: 0 };
    let mut messages: Box<lt::Messages> = Box::new(unsafe { std::mem::zeroed() });
    let mp: *mut lt::Messages = &mut *messages;
    // Memory bound: a few times the decoded image, and never more than 4 GiB.
    let image_bytes = (s.width.saturating_mul(s.height)).saturating_mul(16);
    let bound = image_bytes.saturating_add(64 << 20).min(4 << 30) as isize;
    let tif = unsafe {
        let opts = lt::TIFFOpenOptionsAlloc();
        if opts.is_null() {
            return Err(decode_error(source_name, "cannot allocate libtiff options"));
        }
        lt::TIFFOpenOptionsSetMaxSingleMemAlloc(opts, bound);
        lt::TIFFOpenOptionsSetMaxCumulatedMemAlloc(opts, bound.saturating_mul(2));
        lt::TIFFOpenOptionsSetErrorHandlerExtR(opts, lt::bo_tiff_error, mp as *mut c_void);
        lt::TIFFOpenOptionsSetWarningHandlerExtR(opts, lt::bo_tiff_warning, mp as *mut c_void);
        let tif = lt::TIFFClientOpenExt(
            c"tempfile.tif".as_ptr(),
            c"rC".as_ptr(),
            &mut memory as *mut Memory as lt::thandle_t,
            read_proc,
            write_proc,
            seek_proc,
            close_proc,
            size_proc,
            map_proc,
            unmap_proc,
            opts,
        );
        lt::TIFFOpenOptionsFree(opts);
        tif
    };
    let h = Handle { tif, _messages: messages, messages: mp };
    if tif.is_null() {
        return Err(broken(source_name, Some(&h)));
    }
    // Errors that Pillow's decoder leaves at 0 (an unreadable sub-directory) leave the image
    // as it was allocated: zeros.
    if ifd.offset != 0 && unsafe { lt::TIFFSetSubDirectory(tif, ifd.offset) } == 0 {
        return Ok(());
    }
    let (mut w, mut hgt) = (0u32, 0u32);
    unsafe {
        lt::TIFFGetField(tif, TAG_IMAGEWIDTH, &mut w as *mut u32);
        lt::TIFFGetField(tif, TAG_IMAGELENGTH, &mut hgt as *mut u32);
    }
    if w as i32 as i64 != s.width as i64 || hgt as i32 as i64 != s.height as i64 {
        return Err(broken(source_name, Some(&h)));
    }
    let (mut photometric, mut compression, mut planar) = (0u16, 0u16, 0u16);
    unsafe {
        lt::TIFFGetField(tif, TAG_PHOTOMETRIC, &mut photometric as *mut u16);
        lt::TIFFGetField(tif, TAG_COMPRESSION, &mut compression as *mut u16);
        lt::TIFFGetFieldDefaulted(tif, TAG_PLANARCONFIG, &mut planar as *mut u16);
    }
    let mut as_rgba = photometric == 6;
    if as_rgba && compression == 7 && planar == 1 {
        unsafe { lt::TIFFSetField(tif, TAG_JPEGCOLORMODE, 1 as c_int) };
        as_rgba = false;
    }
    let Some(bits) = unpacker_bits(img.mode, &s.rawmode) else {
        return Err(decode_error(source_name, format!("unknown raw mode for given image mode ({})", s.rawmode)));
    };
    let result = if as_rgba {
        decode_rgba(&h, img, &s.rawmode, bits)
    } else {
        let planes = if planar == 2 && img.mode.bands() > 1 {
            let mut bps = 8u16;
            unsafe { lt::TIFFGetFieldDefaulted(tif, TAG_BITSPERSAMPLE, &mut bps as *mut u16) };
            if bps != 8 && bps != 16 {
                return Err(broken(source_name, Some(&h)));
            }
            Some((img.mode.bands(), bps == 16))
        } else {
            None
        };
        let r = if unsafe { lt::TIFFIsTiled(tif) } != 0 {
            decode_tiles(&h, img, &s.rawmode, bits, planes)
        } else {
            decode_strips(&h, img, &s.rawmode, bits, planes)
        };
        if r.is_ok() && planes.is_some_and(|p| p.0 > 3) && img.mode == Mode::Rgba {
            let (mut n, mut info) = (0u16, std::ptr::null::<u16>());
            unsafe {
                lt::TIFFGetFieldDefaulted(tif, TAG_EXTRASAMPLES, &mut n as *mut u16, &mut info as *mut *const u16)
            };
            if n >= 1 && !info.is_null() && matches!(unsafe { *info }, 0 | 1) {
                for p in img.data.chunks_exact_mut(4) {
                    let v = unpremultiply(p[0], p[1], p[2], p[3]);
                    p.copy_from_slice(&v);
                }
            }
        }
        r
    };
    result.map_err(|()| broken(source_name, Some(&h)))
}

fn unpack_plane(
    img_mode: Mode,
    rawmode: &str,
    planes: Option<(usize, bool)>,
    plane: usize,
    out: &mut [u8],
    src: &[u8],
    n: usize,
) {
    match planes {
        None => unpack(img_mode, rawmode, out, src, n),
        Some((_, true)) => unpack_band16(out, src, plane, n),
        Some((_, false)) => {
            for i in 0..n {
                out[4 * i + plane] = src[i];
            }
        }
    }
}

fn decode_strips(
    h: &Handle,
    img: &mut ModeImage,
    rawmode: &str,
    bits: usize,
    planes: Option<(usize, bool)>,
) -> std::result::Result<(), ()> {
    let tif = h.tif;
    let nplanes = planes.map_or(1, |p| p.0);
    let bits = match planes {
        Some((n, true)) => 16 * n,
        Some((n, false)) => 8 * n,
        None => bits,
    };
    let (xs, ys) = (img.width, img.height);
    let mut rps = 0u32;
    if unsafe { lt::TIFFGetField(tif, TAG_ROWSPERSTRIP, &mut rps as *mut u32) } != 1 || rps == u32::MAX {
        rps = ys as u32;
    }
    if rps > i32::MAX as u32 {
        return Err(());
    }
    let strip_size = unsafe { lt::TIFFStripSize(tif) };
    if strip_size > i32::MAX as isize - 1 || strip_size < 0 {
        return Err(());
    }
    let unpacker_row = (xs * bits / nplanes).div_ceil(8) as isize;
    if strip_size > unpacker_row * rps as isize {
        return Err(());
    }
    let row_size = unsafe { lt::TIFFScanlineSize(tif) };
    if row_size == 0 || unpacker_row > row_size {
        return Err(());
    }
    let mut buf = vec![0u8; strip_size as usize];
    let mut y = 0usize;
    while y < ys {
        for plane in 0..nplanes {
            let strip = unsafe { lt::TIFFComputeStrip(tif, y as u32, plane as u16) };
            if unsafe { lt::TIFFReadEncodedStrip(tif, strip, buf.as_mut_ptr() as *mut c_void, strip_size) } == -1 {
                return Err(());
            }
            let rows = (rps as usize).min(ys - y);
            for r in 0..rows {
                let start = r * row_size as usize;
                let Some(src) = buf.get(start..) else { return Err(()) };
                let need = (xs * bits / nplanes).div_ceil(8);
                if src.len() < need {
                    return Err(());
                }
                unpack_plane(img.mode, rawmode, planes, plane, img.row(y + r, 0), src, xs);
            }
        }
        y += rps as usize;
        if rps == 0 {
            return Err(());
        }
    }
    Ok(())
}

fn decode_tiles(
    h: &Handle,
    img: &mut ModeImage,
    rawmode: &str,
    bits: usize,
    planes: Option<(usize, bool)>,
) -> std::result::Result<(), ()> {
    let tif = h.tif;
    let nplanes = planes.map_or(1, |p| p.0);
    let bits = match planes {
        Some((n, true)) => 16 * n,
        Some((n, false)) => 8 * n,
        None => bits,
    };
    let (xs, ys) = (img.width, img.height);
    let tile_bytes = unsafe { lt::TIFFTileSize(tif) };
    if tile_bytes <= 0 {
        return Err(());
    }
    let row_size = unsafe { lt::TIFFTileRowSize(tif) };
    if row_size == 0 || row_size > tile_bytes || tile_bytes > i32::MAX as isize - 1 {
        return Err(());
    }
    let (mut tw, mut tl) = (0u32, 0u32);
    unsafe {
        lt::TIFFGetField(tif, TAG_TILEWIDTH, &mut tw as *mut u32);
        lt::TIFFGetField(tif, TAG_TILELENGTH, &mut tl as *mut u32);
    }
    if tw > i32::MAX as u32 || tl > i32::MAX as u32 || tw == 0 || tl == 0 {
        return Err(());
    }
    let unpacker_row = (tw as usize * bits / nplanes).div_ceil(8) as isize;
    if tile_bytes != unpacker_row * tl as isize || unpacker_row > row_size {
        return Err(());
    }
    let mut buf = vec![0u8; tile_bytes as usize];
    let mut y = 0usize;
    while y < ys {
        for plane in 0..nplanes {
            let mut x = 0usize;
            while x < xs {
                let r = unsafe {
                    lt::TIFFReadTile(tif, buf.as_mut_ptr() as *mut c_void, x as u32, y as u32, 0, plane as u16)
                };
                if r == -1 {
                    return Err(());
                }
                let cw = (tw as usize).min(xs - x);
                let cl = (tl as usize).min(ys - y);
                for ty in 0..cl {
                    let start = ty * row_size as usize;
                    let src = &buf[start..];
                    unpack_plane(img.mode, rawmode, planes, plane, img.row(ty + y, x), src, cw);
                }
                x += tw as usize;
            }
        }
        y += tl as usize;
    }
    Ok(())
}

/// TIFFRGBAImage, as TiffDecode.c's _decodeAsRGBA uses it (top-left orientation).
#[repr(C)]
#[allow(non_snake_case)]
struct RgbaImageHead {
    tif: *mut lt::TIFF,
    stoponerr: c_int,
    isContig: c_int,
    alpha: c_int,
    width: u32,
    height: u32,
    bitspersample: u16,
    samplesperpixel: u16,
    orientation: u16,
    req_orientation: u16,
    photometric: u16,
    redcmap: *mut u16,
    greencmap: *mut u16,
    bluecmap: *mut u16,
    get: *mut c_void,
    put: *mut c_void,
    map: *mut c_void,
    bwmap: *mut c_void,
    palmap: *mut c_void,
    ycbcr: *mut c_void,
    cielab: *mut c_void,
    ua_to_aa: *mut u8,
    bitdepthmap: *mut u8,
    row_offset: c_int,
    col_offset: c_int,
}

fn decode_rgba(h: &Handle, img: &mut ModeImage, rawmode: &str, bits: usize) -> std::result::Result<(), ()> {
    let tif = h.tif;
    let mut rpb = 0u32;
    let ret = unsafe {
        if lt::TIFFIsTiled(tif) != 0 {
            lt::TIFFGetFieldDefaulted(tif, TAG_TILELENGTH, &mut rpb as *mut u32)
        } else {
            lt::TIFFGetFieldDefaulted(tif, TAG_ROWSPERSTRIP, &mut rpb as *mut u32)
        }
    };
    let ys = img.height;
    if ret != 1 || rpb == u32::MAX {
        rpb = ys as u32;
    }
    if bits != 32 {
        return Err(());
    }
    // The C struct is larger than its documented head (it has a union of put routines
    // inside); 1 KiB of 8-byte aligned storage holds it on every LP64 target.
    let mut storage = vec![0u64; 128];
    let head = storage.as_mut_ptr() as *mut RgbaImageHead;
    let mut emsg = [0 as c_char; 1024];
    let ok = unsafe {
        lt::TIFFRGBAImageOK(tif, emsg.as_mut_ptr()) != 0
            && lt::TIFFRGBAImageBegin(head as *mut c_void, tif, 0, emsg.as_mut_ptr()) != 0
    };
    if !ok {
        return Err(());
    }
    struct End(*mut c_void);
    impl Drop for End {
        fn drop(&mut self) {
            unsafe { lt::TIFFRGBAImageEnd(self.0) };
        }
    }
    let _end = End(head as *mut c_void);
    let (iw, ih) = unsafe {
        (*head).orientation = 1;
        (*head).req_orientation = 1;
        (*head).col_offset = 0;
        ((*head).width, (*head).height)
    };
    if (i32::MAX / 4) as u32 <= iw.saturating_sub(1) {
        return Err(());
    }
    let row_bytes = iw as usize * 4;
    if row_bytes == 0 || (i32::MAX as usize / row_bytes) < rpb as usize {
        return Err(());
    }
    let mut buf = vec![0u32; rpb as usize * iw as usize];
    let mut y = 0usize;
    while y < ys {
        unsafe { (*head).row_offset = y as c_int };
        let rows = (rpb as i64).min(ih as i64 - y as i64);
        if rows < 0 {
            return Err(());
        }
        if unsafe { lt::TIFFRGBAImageGet(head as *mut c_void, buf.as_mut_ptr(), iw, rows as u32) } == 0 {
            return Err(());
        }
        let bytes: Vec<u8> = buf.iter().flat_map(|v| v.to_le_bytes()).collect();
        let n = (rpb as usize).min(ys - y);
        for r in 0..n {
            let src = &bytes[r * row_bytes..];
            let xs = img.width;
            if src.len() < xs * 4 {
                return Err(());
            }
            unpack(img.mode, rawmode, img.row(y + r, 0), src, xs);
        }
        if rpb == 0 {
            return Err(());
        }
        y += rpb as usize;
    }
    Ok(())
}
