//! GIF as Pillow's `GifImagePlugin` opens it and `GifDecode.c` decodes the first frame, then
//! `convert("RGB")`:
//!
//! * the blocks before the first image are walked as `_seek(0)` walks them (each extension's
//!   first sub-block read, then sub-blocks skipped up to an empty one; other bytes skipped);
//! * the canvas is the logical screen, grown to hold the frame (`max(screen, frame end)`),
//!   filled with the frame's transparency index (or 0), the frame's pixels written at its
//!   offset;
//! * mode "P" when the frame has a palette that is not the identity grey ramp (the local
//!   palette, else the global one), else "L" (indices are grey values); palette entries
//!   past the file's are black;
//! * LZW exactly as `GifDecode.c`: the stream is read across block boundaries until the
//!   frame is full (an end code does not end it), "broken data stream" on an impossible
//!   code, "image file is truncated" when the data ends before the last pixel.

use super::{alloc_rgb, check_limit, decode_error, palette_table, DecodeLimits, RgbImage};
use crate::Result;

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn read(&mut self, n: usize) -> &'a [u8] {
        let end = self.pos.saturating_add(n).min(self.data.len());
        let start = self.pos.min(end);
        self.pos = end;
        &self.data[start..end]
    }
    fn byte(&mut self) -> Option<u8> {
        self.read(1).first().copied()
    }
    /// `GifImageFile.data()`: one sub-block, or None at an empty one (or the end).
    fn sub_block(&mut self) -> Option<&'a [u8]> {
        match self.byte() {
            Some(n) if n > 0 => Some(self.read(n as usize)),
            _ => None,
        }
    }
}

/// (x0, y0, width, height, interlace, local palette: None = none, Some(None) = not needed).
type FrameHeader<'a> = (u64, u64, u64, u64, bool, Option<Option<&'a [u8]>>);

/// `GifImageFile._is_palette_needed`, short-circuits and all: Err where Python's chained
/// comparison runs off the end of a truncated last entry (an IndexError).
fn palette_needed(p: &[u8]) -> std::result::Result<bool, ()> {
    for (i, c) in p.chunks(3).enumerate() {
        for k in 0..3 {
            match c.get(k) {
                Some(&v) if v as usize == i => {}
                Some(_) => return Ok(true),
                None => return Err(()),
            }
        }
    }
    Ok(false)
}

