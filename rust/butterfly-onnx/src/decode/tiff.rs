//! TIFF is decoded by the `tiff` crate (raw samples, converted here with Pillow's rules), which is not libtiff (what Pillow
//! uses for compressed TIFF) and differs from it on layouts it interprets in its own way. So
//! the first IFD is read here first, and only the layouts checked against Pillow are let
//! through; every other TIFF is refused with an ImageDecodeError, never decoded differently:
//!
//! * strips (no tiles), planar configuration 1, fill order 1, orientation 1, unsigned
//!   integer samples, no predictor;
//! * compression none, LZW, Deflate (8 / 32946) or PackBits (not JPEG, not CCITT fax);
//! * grey (BlackIsZero) 8 or 16 bits; RGB 8 or 16 bits with at most one extra sample;
//!   CMYK 8 bits (InkSet CMYK);
//! * every tag of those with its standard type, strip offsets and byte counts of one count
//!   per strip, each strip inside the file, uncompressed strips exactly one strip long.

const SHORT: u16 = 3;
const LONG: u16 = 4;

struct Ifd<'a> {
    b: &'a [u8],
    little: bool,
    entries: Vec<(u16, u16, u64, usize)>, // tag, type, count, offset of the value field
}

impl<'a> Ifd<'a> {
    fn u16(&self, at: usize) -> Option<u64> {
        let s = self.b.get(at..at + 2)?;
        Some(if self.little { u16::from_le_bytes([s[0], s[1]]) } else { u16::from_be_bytes([s[0], s[1]]) } as u64)
    }
    fn u32(&self, at: usize) -> Option<u64> {
        let s = self.b.get(at..at + 4)?;
        let a = [s[0], s[1], s[2], s[3]];
        Some(if self.little { u32::from_le_bytes(a) } else { u32::from_be_bytes(a) } as u64)
    }
    /// All values of an integer tag (SHORT or LONG), or None when absent; Err when malformed.
    fn values(&self, tag: u16) -> std::result::Result<Option<Vec<u64>>, &'static str> {
        let found: Vec<_> = self.entries.iter().filter(|e| e.0 == tag).collect();
        let Some(&&(_, typ, count, field)) = found.first() else { return Ok(None) };
        if found.len() > 1 {
            return Err("repeated TIFF tag");
        }
        // Pillow reads any integer type (BYTE, SHORT, LONG and their signed forms).
        let size = match typ {
            1 | 6 => 1,
            SHORT | 8 => 2,
            LONG | 9 => 4,
            _ => return Err("TIFF tag of an unexpected type"),
        };
        if count == 0 || count > 1 << 20 {
            return Err("TIFF tag of an unexpected count");
        }
        let total = size * count as usize;
        let start = if total <= 4 { field } else { self.u32(field).ok_or("truncated TIFF")? as usize };
        let mut out = Vec::with_capacity(count as usize);
        for i in 0..count as usize {
            let at = start.checked_add(i * size).ok_or("bad TIFF offset")?;
            let v = match size {
                1 => self.b.get(at).map(|&v| v as u64),
                2 => self.u16(at),
                _ => self.u32(at),
            }
            .ok_or("TIFF tag value outside the file")?;
            let negative = match typ {
                6 => v >= 0x80,
                8 => v >= 0x8000,
                9 => v >= 0x8000_0000,
                _ => false,
            };
            if negative {
                return Err("TIFF tag with a negative value");
            }
            out.push(v);
        }
        Ok(Some(out))
    }
    fn one(&self, tag: u16, default: Option<u64>) -> std::result::Result<u64, &'static str> {
        match self.values(tag)? {
            Some(v) if v.len() == 1 => Ok(v[0]),
            Some(_) => Err("TIFF tag with several values"),
            None => default.ok_or("required TIFF tag missing"),
        }
    }
}

/// The size in the first IFD (when readable: checked against the pixel limit first, as
/// Pillow does on opening) and Ok(()) when the image crate's decoding is known to be Pillow's.
pub(super) fn check_supported(b: &[u8]) -> (Option<(u64, u64)>, Verdict) {
    let mut size = None;
    let verdict = check(b, &mut size);
    (size, verdict)
}

/// Ok(Some(layout)) for an uncompressed TIFF, Ok(None) for a supported compressed one.
pub(super) type Verdict = std::result::Result<Option<RawLayout>, &'static str>;

/// An uncompressed TIFF, which Pillow reads itself (not through libtiff): one raw tile per
/// strip offset, byte counts ignored.
pub(super) struct RawLayout {
    width: u64,
    height: u64,
    rows_per_strip: u64,
    offsets: Vec<u64>,
    little: bool,
    photometric: u64,
    spp: u64,
    bits: u64,
}

