//! PNG as Pillow's `PngImagePlugin` opens and loads it, with `ZipDecode.c`'s inflate loop, then
//! `convert("RGB")`. What decides Pillow's verdict, followed here:
//!
//! * `_open` walks chunks up to the first IDAT (or fdAT): every chunk's CRC is checked, chunk
//!   names must be four word characters, the chunk handlers' own checks apply (short
//!   IHDR/tRNS/gAMA/cHRM/sRGB/pHYs/acTL/fcTL chunks, unknown compression methods in iCCP and
//!   zTXt, text chunks decompressing past 1 MiB, APNG sequence numbers). IHDR's compression
//!   byte is not checked; a later IHDR replaces an earlier one; an IDAT before any usable IHDR
//!   is skipped like an unknown chunk;
//! * the image data is the IDAT (and DDAT / fdAT) payloads, CRCs unchecked, fed to zlib in
//!   64 KiB pieces; decoding ends when the last row is filled or when the stream ends exactly
//!   after a row (the remaining rows stay zero); a stream ending inside a row, or data running
//!   out first, is "image file is truncated"; an unknown filter type or a zlib error fails;
//! * after the image, chunks up to IEND are read without CRC checks, their handlers may still
//!   fail (and a truncated chunk does);
//! * modes and conversions: "1" (0/255), "L;2"/"L;4" scaled by 85/17, "I;16" clipped to
//!   255, 16-bit RGB(A) and 16-bit grey+alpha keep the high byte, alpha dropped, palettes
//!   mapped with unset entries black (no PLTE: all black).
//!
//! zlib itself is `zlib-rs` (through flate2), a port of zlib-ng, the zlib Pillow's wheels use,
//! so a damaged stream stops at the same byte with the same verdict.

use flate2::{Decompress, FlushDecompress, Status};

use super::{alloc_rgb, check_limit, decode_error, palette_table, DecodeLimits, RgbImage};
use crate::Result;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Raw {
    One,
    L2,
    L4,
    L,
    I16,
    Rgb,
    Rgb16,
    P1,
    P2,
    P4,
    P,
    La,
    La16,
    Rgba,
    Rgba16,
}

impl Raw {
    fn from_ihdr(depth: u8, color: u8) -> Option<Raw> {
        Some(match (depth, color) {
            (1, 0) => Raw::One,
            (2, 0) => Raw::L2,
            (4, 0) => Raw::L4,
            (8, 0) => Raw::L,
            (16, 0) => Raw::I16,
            (8, 2) => Raw::Rgb,
            (16, 2) => Raw::Rgb16,
            (1, 3) => Raw::P1,
            (2, 3) => Raw::P2,
            (4, 3) => Raw::P4,
            (8, 3) => Raw::P,
            (8, 4) => Raw::La,
            (16, 4) => Raw::La16,
            (8, 6) => Raw::Rgba,
            (16, 6) => Raw::Rgba16,
            _ => return None,
        })
    }
    fn bits(self) -> u64 {
        match self {
            Raw::One | Raw::P1 => 1,
            Raw::L2 | Raw::P2 => 2,
            Raw::L4 | Raw::P4 => 4,
            Raw::L | Raw::P => 8,
            Raw::I16 | Raw::La => 16,
            Raw::Rgb => 24,
            Raw::La16 | Raw::Rgba => 32,
            Raw::Rgb16 => 48,
            Raw::Rgba16 => 64,
        }
    }
    fn paletted(self) -> bool {
        matches!(self, Raw::P1 | Raw::P2 | Raw::P4 | Raw::P)
    }
    /// Pillow's image mode, as far as the chunk handlers care.
    fn mode(self) -> &'static str {
        match self {
            Raw::One => "1",
            Raw::L2 | Raw::L4 | Raw::L => "L",
            Raw::I16 => "I;16",
            Raw::Rgb | Raw::Rgb16 => "RGB",
            Raw::P1 | Raw::P2 | Raw::P4 | Raw::P => "P",
            Raw::La => "LA",
            Raw::La16 | Raw::Rgba | Raw::Rgba16 => "RGBA",
        }
    }
}