pub(super) fn decode(bytes: &[u8], source_name: &str, limits: &DecodeLimits) -> Result<RgbImage> {
    let err = |reason: &str| decode_error(source_name, reason.to_string());
    if bytes.len() < 13 {
        return Err(err("truncated GIF header"));
    }
    let (screen_w, screen_h) =
        (u16::from_le_bytes([bytes[6], bytes[7]]) as u64, u16::from_le_bytes([bytes[8], bytes[9]]) as u64);
    let flags = bytes[10];
    let mut r = Reader { data: bytes, pos: 13 };
    let mut global: Option<&[u8]> = None;
    if flags & 128 != 0 {
        let p = r.read(3 << ((flags & 7) + 1));
        if palette_needed(p).map_err(|_| err("truncated GIF palette"))? {
            global = Some(p);
        }
    }
    // _seek(0)
    let first = r.byte();
    if first.is_none() || first == Some(b';') {
        return Err(err("no images in GIF file"));
    }
    let mut s = first;
    let mut transparency: Option<u8> = None;
    let mut frame: Option<FrameHeader> = None;
    loop {
        let c = match s.take().or_else(|| r.byte()) {
            None | Some(b';') => break,
            Some(c) => c,
        };
        if c == b'!' {
            let label = r.byte().ok_or_else(|| err("truncated GIF extension"))?;
            let block = r.sub_block();
            if label == 249 {
                if let Some(block) = block {
                    let f = *block.first().ok_or_else(|| err("broken GIF graphic control extension"))?;
                    if f & 1 != 0 {
                        transparency = Some(*block.get(3).ok_or_else(|| err("broken GIF graphic control extension"))?);
                    }
                    if block.len() < 3 {
                        return Err(err("broken GIF graphic control extension"));
                    }
                }
            } else if label == 254 {
                let mut block = block;
                while let Some(b) = block {
                    if b.is_empty() {
                        break;
                    }
                    block = r.sub_block();
                }
                continue;
            } else if label == 255 {
                if let Some(block) = block {
                    if block.starts_with(b"NETSCAPE2.0") {
                        let _ = r.sub_block();
                    }
                }
            }
            while r.sub_block().is_some() {}
        } else if c == b',' {
            let d = r.read(9);
            if d.len() < 9 {
                return Err(err("truncated GIF image descriptor"));
            }
            let v = |i: usize| u16::from_le_bytes([d[i], d[i + 1]]) as u64;
            let (x1, y1) = (v(0) + v(4), v(2) + v(6));
            if x1 > screen_w || y1 > screen_h {
                // Pillow checks the grown canvas against its own ceiling right here.
                let (w, h) = (x1.max(screen_w).max(1), y1.max(screen_h).max(1));
                if w * h > super::PILLOW_BOMB_PIXELS {
                    check_limit(
                        source_name,
                        w,
                        h,
                        &DecodeLimits { max_pixels: Some(super::PILLOW_BOMB_PIXELS), jpeg_draft: None },
                    )?;
                }
            }
            let fflags = d[8];
            let mut local = None;
            if fflags & 128 != 0 {
                let p = r.read(3 << ((fflags & 7) + 1));
                let needed = palette_needed(p).map_err(|_| err("truncated GIF palette"))?;
                local = Some(if needed { Some(p) } else { None });
            }
            frame = Some((v(0), v(2), v(4), v(6), fflags & 64 != 0, local));
            break;
        }
    }
    let (x0, y0, fw, fh, interlace, local) = frame.ok_or_else(|| err("image not found in GIF frame"))?;
    let code_bits = r.byte().ok_or_else(|| err("truncated GIF image data"))?;
    let (width, height) = (screen_w.max(x0 + fw), screen_h.max(y0 + fh));
    check_limit(source_name, width, height, limits)?;
    if fw == 0 || fh == 0 {
        return Err(err("tile cannot extend outside image (empty GIF frame)"));
    }
    // None: mode "L"; Some(p): mode "P" with palette p.
    let palette: Option<&[u8]> = match local {
        Some(p) => p,
        None => global,
    };
    let (w, h) = (width as usize, height as usize);
    let mut indices = Vec::new();
    indices
        .try_reserve_exact(w * h)
        .map_err(|_| decode_error(source_name, format!("cannot allocate {width}x{height} pixels")))?;
    indices.resize(w * h, transparency.unwrap_or(0));
    lzw_decode(
        &bytes[r.pos..],
        code_bits,
        interlace,
        &mut indices,
        w,
        (x0 as usize, y0 as usize, fw as usize, fh as usize),
    )
    .map_err(|reason| decode_error(source_name, reason))?;
    let table = match palette {
        Some(p) => palette_table(p),
        None => std::array::from_fn(|i| [i as u8; 3]),
    };
    let mut rgb = alloc_rgb(source_name, width as u32, height as u32)?;
    for (o, &i) in rgb.chunks_exact_mut(3).zip(&indices) {
        o.copy_from_slice(&table[i as usize]);
    }
    Ok(RgbImage { width: width as u32, height: height as u32, data: rgb })
}

const GIFBITS: u32 = 12;
const GIFTABLE: usize = 1 << GIFBITS;