fn check(b: &[u8], size: &mut Option<(u64, u64)>) -> Verdict {
    if b.len() < 8 {
        return Err("truncated TIFF header");
    }
    let little = match &b[..4] {
        b"II*\0" => true,
        b"MM\0*" => false,
        _ => return Err("unsupported TIFF variant (BigTIFF?)"),
    };
    let mut ifd = Ifd { b, little, entries: Vec::new() };
    let start = ifd.u32(4).unwrap() as usize;
    let n = ifd.u16(start).ok_or("TIFF directory outside the file")? as usize;
    for i in 0..n {
        let at = start + 2 + 12 * i;
        let (Some(tag), Some(typ), Some(count)) = (ifd.u16(at), ifd.u16(at + 2), ifd.u32(at + 4)) else {
            return Err("truncated TIFF directory");
        };
        if at + 12 > b.len() {
            return Err("truncated TIFF directory");
        }
        ifd.entries.push((tag as u16, typ as u16, count, at + 8));
    }
    let width = ifd.one(256, None)?;
    let height = ifd.one(257, None)?;
    *size = Some((width, height));
    let spp = ifd.one(277, Some(1))?;
    let bps = ifd.values(258)?.unwrap_or_else(|| vec![1]);
    if bps.iter().any(|&v| v != bps[0]) || (bps.len() != 1 && bps.len() as u64 != spp) {
        return Err("TIFF with mixed bits per sample");
    }
    let bits = bps[0];
    let compression = ifd.one(259, Some(1))?;
    let photometric = ifd.one(262, None)?;
    let planar = ifd.one(284, Some(1))?;
    let fill = ifd.one(266, Some(1))?;
    let orientation = ifd.one(274, Some(1))?;
    let predictor = ifd.one(317, Some(1))?;
    let sample_format = ifd.values(339)?.unwrap_or_else(|| vec![1]);
    let extra = ifd.values(338)?.unwrap_or_default();
    let ink_set = ifd.one(332, Some(1))?;
    if ifd.entries.iter().any(|e| matches!(e.0, 322 | 323 | 324 | 325 | 330 | 347)) {
        return Err("tiled TIFF, SubIFDs or JPEG tables are not supported");
    }
    if !matches!(compression, 1 | 5 | 8 | 32946 | 32773) {
        return Err("TIFF compression other than none, LZW, Deflate or PackBits is not supported");
    }
    if planar != 1 || fill != 1 || orientation != 1 || predictor != 1 || sample_format.iter().any(|&f| f != 1) {
        return Err(
            "TIFF layout not supported (planar configuration, fill order, orientation, predictor or sample format)",
        );
    }
    let ok = match photometric {
        1 => spp == 1 && matches!(bits, 8 | 16) && extra.is_empty(),
        // Associated alpha (ExtraSamples 1) is un-premultiplied by Pillow ("RGBa"): refused.
        2 => matches!(bits, 8 | 16) && (spp == 3 && extra.is_empty() || spp == 4 && extra.len() == 1 && extra[0] != 1),
        5 => spp == 4 && bits == 8 && ink_set == 1 && extra.is_empty(),
        _ => false,
    };
    if !ok {
        return Err("TIFF colour layout not supported");
    }
    if width == 0 || height == 0 {
        return Err("TIFF of size zero");
    }
    if compression == 1 {
        let rows_per_strip = ifd.one(278, Some(height))?;
        let offsets = ifd.values(273)?.ok_or("TIFF without strip offsets")?;
        if rows_per_strip == 0 {
            return Err("TIFF with zero rows per strip");
        }
        return Ok(Some(RawLayout { width, height, rows_per_strip, offsets, little, photometric, spp, bits }));
    }
    let rows_per_strip = ifd.one(278, Some(u32::MAX as u64))?.min(height.max(1));
    if rows_per_strip == 0 {
        return Err("TIFF of size zero");
    }
    let strips = height.div_ceil(rows_per_strip);
    let offsets = ifd.values(273)?.ok_or("TIFF without strip offsets")?;
    let counts = ifd.values(279)?.ok_or("TIFF without strip byte counts")?;
    if offsets.len() as u64 != strips || counts.len() as u64 != strips {
        return Err("TIFF strip tables do not match the image height");
    }
    for (&o, &c) in offsets.iter().zip(&counts) {
        if o.checked_add(c).is_none_or(|e| e > b.len() as u64) || c == 0 {
            return Err("TIFF strip outside the file");
        }
    }
    Ok(None)
}