fn be32(b: &[u8], at: usize) -> u64 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as u64
}

const MAX_TEXT_CHUNK: usize = 65536;
const MAX_TEXT_MEMORY: u64 = 64 * MAX_TEXT_CHUNK as u64;
const PIECE: usize = 65536;

/// `_safe_zlib_decompress`: Ok(Some(data)), Ok(None) on a zlib error (Pillow ignores it),
/// Err when the data decompresses past MAX_TEXT_CHUNK.
fn safe_zlib_decompress(data: &[u8]) -> std::result::Result<Option<Vec<u8>>, ()> {
    let mut z = Decompress::new(true);
    let mut out = vec![0u8; MAX_TEXT_CHUNK];
    match z.decompress(data, &mut out, FlushDecompress::Sync) {
        Err(_) => Ok(None),
        Ok(_) => {
            let (consumed, produced) = (z.total_in() as usize, z.total_out() as usize);
            if produced == MAX_TEXT_CHUNK && consumed < data.len() {
                // More input left once the limit is reached: Python's unconsumed_tail.
                return Err(());
            }
            out.truncate(produced);
            Ok(Some(out))
        }
    }
}

struct Chunks<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Chunks<'a> {
    /// `ChunkStream.read`: (cid, data position, length); None for a short header or a name
    /// that is not four word characters (struct.error / SyntaxError).
    fn read(&mut self) -> Option<([u8; 4], usize, u64)> {
        if self.pos + 8 > self.b.len() {
            self.pos = self.b.len();
            return None;
        }
        let length = be32(self.b, self.pos);
        let cid: [u8; 4] = self.b[self.pos + 4..self.pos + 8].try_into().unwrap();
        self.pos += 8;
        if !cid.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'_') {
            return None;
        }
        Some((cid, self.pos, length))
    }
    /// `ImageFile._safe_read`: exactly `n` bytes or None.
    fn safe_read(&mut self, n: u64) -> Option<&'a [u8]> {
        if n as u128 > (self.b.len() - self.pos) as u128 {
            self.pos = self.b.len();
            return None;
        }
        let s = &self.b[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Some(s)
    }
    /// `fp.read(n)`: at most `n` bytes.
    fn read_up_to(&mut self, n: u64) -> &'a [u8] {
        let n = (n as u128).min((self.b.len() - self.pos) as u128) as usize;
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        s
    }
}

#[derive(Default)]
struct Stream<'a> {
    size: (u64, u64),
    raw: Option<Raw>,
    interlace: bool,
    palette: Option<&'a [u8]>,
    n_frames: Option<u64>,
    seq_num: Option<u64>,
    bbox: Option<(u64, u64, u64, u64)>,
    default_image: bool,
    text_memory: u64,
    /// The last tRNS chunk read while the mode was "P" made `info["transparency"]` an int.
    p_transparency: bool,
}

enum Handled {
    /// The chunk's data was read (its CRC follows).
    Data,
    /// IDAT / fdAT: image data starts here (tile offset, length of the first piece).
    Image(usize, u64),
    /// IEND.
    End,
}

