//! BMP as Pillow's `BmpImagePlugin` reads it (header, bit fields, palette, raw and RLE
//! pixel data), then `convert("RGB")`. Pillow's rules, followed to the letter:
//!
//! * headers of 12 (OS/2 v1), 40, 52, 56, 64, 108 or 124 bytes; width and height unsigned
//!   (a height whose top byte is 0xFF is a top-down image of `2^32 - height` rows);
//! * 1/4/8 bits: a palette of `colors` (or `2^bits`) entries; a palette that is all grey
//!   (or black and white for 2 colours) is dropped and the indices are the grey values
//!   ("L" / "1" modes); unset palette entries are black;
//! * 16 bits: RGB555 (`BGR;15`) unless bit fields say 565 (`BGR;16`), 5/6 bits scaled with
//!   `v * 255 / 31` (`/ 63`); 24 bits BGR; 32 bits BGRX, or one of Pillow's bit-field layouts;
//! * the raw decoder's stride `((width * bits + 31) >> 3) & !3`, bottom-up unless top-down,
//!   refused when a row of the unpacker's layout does not fit the stride, truncated when the
//!   data ends before the last row;
//! * RLE8/RLE4 decoded like `BmpRleDecoder`, and "not enough image data" when it stops short.

use super::{alloc_rgb, check_limit, decode_error, DecodeLimits, RgbImage};
use crate::Result;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Raw {
    P1,
    P4,
    P8,
    One,
    L,
    Bgr15,
    Bgr16,
    Bgr,
    Bgrx,
    Xbgr,
    Bgxr,
    Abgr,
    Rgba,
    Bgra,
    Bgar,
}