/// Pillow's raw TIFF path: tiles `(0, y, w, min(y + rows_per_strip, h))` per strip offset
/// (wrapping to the top past the last row; one tile at the last offset when a strip covers
/// the image), sorted by offset, consecutive equal tiles reduced to the last, each decoded
/// by the raw decoder from its offset ("image file is truncated" when the file ends first).
pub(super) fn decode_raw(b: &[u8], l: &RawLayout, source_name: &str) -> crate::Result<super::RgbImage> {
    let w = l.width as usize;
    let mut offsets = l.offsets.clone();
    if l.rows_per_strip == l.height {
        offsets = vec![*offsets.last().unwrap()];
    }
    let mut tiles = Vec::new();
    let mut y = 0u64;
    for &offset in &offsets {
        tiles.push((offset, y, (y + l.rows_per_strip).min(l.height)));
        y += l.rows_per_strip;
        if y >= l.height {
            y = 0;
        }
    }
    tiles.sort_by_key(|t| t.0); // stable, like Python's sort
    let mut kept: Vec<(u64, u64, u64)> = Vec::new();
    for t in tiles {
        match kept.last_mut() {
            Some(last) if (last.1, last.2) == (t.1, t.2) => *last = t,
            _ => kept.push(t),
        }
    }
    let pixel_bytes = (l.spp * l.bits / 8) as usize;
    let line = w * pixel_bytes;
    let mut rgb = super::alloc_rgb(source_name, l.width as u32, l.height as u32)?;
    if l.photometric == 5 {
        rgb.fill(255); // rows no tile covers stay zero in "CMYK": white in RGB
    }
    for (offset, y0, y1) in kept {
        let rows = (y1 - y0) as usize;
        let need = rows * line;
        let start = offset as usize;
        if offset > b.len() as u64 || b.len() - start < need {
            return Err(super::decode_error(source_name, "image file is truncated"));
        }
        let src = &b[start..start + need];
        let out = &mut rgb[y0 as usize * w * 3..(y0 as usize + rows) * w * 3];
        let hi = |p: &[u8], i: usize| if l.little { p[2 * i + 1] } else { p[2 * i] };
        for (o, p) in out.chunks_exact_mut(3).zip(src.chunks_exact(pixel_bytes)) {
            match (l.photometric, l.bits) {
                (1, 8) => o.fill(p[0]),
                (1, _) => {
                    let v = if l.little { u16::from_le_bytes([p[0], p[1]]) } else { u16::from_be_bytes([p[0], p[1]]) };
                    o.fill(v.min(255) as u8);
                }
                (2, 8) => o.copy_from_slice(&p[..3]),
                (2, _) => o.copy_from_slice(&[hi(p, 0), hi(p, 1), hi(p, 2)]),
                _ => o.copy_from_slice(&super::cmyk_to_rgb(p[0], p[1], p[2], p[3])),
            }
        }
    }
    Ok(super::RgbImage { width: l.width as u32, height: l.height as u32, data: rgb })
}

/// Decode a TIFF that [`check_supported`] accepted: raw samples from the `tiff` crate,
/// converted as Pillow's `convert("RGB")` does (16-bit grey clipped, 16-bit RGB(A) high byte,
/// alpha dropped, CMYK through `cmyk2rgb`).
pub(super) fn decode(b: &[u8], source_name: &str) -> crate::Result<super::RgbImage> {
    use ::tiff::decoder::{Decoder, DecodingResult, Limits};
    use ::tiff::ColorType;
    let err = |e: ::tiff::TiffError| super::decode_error(source_name, format!("broken TIFF data: {e}"));
    let mut dec = Decoder::new(std::io::Cursor::new(b)).map_err(err)?.with_limits(Limits::unlimited());
    let (width, height) = dec.dimensions().map_err(err)?;
    let color = dec.colortype().map_err(err)?;
    let pixels = width as usize * height as usize;
    let image = dec.read_image().map_err(err)?;
    let mut rgb = super::alloc_rgb(source_name, width, height)?;
    let short = || super::decode_error(source_name, "TIFF data shorter than the image");
    match (color, image) {
        (ColorType::Gray(8), DecodingResult::U8(v)) => {
            for (o, &g) in rgb.chunks_exact_mut(3).zip(v.get(..pixels).ok_or_else(short)?) {
                o.fill(g);
            }
        }
        (ColorType::Gray(16), DecodingResult::U16(v)) => {
            for (o, &g) in rgb.chunks_exact_mut(3).zip(v.get(..pixels).ok_or_else(short)?) {
                o.fill(g.min(255) as u8);
            }
        }
        (ColorType::RGB(8), DecodingResult::U8(v)) => rgb.copy_from_slice(v.get(..pixels * 3).ok_or_else(short)?),
        (ColorType::RGB(16), DecodingResult::U16(v)) => {
            for (o, &x) in rgb.iter_mut().zip(v.get(..pixels * 3).ok_or_else(short)?) {
                *o = (x >> 8) as u8;
            }
        }
        (ColorType::RGBA(8), DecodingResult::U8(v)) => {
            for (o, p) in rgb.chunks_exact_mut(3).zip(v.get(..pixels * 4).ok_or_else(short)?.chunks_exact(4)) {
                o.copy_from_slice(&p[..3]);
            }
        }
        (ColorType::RGBA(16), DecodingResult::U16(v)) => {
            for (o, p) in rgb.chunks_exact_mut(3).zip(v.get(..pixels * 4).ok_or_else(short)?.chunks_exact(4)) {
                o.copy_from_slice(&[(p[0] >> 8) as u8, (p[1] >> 8) as u8, (p[2] >> 8) as u8]);
            }
        }
        (ColorType::CMYK(8), DecodingResult::U8(v)) => {
            for (o, p) in rgb.chunks_exact_mut(3).zip(v.get(..pixels * 4).ok_or_else(short)?.chunks_exact(4)) {
                o.copy_from_slice(&super::cmyk_to_rgb(p[0], p[1], p[2], p[3]));
            }
        }
        (other, _) => {
            return Err(super::decode_error(source_name, format!("unsupported TIFF layout {other:?}")));
        }
    }
    Ok(super::RgbImage { width, height, data: rgb })
}