impl<'a> Stream<'a> {
    fn mode(&self) -> &'static str {
        self.raw.map_or("", Raw::mode)
    }

    fn text(&mut self, chars: usize) -> std::result::Result<(), String> {
        self.text_memory += chars as u64;
        if self.text_memory > MAX_TEXT_MEMORY {
            return Err("too much memory used in text chunks".into());
        }
        Ok(())
    }

    /// `PngStream.call` (plus the AttributeError fallback of unknown chunks).
    fn call(
        &mut self,
        c: &mut Chunks<'a>,
        cid: &[u8; 4],
        pos: usize,
        length: u64,
    ) -> std::result::Result<Handled, String> {
        let truncated = || "truncated PNG chunk".to_string();
        let short = |what: &str| format!("truncated {what} chunk");
        match cid {
            b"IDAT" => {
                if self.raw.is_none() {
                    // self.im_rawmode does not exist yet: AttributeError, read as unknown.
                    c.safe_read(length).ok_or_else(truncated)?;
                    return Ok(Handled::Data);
                }
                if self.bbox.is_none() && self.n_frames.is_some() {
                    self.default_image = true;
                }
                Ok(Handled::Image(pos, length))
            }
            b"IEND" => Ok(Handled::End),
            b"fdAT" => {
                if length < 4 {
                    return Err(short("fdAT"));
                }
                let s = c.safe_read(4).ok_or_else(truncated)?;
                let seq = be32(s, 0);
                if self.seq_num.map(|n| n + 1) != Some(seq) {
                    return Err("APNG contains frame sequence errors".into());
                }
                self.seq_num = Some(seq);
                if self.raw.is_none() {
                    c.safe_read(length).ok_or_else(truncated)?;
                    return Ok(Handled::Data);
                }
                if self.bbox.is_none() && self.n_frames.is_some() {
                    self.default_image = true;
                }
                Ok(Handled::Image(pos + 4, length - 4))
            }
            _ => {
                let s = c.safe_read(length).ok_or_else(truncated)?;
                let need = |n: usize, what: &str| if s.len() < n { Err(short(what)) } else { Ok(()) };
                match cid {
                    b"IHDR" => {
                        need(13, "IHDR")?;
                        self.size = (be32(s, 0), be32(s, 4));
                        if let Some(raw) = Raw::from_ihdr(s[8], s[9]) {
                            self.raw = Some(raw);
                        }
                        if s[12] != 0 {
                            self.interlace = true;
                        }
                        if s[11] != 0 {
                            return Err("unknown filter category".into());
                        }
                    }
                    b"PLTE" if self.mode() == "P" => self.palette = Some(s),
                    b"tRNS" => match self.mode() {
                        // An int `transparency` (which convert("RGB") needs a palette for)
                        // only when the chunk matches `^\xff*\x00\xff*$` (Python's `$`
                        // also matches before one final newline); otherwise bytes.
                        "P" => {
                            let t = s.strip_suffix(b"\n").unwrap_or(s);
                            self.p_transparency =
                                t.iter().filter(|&&v| v == 0).count() == 1 && t.iter().all(|&v| v == 0 || v == 0xFF);
                        }
                        "RGB" => need(6, "tRNS")?,
                        "1" | "L" | "I;16" => need(2, "tRNS")?,
                        _ => {}
                    },
                    b"gAMA" => need(4, "gAMA")?,
                    b"cHRM" => need(32, "cHRM")?,
                    b"sRGB" => need(1, "sRGB")?,
                    b"pHYs" => need(9, "pHYs")?,
                    b"tEXt" => {
                        let (k, v) = match s.iter().position(|&b| b == 0) {
                            Some(i) => (&s[..i], &s[i + 1..]),
                            None => (s, &s[..0]),
                        };
                        if !k.is_empty() {
                            self.text(v.len())?;
                        }
                    }
                    b"zTXt" => {
                        let (k, v) = match s.iter().position(|&b| b == 0) {
                            Some(i) => (&s[..i], &s[i + 1..]),
                            None => (s, &s[..0]),
                        };
                        let method = v.first().copied().unwrap_or(0);
                        if method != 0 {
                            return Err(format!("unknown compression method {method} in zTXt chunk"));
                        }
                        let text = safe_zlib_decompress(v.get(1..).unwrap_or(&[]))
                            .map_err(|_| "decompressed zTXt data too large".to_string())?
                            .unwrap_or_default();
                        if !k.is_empty() {
                            self.text(text.len())?;
                        }
                    }
                    b"iTXt" => {
                        if let Some(i) = s.iter().position(|&b| b == 0) {
                            let r = &s[i + 1..];
                            if r.len() >= 2 {
                                let (cf, cm, r) = (r[0], r[1], &r[2..]);
                                let mut parts = r.splitn(3, |&b| b == 0);
                                if let (Some(lang), Some(tk), Some(v)) = (parts.next(), parts.next(), parts.next()) {
                                    let v: Option<Vec<u8>> = if cf != 0 {
                                        if cm == 0 {
                                            safe_zlib_decompress(v)
                                                .map_err(|_| "decompressed iTXt data too large".to_string())?
                                        } else {
                                            None
                                        }
                                    } else {
                                        Some(v.to_vec())
                                    };
                                    if let Some(v) = v {
                                        if let (Ok(_), Ok(_), Ok(text)) = (
                                            std::str::from_utf8(lang),
                                            std::str::from_utf8(tk),
                                            std::str::from_utf8(&v),
                                        ) {
                                            self.text(text.chars().count())?;
                                        }
                                    }
                                }
                            }
                        }
                    }
                    b"acTL" => {
                        need(8, "acTL")?;
                        if self.n_frames.is_some() {
                            self.n_frames = None;
                        } else {
                            let n = be32(s, 0);
                            if n != 0 && n <= 0x8000_0000 {
                                self.n_frames = Some(n);
                            }
                        }
                    }
                    b"fcTL" => {
                        need(26, "fcTL")?;
                        let seq = be32(s, 0);
                        let ok = match self.seq_num {
                            None => seq == 0,
                            Some(n) => n + 1 == seq,
                        };
                        if !ok {
                            return Err("APNG contains frame sequence errors".into());
                        }
                        self.seq_num = Some(seq);
                        let (w, h, px, py) = (be32(s, 4), be32(s, 8), be32(s, 12), be32(s, 16));
                        if px + w > self.size.0 || py + h > self.size.1 {
                            return Err("APNG contains invalid frames".into());
                        }
                        self.bbox = Some((px, py, px + w, py + h));
                    }
                    b"iCCP" => {
                        // i = s.find(b"\0"), Python indexing with i = -1 when absent.
                        let start = s.iter().position(|&b| b == 0).map_or(0, |i| i + 1);
                        let method = *s.get(start).ok_or_else(|| "broken iCCP chunk".to_string())?;
                        if method != 0 {
                            return Err(format!("unknown compression method {method} in iCCP chunk"));
                        }
                        safe_zlib_decompress(s.get(start + 1..).unwrap_or(&[]))
                            .map_err(|_| "decompressed iCCP data too large".to_string())?;
                    }
                    _ => {}
                }
                Ok(Handled::Data)
            }
        }
    }
}