impl Raw {
    /// Bits per pixel of Pillow's unpacker for this raw mode.
    fn bits(self) -> u64 {
        match self {
            Raw::P1 | Raw::One => 1,
            Raw::P4 => 4,
            Raw::P8 | Raw::L => 8,
            Raw::Bgr15 | Raw::Bgr16 => 16,
            Raw::Bgr => 24,
            _ => 32,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    P,
    One,
    L,
    Rgb,
}

fn u16_at(b: &[u8], at: usize) -> u64 {
    u16::from_le_bytes([b[at], b[at + 1]]) as u64
}

fn u32_at(b: &[u8], at: usize) -> u64 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as u64
}

pub(super) fn decode(bytes: &[u8], source_name: &str, limits: &DecodeLimits) -> Result<RgbImage> {
    let err = |reason: &str| decode_error(source_name, reason.to_string());
    if bytes.len() < 18 {
        return Err(err("truncated BMP header"));
    }
    let mut offset = u32_at(bytes, 10);
    let header_size = u32_at(bytes, 14);
    let header_end = 14u64 + header_size;
    if !matches!(header_size, 12 | 40 | 52 | 56 | 64 | 108 | 124) {
        if header_end > bytes.len() as u64 {
            return Err(err("truncated BMP header"));
        }
        return Err(decode_error(source_name, format!("unsupported BMP header type ({header_size})")));
    }
    if header_end > bytes.len() as u64 {
        return Err(err("truncated BMP header"));
    }
    let hd = &bytes[18..header_end as usize];
    let mut pos = header_end as usize;
    let (width, height, bits, compression, mut colors, padding, top_down);
    let mut masks = (0u64, 0u64, 0u64, 0u64);
    if header_size == 12 {
        width = u16_at(hd, 0);
        height = u16_at(hd, 2);
        bits = u16_at(hd, 6);
        compression = 0;
        colors = 0u64;
        padding = 3u64;
        top_down = false;
    } else {
        top_down = hd[7] == 0xFF;
        width = u32_at(hd, 0);
        height = if top_down { (1u64 << 32) - u32_at(hd, 4) } else { u32_at(hd, 4) };
        bits = u16_at(hd, 10);
        compression = u32_at(hd, 12);
        colors = u32_at(hd, 28);
        padding = 4;
        if compression == 3 {
            if hd.len() >= 48 {
                masks =
                    (u32_at(hd, 36), u32_at(hd, 40), u32_at(hd, 44), if hd.len() >= 52 { u32_at(hd, 48) } else { 0 });
            } else {
                if pos + 12 > bytes.len() {
                    return Err(err("truncated BMP bit fields"));
                }
                masks = (u32_at(bytes, pos), u32_at(bytes, pos + 4), u32_at(bytes, pos + 8), 0);
                pos += 12;
            }
        }
    }
    if colors == 0 {
        colors = if bits >= 64 { u64::MAX } else { 1u64 << bits };
    }
    if offset == header_end && bits <= 8 {
        offset += padding * colors;
    }
    let (mut mode, mut raw) = match bits {
        1 => (Mode::P, Raw::P1),
        4 => (Mode::P, Raw::P4),
        8 => (Mode::P, Raw::P8),
        16 => (Mode::Rgb, Raw::Bgr15),
        24 => (Mode::Rgb, Raw::Bgr),
        32 => (Mode::Rgb, Raw::Bgrx),
        _ => return Err(decode_error(source_name, format!("unsupported BMP pixel depth ({bits})"))),
    };
    let mut rle = false;
    match compression {
        0 => {}
        1 | 2 => rle = true,
        3 => {
            let (r, g, b, a) = masks;
            raw = match (bits, (r, g, b, a)) {
                (32, (0xFF0000, 0xFF00, 0xFF, 0)) => Raw::Bgrx,
                (32, (0xFF000000, 0xFF0000, 0xFF00, 0)) => Raw::Xbgr,
                (32, (0xFF000000, 0xFF00, 0xFF, 0)) => Raw::Bgxr,
                (32, (0xFF000000, 0xFF0000, 0xFF00, 0xFF)) => Raw::Abgr,
                (32, (0xFF, 0xFF00, 0xFF0000, 0xFF000000)) => Raw::Rgba,
                (32, (0xFF0000, 0xFF00, 0xFF, 0xFF000000)) => Raw::Bgra,
                (32, (0xFF000000, 0xFF00, 0xFF, 0xFF0000)) => Raw::Bgar,
                (32, (0, 0, 0, 0)) => Raw::Bgra,
                (24, (0xFF0000, 0xFF00, 0xFF, _)) => Raw::Bgr,
                (16, (0xF800, 0x7E0, 0x1F, _)) => Raw::Bgr16,
                (16, (0x7C00, 0x3E0, 0x1F, _)) => Raw::Bgr15,
                _ => return Err(err("unsupported BMP bitfields layout")),
            };
        }
        other => return Err(decode_error(source_name, format!("unsupported BMP compression ({other})"))),
    }
    let mut palette: &[u8] = &[];
    if mode == Mode::P {
        if !(1..=65536).contains(&colors) {
            return Err(decode_error(source_name, format!("unsupported BMP palette size ({colors})")));
        }
        let len = ((padding * colors) as usize).min(bytes.len().saturating_sub(pos));
        palette = &bytes[pos..pos + len];
        pos += len;
        let pad = padding as usize;
        let grey = (0..colors as usize).all(|ind| {
            let val = if colors == 2 { [0u8, 255][ind] } else { ind as u8 };
            palette.get(ind * pad..ind * pad + 3) == Some(&[val, val, val][..])
        });
        if grey {
            if colors <= 2 {
                (mode, raw) = (Mode::One, Raw::One);
            } else {
                (mode, raw) = (Mode::L, Raw::L);
            }
        }
    }
    check_limit(source_name, width, height, limits)?;
    // putpalette (at load time, after Image.open's size check) refuses more than 256
    // entries: "invalid palette size".
    if mode == Mode::P && palette.len() / padding as usize > 256 {
        return Err(err("invalid palette size"));
    }
    let start = if offset == 0 { pos as u64 } else { offset };
    let (w, h) = (width as usize, height as usize);
    let table = palette_table(palette, padding as usize);
    let put_index = |out: &mut [u8], v: u8| match mode {
        Mode::P => out.copy_from_slice(&table[v as usize]),
        Mode::One => out.fill(if v != 0 { 255 } else { 0 }),
        _ => out.fill(v),
    };
    if rle {
        if matches!(mode, Mode::Rgb) {
            return Err(err("cannot decode RLE data of a true-colour BMP"));
        }
        let data = rle_decode(bytes, start as usize, w, h, compression == 2);
        if data.len() < w * h {
            return Err(err("not enough image data"));
        }
        let mut rgb = alloc_rgb(source_name, width as u32, height as u32)?;
        for (y, row) in data.chunks_exact(w).take(h).enumerate() {
            let ty = if top_down { y } else { h - 1 - y };
            for (x, &v) in row.iter().enumerate() {
                put_index(&mut rgb[(ty * w + x) * 3..(ty * w + x) * 3 + 3], v);
            }
        }
        return Ok(RgbImage { width: width as u32, height: height as u32, data: rgb });
    }
    let stride = ((width * bits + 31) >> 3) & !3;
    let line = (width * raw.bits()).div_ceil(8);
    if stride < line {
        return Err(err("BMP rows are shorter than their pixels (decoder configuration error)"));
    }
    let needed = (height - 1) as u128 * stride as u128 + line as u128;
    if (start as u128) + needed > bytes.len() as u128 {
        return Err(err("image file is truncated"));
    }
    let (stride, line) = (stride as usize, line as usize);
    let mut rgb = alloc_rgb(source_name, width as u32, height as u32)?;
    for y in 0..h {
        let src = &bytes[start as usize + y * stride..start as usize + y * stride + line];
        let ty = if top_down { y } else { h - 1 - y };
        let out = &mut rgb[ty * w * 3..(ty + 1) * w * 3];
        match raw {
            Raw::P1 | Raw::One => {
                for (x, o) in out.chunks_exact_mut(3).enumerate() {
                    let bit = (src[x / 8] >> (7 - x % 8)) & 1;
                    put_index(o, if raw == Raw::One { bit * 255 } else { bit });
                }
            }
            Raw::P4 => {
                for (x, o) in out.chunks_exact_mut(3).enumerate() {
                    put_index(o, (src[x / 2] >> if x.is_multiple_of(2) { 4 } else { 0 }) & 15);
                }
            }
            Raw::P8 | Raw::L => {
                for (o, &v) in out.chunks_exact_mut(3).zip(src) {
                    put_index(o, v);
                }
            }
            Raw::Bgr15 | Raw::Bgr16 => {
                for (o, p) in out.chunks_exact_mut(3).zip(src.chunks_exact(2)) {
                    let v = u16::from_le_bytes([p[0], p[1]]) as u32;
                    let (r, g) = if raw == Raw::Bgr15 {
                        (((v >> 10) & 31) * 255 / 31, ((v >> 5) & 31) * 255 / 31)
                    } else {
                        (((v >> 11) & 31) * 255 / 31, ((v >> 5) & 63) * 255 / 63)
                    };
                    o.copy_from_slice(&[r as u8, g as u8, ((v & 31) * 255 / 31) as u8]);
                }
            }
            Raw::Bgr => {
                for (o, p) in out.chunks_exact_mut(3).zip(src.chunks_exact(3)) {
                    o.copy_from_slice(&[p[2], p[1], p[0]]);
                }
            }
            _ => {
                // (R, G, B) byte positions of each 32-bit layout (Unpack.c).
                let (r, g, b) = match raw {
                    Raw::Bgrx | Raw::Bgra => (2, 1, 0),
                    Raw::Xbgr | Raw::Abgr => (3, 2, 1),
                    Raw::Bgxr | Raw::Bgar => (3, 1, 0),
                    _ => (0, 1, 2), // RGBA
                };
                for (o, p) in out.chunks_exact_mut(3).zip(src.chunks_exact(4)) {
                    o.copy_from_slice(&[p[r], p[g], p[b]]);
                }
            }
        }
    }
    Ok(RgbImage { width: width as u32, height: height as u32, data: rgb })
}

/// The palette as Pillow loads it: `padding`-byte BGR(X) entries, at most 256, unset
/// entries black.
fn palette_table(palette: &[u8], padding: usize) -> [[u8; 3]; 256] {
    let mut table = [[0u8; 3]; 256];
    for (entry, bgr) in table.iter_mut().zip(palette.chunks_exact(padding)) {
        *entry = [bgr[2], bgr[1], bgr[0]];
    }
    table
}

/// `BmpRleDecoder.decode`: at most `w * h` indices (fewer when the data stops short).
fn rle_decode(src: &[u8], start: usize, w: usize, h: usize, rle4: bool) -> Vec<u8> {
    let dest = w * h;
    let mut data: Vec<u8> = Vec::new();
    let mut x = 0usize;
    let mut p = start;
    while data.len() < dest {
        if p + 2 > src.len() {
            break;
        }
        let (count, byte) = (src[p] as usize, src[p + 1]);
        p += 2;
        if count != 0 {
            let n = if x + count > w { w.saturating_sub(x) } else { count };
            if rle4 {
                let (a, b) = (byte >> 4, byte & 15);
                data.extend((0..n).map(|i| if i.is_multiple_of(2) { a } else { b }));
            } else {
                data.extend(std::iter::repeat_n(byte, n));
            }
            x += n;
        } else if byte == 0 {
            while !data.len().is_multiple_of(w) {
                data.push(0);
            }
            x = 0;
        } else if byte == 1 {
            break;
        } else if byte == 2 {
            if p + 2 > src.len() {
                break;
            }
            let (right, up) = (src[p] as usize, src[p + 1] as usize);
            p += 2;
            let n = (dest - data.len()).min(right + up * w);
            data.resize(data.len() + n, 0);
            x = data.len() % w;
        } else {
            let count = (dest - data.len()).min(byte as usize);
            let (byte_count, read);
            if rle4 {
                byte_count = count.div_ceil(2);
                read = src.get(p..(p + byte_count).min(src.len())).unwrap_or(&[]);
                for (i, &v) in read.iter().enumerate() {
                    data.push(v >> 4);
                    if i * 2 + 1 < count {
                        data.push(v & 15);
                    }
                }
            } else {
                byte_count = count;
                read = src.get(p..(p + byte_count).min(src.len())).unwrap_or(&[]);
                data.extend_from_slice(read);
            }
            p += read.len();
            if read.len() < byte_count || data.len() == dest {
                break;
            }
            x += byte as usize;
            // Pillow aligns the file position (not the offset in the pixel data) to 16 bits.
            if !p.is_multiple_of(2) {
                p += 1;
            }
        }
    }
    data
}
