//! `TiffImagePlugin.TiffImageFile._setup`: from the first IFD to Pillow's mode, raw mode,
//! size, palette and, for uncompressed images, the raw decoder's tile list; the checks and
//! error messages in Pillow's order.

use super::ifd::{Ifd, Value};
use super::Mode;

/// OPEN_INFO[(byte order, photometric, sample format, fill order, bits, extra samples)].
pub(super) fn open_info(
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

pub(super) struct Setup {
    pub(super) width: u64,
    pub(super) height: u64,
    pub(super) mode: Mode,
    pub(super) rawmode: String,
    pub(super) compression: i64,
    pub(super) planar: i64,
    pub(super) bps: Vec<i64>,
    pub(super) orientation: Option<i64>,
    pub(super) palette: Option<Vec<[u8; 3]>>,
    /// Uncompressed: Pillow's raw tiles (decoder name "raw", extents, offset, rawmode, stride).
    pub(super) raw_tiles: Vec<RawTile>,
    /// An error Pillow raises only when loading (after its size check).
    pub(super) load_error: Option<String>,
}

#[derive(Clone, PartialEq)]
pub(super) struct RawTile {
    pub(super) x0: u64,
    pub(super) y0: u64,
    pub(super) x1: u64,
    pub(super) y1: u64,
    pub(super) offset: i64,
    pub(super) rawmode: String,
    pub(super) stride: i64,
}

pub(super) fn setup(ifd: &Ifd) -> std::result::Result<Setup, String> {
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