pub(super) fn decode(bytes: &[u8], source_name: &str, limits: &DecodeLimits) -> Result<RgbImage> {
    let err = |reason: String| decode_error(source_name, reason);
    let mut c = Chunks { b: bytes, pos: 8 };
    let mut st = Stream::default();
    // _open
    let tile = loop {
        let (cid, pos, length) = c.read().ok_or_else(|| err("broken PNG file (chunk header)".into()))?;
        match st.call(&mut c, &cid, pos, length).map_err(err)? {
            Handled::Image(at, len) => break Some((at, len)),
            Handled::End => break None,
            Handled::Data => {
                let data = &bytes[pos.min(bytes.len())..c.pos];
                let crc = c.safe_read(4).ok_or_else(|| err("broken PNG file (incomplete checksum)".into()))?;
                let mut h = crc32fast::Hasher::new();
                h.update(&cid);
                h.update(data);
                if h.finalize() as u64 != be32(crc, 0) {
                    return Err(err(format!(
                        "broken PNG file (bad header checksum in {})",
                        String::from_utf8_lossy(&cid)
                    )));
                }
            }
        }
    };
    let raw = st.raw.ok_or_else(|| err("unsupported PNG bit depth / colour type".into()))?;
    let (width, height) = st.size;
    check_limit(source_name, width, height, limits)?;
    // IEND before any image data: opened, then "cannot load this image" (after the size check).
    let (tile_pos, first_len) = tile.ok_or_else(|| err("PNG file without image data".into()))?;
    let n_frames = st.n_frames.unwrap_or(1) + st.default_image as u64;
    let animated = n_frames > 1;
    let (x0, y0, x1, y1) = st.bbox.unwrap_or((0, 0, width, height));
    let (xsize, ysize) = (x1.saturating_sub(x0), y1.saturating_sub(y0));
    if xsize == 0 || ysize == 0 || x1 > width || y1 > height {
        return Err(err("tile cannot extend outside image".into()));
    }
    let bits = raw.bits();
    let row_bytes = (xsize * bits).div_ceil(8);
    if row_bytes > i32::MAX as u64 - 1 {
        return Err(err("PNG rows too long".into()));
    }
    let had_palette = st.palette.is_some(); // a PLTE after the image data is not used
    if st.palette.is_some_and(|p| p.len() / 3 > 256) {
        return Err(err("invalid palette size (more than 256 entries)".into()));
    }
    let table = palette_table(st.palette.unwrap_or(&[]));
    let zero = if raw.paletted() { table[0] } else { [0, 0, 0] };
    let mut rgb = alloc_rgb(source_name, width as u32, height as u32)?;
    if zero != [0, 0, 0] {
        for px in rgb.chunks_exact_mut(3) {
            px.copy_from_slice(&zero);
        }
    }
    let mut zip = ZipDecoder::new(raw, &table, row_bytes as usize, xsize as usize, ysize as usize, st.interlace);
    // load_read: pieces of at most 64 KiB of the IDAT payloads.
    c.pos = tile_pos.min(bytes.len());
    let mut idat = first_len;
    let w = width as usize;
    let place = (x0 as usize, y0 as usize);
    loop {
        while idat == 0 {
            c.read_up_to(4);
            let Some((cid, pos, length)) = c.read() else {
                return Err(err("image file is truncated".into()));
            };
            match &cid {
                b"IDAT" | b"DDAT" => idat = length,
                b"fdAT" => {
                    match st.call(&mut c, &cid, pos, length).map_err(err)? {
                        Handled::Image(..) | Handled::Data | Handled::End => {}
                    }
                    idat = length - 4;
                }
                _ => return Err(err("image file is truncated".into())),
            }
        }
        let n = idat.min(PIECE as u64);
        idat -= n;
        let piece = c.read_up_to(n);
        if piece.is_empty() {
            return Err(err("image file is truncated".into()));
        }
        if zip.decode(piece, &mut rgb, w, place).map_err(err)? {
            break;
        }
    }
    // load_end
    c.read_up_to(idat);
    loop {
        c.read_up_to(4);
        let Some((cid, pos, length)) = c.read() else { break };
        if &cid == b"IEND" {
            break;
        }
        if &cid == b"fcTL" && animated {
            break;
        }
        match st.call(&mut c, &cid, pos, length).map_err(err)? {
            Handled::Data | Handled::End => {}
            Handled::Image(at, len) => {
                c.pos = at.min(bytes.len());
                c.safe_read(len).ok_or_else(|| err("truncated PNG chunk after the image".into()))?;
            }
        }
    }
    if raw.paletted() && !had_palette && st.p_transparency {
        // convert("RGB") of a "P" image with transparency and no palette fails in Pillow.
        return Err(err("palette image with transparency but without a palette".into()));
    }
    Ok(RgbImage { width: width as u32, height: height as u32, data: rgb })
}

