//! WebP through libwebp itself (`libwebp-sys` builds libwebp 1.6.0, the version in Pillow's
//! wheels, from source), called the way Pillow's `_webp.c` calls it, so the verdict on a
//! damaged file and the pixels of a transparent one (composited by WebPAnimDecoder on a
//! transparent canvas) are Pillow's.

fn le32(b: &[u8], at: usize) -> u64 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as u64
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

/// WebP exactly as Pillow opens it: `WebPAnimDecoderNew` on the whole file with default
/// options (RGBA, the first frame composited on a transparent canvas), "could not create
/// decoder object" when libwebp refuses it, the canvas size checked, the first frame's RGB.
/// libwebp is the same library and version Pillow's wheels ship (1.6.0, built from source by
/// `libwebp-sys`).
pub(super) fn decode(bytes: &[u8], source_name: &str, limits: &super::DecodeLimits) -> crate::Result<super::RgbImage> {
    use libwebp_sys as w;
    if let Some((width, height)) = header_size(bytes) {
        // Pillow's pre-check (error only, with its own ceiling), before libwebp parses.
        if width.max(1) * height.max(1) > super::PILLOW_BOMB_PIXELS {
            let ceiling = super::DecodeLimits { max_pixels: Some(super::PILLOW_BOMB_PIXELS), jpeg_draft: None };
            super::check_limit(source_name, width.max(1), height.max(1), &ceiling)?;
        }
    }
    struct Decoder(*mut w::WebPAnimDecoder);
    impl Drop for Decoder {
        fn drop(&mut self) {
            unsafe { w::WebPAnimDecoderDelete(self.0) };
        }
    }
    let data = w::WebPData { bytes: bytes.as_ptr(), size: bytes.len() };
    // SAFETY: `data` borrows `bytes` for the decoder's whole life (it is dropped below).
    let dec = unsafe {
        let mut options: w::WebPAnimDecoderOptions = std::mem::zeroed();
        if w::WebPAnimDecoderOptionsInit(&mut options) == 0 {
            return Err(super::decode_error(source_name, "libwebp version mismatch"));
        }
        Decoder(w::WebPAnimDecoderNew(&data, &options))
    };
    let mut info: w::WebPAnimInfo = unsafe { std::mem::zeroed() };
    if dec.0.is_null() || unsafe { w::WebPAnimDecoderGetInfo(dec.0, &mut info) } == 0 {
        return Err(super::decode_error(source_name, "could not create decoder object (libwebp refuses the file)"));
    }
    let (width, height) = (info.canvas_width, info.canvas_height);
    super::check_limit(source_name, width as u64, height as u64, limits)?;
    let mut buf: *mut u8 = std::ptr::null_mut();
    let mut timestamp = 0;
    if unsafe { w::WebPAnimDecoderGetNext(dec.0, &mut buf, &mut timestamp) } == 0 || buf.is_null() {
        return Err(super::decode_error(source_name, "failed to read next frame"));
    }
    let pixels = width as usize * height as usize;
    // SAFETY: libwebp's canvas is width * height RGBA pixels, valid until the next call.
    let rgba = unsafe { std::slice::from_raw_parts(buf, pixels * 4) };
    let mut rgb = super::alloc_rgb(source_name, width, height)?;
    for (o, p) in rgb.chunks_exact_mut(3).zip(rgba.chunks_exact(4)) {
        o.copy_from_slice(&p[..3]);
    }
    drop(dec);
    Ok(super::RgbImage { width, height, data: rgb })
}
