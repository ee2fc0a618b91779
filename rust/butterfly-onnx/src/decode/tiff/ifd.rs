//! The first IFD, as Pillow's `TiffImagePlugin.ImageFileDirectory_v2.load` reads it: each
//! tag's value reduced to what `_setup` (setup.rs) asks of it, with Python's equalities
//! (an integral rational equals an int, bytes iterate as ints).

use super::is_tiff;

/// A tag's value as Pillow's loaders give it, reduced to what the decoder needs.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Value {
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

pub(super) struct Ifd {
    pub(super) little: bool,
    pub(super) offset: u64,
    pub(super) tags: Vec<(u16, Value)>,
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

pub(super) fn read_uint(b: &[u8], little: bool) -> u64 {
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

pub(super) fn parse_ifd(b: &[u8]) -> std::result::Result<Ifd, &'static str> {
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
    pub(super) fn get(&self, tag: u16) -> Option<&Value> {
        self.tags.iter().find(|t| t.0 == tag).map(|t| &t.1)
    }
    /// A tag TiffTags declares with one value: Pillow keeps the first of several.
    pub(super) fn single(&self, tag: u16, default: i64) -> std::result::Result<i64, &'static str> {
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
    pub(super) fn single_opt(&self, tag: u16) -> std::result::Result<Option<i64>, &'static str> {
        match self.get(tag) {
            None => Ok(None),
            Some(Value::Ints(v)) => Ok(Some(v[0])),
            Some(_) => Err("TIFF tag of a type not supported here"),
        }
    }
    /// A tag Pillow only iterates (offsets, the colour map): bytes work as their values.
    pub(super) fn iterable(&self, tag: u16) -> std::result::Result<Option<Vec<i64>>, &'static str> {
        match self.get(tag) {
            Some(Value::Bytes(v)) => Ok(Some(v.clone())),
            _ => self.tuple(tag),
        }
    }
    /// Strip or tile offsets: `_setup` only counts them (tiles are made for any values; a value
    /// that is not an int fails in ImageFile.load's seek, after the size check), so values of
    /// any type give that many placeholders here (the caller marks them as a load error).
    pub(super) fn offsets(&self, tag: u16) -> std::result::Result<Option<Vec<i64>>, &'static str> {
        match self.get(tag) {
            Some(Value::Other(n)) => Ok(Some(vec![0; *n])),
            Some(Value::Reals(v)) => Ok(Some(vec![0; v.len()])),
            _ => self.iterable(tag),
        }
    }
    pub(super) fn tuple(&self, tag: u16) -> std::result::Result<Option<Vec<i64>>, &'static str> {
        match self.get(tag) {
            None => Ok(None),
            Some(Value::Ints(v) | Value::Floats(v)) => Ok(Some(v.clone())),
            Some(_) => Err("TIFF tag of a type not supported here"),
        }
    }
}