const OFFSET: [usize; 7] = [7, 3, 3, 1, 1, 0, 0];
const STARTING_COL: [usize; 7] = [0, 4, 0, 2, 0, 1, 0];
const STARTING_ROW: [usize; 7] = [0, 0, 4, 0, 2, 0, 1];
const COL_INCREMENT: [usize; 7] = [8, 8, 4, 4, 2, 2, 1];
const ROW_INCREMENT: [usize; 7] = [8, 8, 8, 4, 4, 2, 2];

/// `ImagingZipDecode` in PNG mode, writing RGB through Pillow's unpackers.
struct ZipDecoder<'t> {
    raw: Raw,
    table: &'t [[u8; 3]; 256],
    z: Decompress,
    bytes: usize,
    xsize: usize,
    ysize: usize,
    interlaced: bool,
    pass: usize,
    y: usize,
    buffer: Vec<u8>,
    previous: Vec<u8>,
    last_output: usize,
}

impl<'t> ZipDecoder<'t> {
    fn new(raw: Raw, table: &'t [[u8; 3]; 256], bytes: usize, xsize: usize, ysize: usize, interlaced: bool) -> Self {
        ZipDecoder {
            raw,
            table,
            z: Decompress::new(true),
            bytes,
            xsize,
            ysize,
            interlaced,
            pass: 0,
            y: if interlaced { STARTING_ROW[0] } else { 0 },
            buffer: vec![0; bytes + 1],
            previous: vec![0; bytes + 1],
            last_output: 0,
        }
    }

