//! The checks libwebp's demuxer makes before Pillow (which opens every WebP through
//! `WebPAnimDecoderNew`, without partial data) decodes a single pixel: RIFF header and size,
//! the file holding the whole RIFF chunk, chunk sizes within it, a VP8 / VP8L / VP8X master
//! chunk, `WebPGetFeatures`' bitstream header checks, and for VP8X files the canvas matching
//! the still image. A file failing them is an error, as in Pillow ("could not create decoder
//! object"), instead of a tensor from a more lenient decoder. Animated WebP is refused.
//!
//! Returns the bytes of the RIFF chunk (libwebp ignores anything after it) and the image size.

const MAX_CHUNK_PAYLOAD: u64 = u32::MAX as u64 - 8 - 1;
const MAX_IMAGE_AREA: u64 = 1 << 32;

fn le32(b: &[u8], at: usize) -> u64 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as u64
}

/// `WebPGetFeatures` on one VP8 / VP8L chunk (header included): the frame's size.
fn features(fourcc: &[u8], payload: &[u8]) -> std::result::Result<(u64, u64), &'static str> {
    if fourcc == b"VP8 " {
        if payload.len() < 10 {
            return Err("truncated VP8 frame header");
        }
        let bits = payload[0] as u64 | (payload[1] as u64) << 8 | (payload[2] as u64) << 16;
        if payload[3..6] != [0x9d, 0x01, 0x2a] {
            return Err("bad VP8 signature");
        }
        if bits & 1 != 0 || (bits >> 1) & 7 > 3 || (bits >> 4) & 1 == 0 || (bits >> 5) >= payload.len() as u64 {
            return Err("invalid VP8 frame header");
        }
        let w = (u16::from_le_bytes([payload[6], payload[7]]) & 0x3fff) as u64;
        let h = (u16::from_le_bytes([payload[8], payload[9]]) & 0x3fff) as u64;
        if w == 0 || h == 0 {
            return Err("VP8 frame of size zero");
        }
        Ok((w, h))
    } else {
        if payload.len() < 5 || payload[0] != 0x2f || payload[4] >> 5 != 0 {
            return Err("invalid VP8L header");
        }
        let v = le32(payload, 1);
        Ok(((v & 0x3fff) + 1, ((v >> 14) & 0x3fff) + 1))
    }
}

pub(super) fn check_container(bytes: &[u8]) -> std::result::Result<(&[u8], u64, u64), &'static str> {
    if bytes.len() < 20 || &bytes[..4] != b"RIFF" || &bytes[8..12] != b"WEBP" {
        return Err("not a WebP file");
    }
    let riff_size = le32(bytes, 4);
    if !(8..=MAX_CHUNK_PAYLOAD).contains(&riff_size) {
        return Err("invalid RIFF size");
    }
    let riff_end = riff_size + 8;
    if (bytes.len() as u64) < riff_end {
        return Err("truncated WebP file (shorter than its RIFF size)");
    }
    let data = &bytes[..riff_end as usize];
    let end = data.len();
    // (fourcc, payload start, padded size) of each chunk, all inside the RIFF chunk.
    let mut chunks = Vec::new();
    let mut pos = 12usize;
    while pos < end {
        if end - pos < 8 {
            return Err("truncated WebP chunk header");
        }
        let size = le32(data, pos + 4);
        if size > MAX_CHUNK_PAYLOAD {
            return Err("invalid WebP chunk size");
        }
        let padded = size + (size & 1);
        if padded > (end - pos - 8) as u64 {
            return Err("WebP chunk larger than the file");
        }
        chunks.push((&data[pos..pos + 4], pos + 8, size as usize));
        pos += 8 + padded as usize;
    }
    let (first, start, size) = *chunks.first().ok_or("WebP without chunks")?;
    match first {
        b"VP8 " | b"VP8L" => {
            let (w, h) = features(first, &data[start..start + size])?;
            return Ok((data, w, h));
        }
        b"VP8X" => {
            if size < 10 {
                return Err("short VP8X chunk");
            }
            let flags = data[start];
            let cw = 1 + (data[start + 4] as u64 | (data[start + 5] as u64) << 8 | (data[start + 6] as u64) << 16);
            let ch = 1 + (data[start + 7] as u64 | (data[start + 8] as u64) << 8 | (data[start + 9] as u64) << 16);
            if cw * ch >= MAX_IMAGE_AREA {
                return Err("WebP canvas too large");
            }
            if flags & 0x02 != 0 {
                return Err("animated WebP is not supported");
            }
            if flags & !0x3e != 0 {
                return Err("invalid VP8X flags");
            }
            if chunks.len() < 2 {
                return Err("WebP without an image");
            }
            let mut image = None;
            let mut alpha_seen = false;
            for &(fourcc, start, size) in &chunks[1..] {
                match fourcc {
                    b"VP8X" => return Err("second VP8X chunk"),
                    b"ANIM" | b"ANMF" => return Err("animated WebP is not supported"),
                    b"ALPH" if image.is_none() => alpha_seen = true,
                    b"VP8 " | b"VP8L" if image.is_none() => {
                        if fourcc == b"VP8L" && alpha_seen {
                            return Err("VP8L with an ALPH chunk");
                        }
                        image = Some(features(fourcc, &data[start..start + size])?);
                    }
                    _ => {}
                }
            }
            let (w, h) = image.ok_or("WebP without an image")?;
            if (w, h) != (cw, ch) {
                return Err("WebP image size differs from its canvas");
            }
            Ok((data, w, h))
        }
        _ => Err("no VP8, VP8L or VP8X chunk at the start of the WebP file"),
    }
}

/// `WebPImagePlugin._get_size`: the size Pillow reads from the first 30 bytes and checks
/// against its decompression-bomb ceiling before libwebp parses anything.
pub(super) fn header_size(s: &[u8]) -> Option<(u64, u64)> {
    let le16 = |at: usize| u16::from_le_bytes([s[at], s[at + 1]]) as u64;
    match s.get(12..16)? {
        b"VP8 " if s.len() >= 30 && s[23..26] == [0x9d, 0x01, 0x2a] => Some((le16(26) & 0x3fff, le16(28) & 0x3fff)),
        b"VP8X" if s.len() >= 30 => {
            let le24 = |at: usize| s[at] as u64 | (s[at + 1] as u64) << 8 | (s[at + 2] as u64) << 16;
            Some((le24(24) + 1, le24(27) + 1))
        }
        b"VP8L" if s.len() >= 25 && s[20] == 0x2f => {
            let bits = le32(s, 21);
            Some(((bits & 0x3fff) + 1, ((bits >> 14) & 0x3fff) + 1))
        }
        _ => None,
    }
}
