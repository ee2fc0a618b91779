//! Pillow's unpackers (`libImaging/Unpack.c`) for the raw modes `_setup` picks, and
//! TiffDecode.c's 16-bit planar ones: raw samples to pixels of Pillow's image mode.

use super::ifd::read_uint;
use super::Mode;

const fn bitflip(v: u8) -> u8 {
    v.reverse_bits()
}

/// Bits per pixel of a raw mode's unpacker for `mode`, or None when Pillow has none.
pub(super) fn unpacker_bits(mode: Mode, raw: &str) -> Option<usize> {
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

pub(super) fn unpremultiply(r: u8, g: u8, b: u8, a: u8) -> [u8; 4] {
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
pub(super) fn unpack(mode: Mode, raw: &str, out: &mut [u8], src: &[u8], n: usize) {
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
pub(super) fn unpack_band16(out: &mut [u8], src: &[u8], band: usize, n: usize) {
    for i in 0..n {
        out[4 * i + band] = src[2 * i + 1];
    }
}