    fn row_len(&self) -> usize {
        if self.interlaced {
            let n = (self.xsize + OFFSET[self.pass]) / COL_INCREMENT[self.pass];
            (n * self.raw.bits() as usize).div_ceil(8)
        } else {
            self.bytes
        }
    }

    /// One piece of data; Ok(true) when the image is complete.
    fn decode(
        &mut self,
        piece: &[u8],
        rgb: &mut [u8],
        width: usize,
        (xoff, yoff): (usize, usize),
    ) -> std::result::Result<bool, String> {
        let mut row_len = self.row_len();
        let mut input = piece;
        while !input.is_empty() {
            let (in0, out0) = (self.z.total_in(), self.z.total_out());
            let want = row_len + 1;
            let status = self
                .z
                .decompress(input, &mut self.buffer[self.last_output..want], FlushDecompress::None)
                .map_err(|e| format!("broken data stream when reading image file ({e})"))?;
            if status == Status::BufError {
                return Err("decoder error (zlib buffer error)".into());
            }
            input = &input[(self.z.total_in() - in0) as usize..];
            let n = self.last_output + (self.z.total_out() - out0) as usize;
            if n < want {
                self.last_output = n;
                break;
            }
            let bpp = (self.raw.bits() as usize).div_ceil(8);
            let (buf, prev) = (&mut self.buffer, &self.previous);
            match buf[0] {
                0 => {}
                1 => {
                    for i in bpp + 1..=row_len {
                        buf[i] = buf[i].wrapping_add(buf[i - bpp]);
                    }
                }
                2 => {
                    for i in 1..=row_len {
                        buf[i] = buf[i].wrapping_add(prev[i]);
                    }
                }
                3 => {
                    let mut i = 1;
                    while i <= bpp && i <= row_len {
                        buf[i] = buf[i].wrapping_add(prev[i] / 2);
                        i += 1;
                    }
                    for i in i..=row_len {
                        buf[i] = buf[i].wrapping_add(((buf[i - bpp] as u16 + prev[i] as u16) / 2) as u8);
                    }
                }
                4 => {
                    let mut i = 1;
                    while i <= bpp && i <= row_len {
                        buf[i] = buf[i].wrapping_add(prev[i]);
                        i += 1;
                    }
                    for i in i..=row_len {
                        let (a, b, c) = (buf[i - bpp] as i32, prev[i] as i32, prev[i - bpp] as i32);
                        let (pa, pb, pc) = ((b - c).abs(), (a - c).abs(), (a + b - 2 * c).abs());
                        let p = if pa <= pb && pa <= pc {
                            a
                        } else if pb <= pc {
                            b
                        } else {
                            c
                        };
                        buf[i] = buf[i].wrapping_add(p as u8);
                    }
                }
                f => return Err(format!("unknown PNG filter type {f}")),
            }
            let row = &self.buffer[1..=row_len];
            if self.interlaced {
                let pass = self.pass;
                let mut col = STARTING_COL[pass];
                let bits = self.raw.bits() as usize;
                if bits >= 8 {
                    let step = bits.div_ceil(8);
                    let mut i = 0;
                    while i < row_len {
                        let at = (self.y * width + col) * 3;
                        rgb[at..at + 3].copy_from_slice(&unpack(self.raw, self.table, &row[i..], 0));
                        col += COL_INCREMENT[pass];
                        i += step;
                    }
                } else {
                    let row_bits = ((self.xsize + OFFSET[pass]) / COL_INCREMENT[pass]) * bits;
                    let mut i = 0;
                    while i < row_bits {
                        let byte = row[i / 8] << (i % 8);
                        let at = (self.y * width + col) * 3;
                        rgb[at..at + 3].copy_from_slice(&unpack(self.raw, self.table, &[byte], 0));
                        col += COL_INCREMENT[pass];
                        i += bits;
                    }
                }
                self.y += ROW_INCREMENT[pass];
                while self.y >= self.ysize || row_len == 0 {
                    self.pass += 1;
                    if self.pass == 7 {
                        self.y = self.ysize;
                        break;
                    }
                    self.y = STARTING_ROW[self.pass];
                    row_len = self.row_len();
                    self.buffer.fill(0);
                }
            } else {
                let base = ((self.y + yoff) * width + xoff) * 3;
                for x in 0..self.xsize {
                    let px = unpack(self.raw, self.table, row, x);
                    rgb[base + x * 3..base + x * 3 + 3].copy_from_slice(&px);
                }
                self.y += 1;
            }
            self.last_output = 0;
            if self.y >= self.ysize || status == Status::StreamEnd {
                return Ok(true);
            }
            std::mem::swap(&mut self.buffer, &mut self.previous);
        }
        Ok(false)
    }
}