/// `ImagingGifDecode` on the whole remaining file at once (Pillow feeds it in pieces and it
/// waits for whole blocks, which decides the same way), transparency -1 (the first frame).
fn lzw_decode(
    src: &[u8],
    bits: u8,
    interlace: bool,
    canvas: &mut [u8],
    stride: usize,
    (xoff, yoff, xsize, ysize): (usize, usize, usize, usize),
) -> std::result::Result<(), String> {
    const BROKEN: &str = "broken data stream when reading image file";
    if bits > 12 {
        return Err("GIF decoder configuration error (code size above 12 bits)".into());
    }
    let clear = 1usize << bits;
    let end = clear + 1;
    let (mut step, mut interlace_state) = if interlace { (8usize, 1u8) } else { (1usize, 0u8) };
    let (mut x, mut y) = (0usize, 0usize);
    let mut state = 1u8;
    let mut ptr = 0usize;
    let mut bitbuffer: u64 = 0;
    let mut bitcount: u32 = 0;
    let mut blocksize: usize = 0;
    let (mut next, mut codesize, mut codemask) = (0usize, 0u32, 0usize);
    let mut lastcode = 0usize;
    let mut lastdata = 0u8;
    let mut buffer = [0u8; GIFTABLE];
    let mut bufferindex = GIFTABLE;
    let mut link = [0u16; GIFTABLE];
    let mut data = [0u8; GIFTABLE];
    // ImageFile.load reads the file in 64 KiB pieces; each time the decoder returns (an end
    // code, or a block not yet complete), the next piece is read, or the image is truncated.
    const PIECE: usize = 65536;
    let mut fed = src.len().min(PIECE);
    let feed = |fed: &mut usize| -> std::result::Result<(), String> {
        if *fed >= src.len() {
            return Err("image file is truncated".into());
        }
        *fed = src.len().min(*fed + PIECE);
        Ok(())
    };
    loop {
        if state == 1 {
            next = clear + 2;
            codesize = bits as u32 + 1;
            codemask = (1 << codesize) - 1;
            bufferindex = GIFTABLE;
            state = 2;
        }
        // The string to write: buffer[from..GIFTABLE], or the single byte `lastdata`.
        let single;
        let from;
        if bufferindex < GIFTABLE {
            from = bufferindex;
            single = false;
            bufferindex = GIFTABLE;
        } else {
            while bitcount < codesize {
                if blocksize > 0 {
                    let c = src[ptr];
                    ptr += 1;
                    blocksize -= 1;
                    bitbuffer |= (c as u64) << bitcount;
                    bitcount += 8;
                } else {
                    // "We don't start decoding unless we have a full block".
                    if ptr >= fed || fed - ptr < src[ptr] as usize + 1 {
                        feed(&mut fed)?;
                        continue;
                    }
                    blocksize = src[ptr] as usize;
                    ptr += 1;
                }
            }
            let mut c = (bitbuffer as usize) & codemask;
            bitbuffer >>= codesize;
            bitcount -= codesize;
            if c == clear {
                if state != 2 {
                    state = 1;
                }
                continue;
            }
            if c == end {
                // Pillow's decoder returns here; it is called again once more data is read.
                feed(&mut fed)?;
                continue;
            }
            single = true;
            from = 0;
            if state == 2 {
                if c > clear {
                    return Err(BROKEN.into());
                }
                lastdata = c as u8;
                lastcode = c;
                state = 3;
            } else {
                let thiscode = c;
                if c > next {
                    return Err(BROKEN.into());
                }
                if c == next {
                    if bufferindex == 0 {
                        return Err(BROKEN.into());
                    }
                    bufferindex -= 1;
                    buffer[bufferindex] = lastdata;
                    c = lastcode;
                }
                while c >= clear {
                    if bufferindex == 0 || c >= GIFTABLE {
                        return Err(BROKEN.into());
                    }
                    bufferindex -= 1;
                    buffer[bufferindex] = data[c];
                    c = link[c] as usize;
                }
                lastdata = c as u8;
                if next < GIFTABLE {
                    data[next] = c as u8;
                    link[next] = lastcode as u16;
                    if next == codemask && codesize < GIFBITS {
                        codesize += 1;
                        codemask = (1 << codesize) - 1;
                    }
                    next += 1;
                }
                lastcode = thiscode;
            }
        }
        if y >= ysize {
            return Err("GIF decoder overrun".into());
        }
        let string: &[u8] = if single { std::slice::from_ref(&lastdata) } else { &buffer[from..] };
        // `string` borrows `buffer`/`lastdata` immutably; copy it out (at most 4096 bytes).
        let string = string.to_vec();
        for &p in &string {
            canvas[(yoff + y) * stride + xoff + x] = p;
            x += 1;
            if x >= xsize {
                x = 0;
                y += step;
                while y >= ysize {
                    match interlace_state {
                        1 => {
                            y = 4;
                            interlace_state = 2;
                        }
                        2 => {
                            step = 4;
                            y = 2;
                            interlace_state = 3;
                        }
                        3 => {
                            step = 2;
                            y = 1;
                            interlace_state = 0;
                        }
                        _ => return Ok(()),
                    }
                }
            }
        }
    }
}