/// Pixel `x` of a row in Pillow's raw mode, as `convert("RGB")` sees it.
#[inline]
fn unpack(raw: Raw, table: &[[u8; 3]; 256], row: &[u8], x: usize) -> [u8; 3] {
    let packed = |bits: usize| -> u8 {
        let per = 8 / bits;
        (row[x / per] >> (8 - bits * (x % per + 1))) & ((1u16 << bits) - 1) as u8
    };
    match raw {
        Raw::One => [if packed(1) != 0 { 255 } else { 0 }; 3],
        Raw::L2 => [packed(2) * 85; 3],
        Raw::L4 => [packed(4) * 17; 3],
        Raw::L => [row[x]; 3],
        Raw::I16 => [u16::from_be_bytes([row[2 * x], row[2 * x + 1]]).min(255) as u8; 3],
        Raw::Rgb => [row[3 * x], row[3 * x + 1], row[3 * x + 2]],
        Raw::Rgb16 => [row[6 * x], row[6 * x + 2], row[6 * x + 4]],
        Raw::P1 => table[packed(1) as usize],
        Raw::P2 => table[packed(2) as usize],
        Raw::P4 => table[packed(4) as usize],
        Raw::P => table[row[x] as usize],
        Raw::La => [row[2 * x]; 3],
        Raw::La16 => [row[4 * x]; 3],
        Raw::Rgba => [row[4 * x], row[4 * x + 1], row[4 * x + 2]],
        Raw::Rgba16 => [row[8 * x], row[8 * x + 2], row[8 * x + 4]],
    }
}
