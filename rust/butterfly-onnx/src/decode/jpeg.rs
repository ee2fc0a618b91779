//! JPEG through libjpeg-turbo's decoder (the MozJPEG fork's, built from source by
//! `mozjpeg-sys`) with Pillow's settings: ISLOW IDCT, fancy upsampling, no DCT scaling (unless
//! draft mode is asked for), a suspending data source (running out of data is "image file is
//! truncated", as in Pillow without `LOAD_TRUNCATED_IMAGES`), warnings ignored like Pillow's
//! silenced `output_message`. Greyscale is replicated; CMYK is read with Adobe polarity
//! (Pillow's `CMYK;I`) and converted with Pillow's `cmyk2rgb`. Before libjpeg runs,
//! `pillow_open` walks the markers as `JpegImagePlugin` does, for Pillow's verdict on the file.

#[cfg(panic = "abort")]
compile_error!(
    "butterfly-onnx's JPEG decoder reports libjpeg errors by unwinding out of the C error \
     handler; with panic = \"abort\" a corrupt JPEG would abort the process. Build with panic = \"unwind\"."
);

use std::cell::UnsafeCell;
use std::os::raw::{c_int, c_long};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

use mozjpeg_sys::*;

use super::{alloc_rgb, check_limit, cmyk_to_rgb, decode_error, DecodeLimits, RgbImage};
use crate::Result;

/// The payload unwound out of libjpeg's `error_exit` (libjpeg's default calls `exit()`).
struct LibjpegError(String);

const JPEG_SUSPENDED: c_int = 0;
const JPEG_HEADER_TABLES_ONLY: c_int = 2;
/// Pillow's message when the data ends before the decoder is done.
const TRUNCATED: &str = "image file is truncated";

unsafe extern "C-unwind" fn error_exit(cinfo: &mut jpeg_common_struct) {
    // libjpeg formats into a JMSG_LENGTH_MAX (200) byte buffer; mozjpeg-sys types it as
    // [u8; 80], so hand it a larger buffer through the declared type.
    let buffer = UnsafeCell::new([0u8; 200]);
    let err = unsafe { &*cinfo.err };
    let message = match err.format_message {
        Some(format) => {
            unsafe { format(cinfo, &*(buffer.get() as *const [u8; 80])) };
            let bytes = unsafe { &*buffer.get() };
            let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
            String::from_utf8_lossy(&bytes[..end]).into_owned()
        }
        None => format!("libjpeg error {}", err.msg_code),
    };
    // resume_unwind does not run the panic hook: nothing is printed.
    resume_unwind(Box::new(LibjpegError(message)));
}

/// Pillow silences libjpeg's messages (warnings included) and keeps decoding.
unsafe extern "C-unwind" fn output_message(_cinfo: &mut jpeg_common_struct) {}

unsafe extern "C-unwind" fn init_source(_cinfo: &mut jpeg_decompress_struct) {}
unsafe extern "C-unwind" fn term_source(_cinfo: &mut jpeg_decompress_struct) {}

/// All the data is in the buffer from the start: asking for more means it is truncated.
/// Returning FALSE suspends the decoder, like Pillow's `fill_input_buffer`.
unsafe extern "C-unwind" fn fill_input_buffer(_cinfo: &mut jpeg_decompress_struct) -> boolean {
    0
}

unsafe extern "C-unwind" fn skip_input_data(cinfo: &mut jpeg_decompress_struct, num_bytes: c_long) {
    if num_bytes <= 0 {
        return;
    }
    let src = unsafe { &mut *cinfo.src };
    let skip = (num_bytes as u64).min(src.bytes_in_buffer as u64) as usize;
    src.next_input_byte = unsafe { src.next_input_byte.add(skip) };
    src.bytes_in_buffer -= skip;
}

/// Owns the libjpeg objects; `jpeg_destroy_decompress` runs on every exit, unwinding included.
struct Decompressor {
    cinfo: Box<jpeg_decompress_struct>,
    _err: Box<jpeg_error_mgr>,
    _src: Box<jpeg_source_mgr>,
}

impl Drop for Decompressor {
    fn drop(&mut self) {
        // Safe on a partially created object: it returns when `mem` is NULL.
        unsafe { jpeg_destroy_decompress(&mut self.cinfo) };
    }
}

/// What `JpegImagePlugin.JpegImageFile._open` finds before libjpeg runs: the size of the
/// last SOF before the first SOS, and whether an SOS was reached.
struct PillowHeader {
    width: u32,
    height: u32,
    has_scan: bool,
}

/// Pillow's marker walk (`JpegImageFile._open` and its segment handlers), for its verdict:
/// the errors it raises (Pillow then reports the file as unidentified or truncated) and
/// the size it checks against the pixel limits before anything is decoded.
fn pillow_open(b: &[u8]) -> std::result::Result<PillowHeader, &'static str> {
    let be16 = |s: &[u8], at: usize| s.get(at..at + 2).map(|v| u16::from_be_bytes([v[0], v[1]]) as usize);
    let be32 = |s: &[u8], at: usize| s.get(at..at + 4).map(|v| u32::from_be_bytes([v[0], v[1], v[2], v[3]]));
    let mut pos = 3; // `_accept` read FF D8 FF; the walk starts with s = b"\xff"
    let next = |pos: &mut usize| {
        let byte = b.get(*pos).copied();
        *pos += byte.is_some() as usize;
        byte
    };
    let mut pending = Some(0xFF);
    let mut size: Option<(usize, usize)> = None;
    let mut icc: Vec<&[u8]> = Vec::new();
    let mut dpi = false; // info["dpi"] from a JFIF segment
    let mut exif: Option<Vec<u8>> = None; // info["exif"]
    let mut has_scan = false;
    while let Some(first) = pending {
        if first != 0xFF {
            pending = next(&mut pos); // non-FF junk is skipped
            continue;
        }
        let Some(marker) = next(&mut pos) else { break };
        match marker {
            0xC0..=0xFE => {}
            0xFF => {
                pending = Some(0xFF);
                continue;
            }
            0x00 => {
                pending = next(&mut pos);
                continue;
            }
            _ => return Err("no marker found"),
        }
        let no_handler = matches!(marker, 0xC8 | 0xD0..=0xD9 | 0xF0..=0xFD);
        if !no_handler {
            // `n = i16(fp.read(2)) - 2; s = ImageFile._safe_read(fp, n)`
            let n = be16(b, pos).ok_or("truncated segment length")? as isize - 2;
            pos += 2;
            let n = n.max(0) as usize;
            let s = b.get(pos..pos + n).ok_or("Truncated File Read")?;
            pos += n;
            match marker {
                0xC0..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF | 0xDE => {
                    let (Some(height), Some(width)) = (be16(s, 1), be16(s, 3)) else {
                        return Err("short SOF");
                    };
                    size = Some((width, height));
                    if s[0] != 8 {
                        return Err("cannot handle this bit depth");
                    }
                    if !matches!(s.get(5), Some(1 | 3 | 4)) {
                        return Err("cannot handle this layer count");
                    }
                    if !icc.is_empty() {
                        icc.sort();
                        if icc[0].len() < 14 {
                            return Err("short ICC profile chunk");
                        }
                        icc.clear();
                    }
                    if (s.len() - 6) % 3 != 0 {
                        return Err("incomplete SOF component");
                    }
                }
                0xDB => {
                    let mut t = s;
                    while let Some(&v) = t.first() {
                        let len = 1 + if v >> 4 == 0 { 64 } else { 128 };
                        t = t.get(len..).ok_or("bad quantization table marker")?;
                    }
                }
                0xE0 if s.starts_with(b"JFIF") => {
                    if s.len() < 7 {
                        return Err("short JFIF segment");
                    }
                    dpi |= s.len() >= 12 && matches!(s[7], 1 | 2);
                }
                0xE1 if s.starts_with(b"Exif\0\0") => match exif.as_mut() {
                    Some(e) => e.extend_from_slice(&s[6..]),
                    None => exif = Some(s.to_vec()),
                },
                0xEE if s.starts_with(b"Adobe") && s.len() < 7 => return Err("short Adobe segment"),
                0xE2 if s.starts_with(b"ICC_PROFILE\0") => icc.push(s),
                0xED if s.starts_with(b"Photoshop 3.0\0") => {
                    // Its struct.errors are caught (the walk over resources stops); the
                    // resource name length past the end is an IndexError that is not.
                    let mut offset = 14usize;
                    while s.get(offset..offset + 4) == Some(b"8BIM") {
                        offset += 4;
                        let Some(code) = be16(s, offset) else { break };
                        offset += 2;
                        let name_len = *s.get(offset).ok_or("short Photoshop resource")? as usize;
                        offset += 1 + name_len;
                        offset += offset & 1;
                        let Some(len) = be32(s, offset) else { break };
                        offset += 4;
                        if code == 0x03ED {
                            let data = s.get(offset..).unwrap_or(&[]);
                            if data.len().min(len as usize) < 14 {
                                break;
                            }
                        }
                        offset += len as usize;
                        offset += offset & 1;
                    }
                }
                _ => {}
            }
        }
        if marker == 0xDA {
            has_scan = true;
            break;
        }
        pending = next(&mut pos);
    }
    // `_read_dpi_from_exif`, run after the walk, lets a few exceptions escape.
    if let (false, Some(exif)) = (dpi, &exif) {
        if exif_resolution_fails(exif) {
            return Err("EXIF resolution Pillow cannot read");
        }
    }
    // No SOS: Pillow opens the image (when a SOF gave it a size) and fails to load it.
    let (width, height) = size.ok_or("no frame header")?;
    Ok(PillowHeader { width: width as u32, height: height as u32, has_scan })
}

/// Whether `JpegImageFile._read_dpi_from_exif` raises an exception it does not catch
/// (Pillow then rejects the file): when the EXIF block's first IFD (read as Pillow's
/// `ImageFileDirectory_v2.load` reads it) has a ResolutionUnit and an XResolution whose
/// value is a string or bytes of at most one item, `float(x[0]) / x[1]` is an IndexError.
fn exif_resolution_fails(exif: &[u8]) -> bool {
    let mut data = exif;
    for _ in 0..2 {
        data = data.strip_prefix(b"Exif\0\0").unwrap_or(data);
    }
    let Some(head) = data.get(..8) else { return false };
    let prefixes: [&[u8]; 6] = [b"MM\0\x2a", b"II\x2a\0", b"MM\x2a\0", b"II\0\x2a", b"MM\0\x2b", b"II\x2b\0"];
    if !prefixes.contains(&&head[..4]) || head[2] == 0x2B {
        return false; // SyntaxError / BigTIFF's struct.error: caught
    }
    let little = head[0] == b'I';
    let u16_at = |at: usize| {
        data.get(at..at + 2).map(|v| {
            if little {
                u16::from_le_bytes([v[0], v[1]])
            } else {
                u16::from_be_bytes([v[0], v[1]])
            }
        })
    };
    let u32_at = |at: usize| {
        data.get(at..at + 4).map(|v| {
            let a = [v[0], v[1], v[2], v[3]];
            if little {
                u32::from_le_bytes(a)
            } else {
                u32::from_be_bytes(a)
            }
        })
    };
    let ifd = u32_at(4).unwrap_or(0) as usize;
    let Some(count) = u16_at(ifd) else { return false };
    let mut tags: Vec<(u16, u16, &[u8])> = Vec::new();
    let mut total = 0u64;
    for i in 0..count as usize {
        let at = ifd + 2 + 12 * i;
        let (Some(tag), Some(typ), Some(n)) = (u16_at(at), u16_at(at + 2), u32_at(at + 4)) else { break };
        let Some(field) = data.get(at + 8..at + 12) else { break };
        if tags.iter().any(|t| t.0 == tag) {
            continue;
        }
        let unit: u64 = match typ {
            1 | 2 | 6 | 7 => 1,
            3 | 8 => 2,
            4 | 9 | 11 | 13 => 4,
            5 | 10 | 12 | 16 => 8,
            _ => continue,
        };
        let size = unit * n as u64;
        let value = if size > 4 {
            total += size;
            if total > data.len() as u64 {
                continue;
            }
            let offset = u32_at(at + 8).unwrap_or(0) as u64;
            match data.get(offset as usize..(offset + size) as usize) {
                Some(v) => v,
                None => break, // "Truncated File Read": load stops, earlier tags stay
            }
        } else {
            &field[..size as usize]
        };
        if !value.is_empty() {
            tags.push((tag, typ, value));
        }
    }
    if !tags.iter().any(|t| t.0 == 0x0128) {
        return false;
    }
    match tags.iter().find(|t| t.0 == 0x011A) {
        Some(&(_, 2, v)) => v.len() - (v.last() == Some(&0)) as usize <= 1,
        Some(&(_, 1 | 7, v)) => v.len() <= 1,
        _ => false,
    }
}

pub(super) fn decode(bytes: &[u8], source_name: &str, limits: &DecodeLimits) -> Result<RgbImage> {
    let header =
        pillow_open(bytes).map_err(|e| decode_error(source_name, format!("not a JPEG file Pillow can open ({e})")))?;
    check_limit(source_name, header.width as u64, header.height as u64, limits)?;
    if !header.has_scan {
        return Err(decode_error(source_name, "cannot load this image (no JPEG scan)"));
    }
    match catch_unwind(AssertUnwindSafe(|| unsafe { decode_unwinding(bytes, source_name, limits, &header) })) {
        Ok(result) => result,
        Err(payload) => match payload.downcast::<LibjpegError>() {
            Ok(e) => Err(decode_error(source_name, format!("broken JPEG data: {}", e.0))),
            Err(other) => resume_unwind(other),
        },
    }
}

unsafe fn decode_unwinding(
    bytes: &[u8],
    source_name: &str,
    limits: &DecodeLimits,
    header: &PillowHeader,
) -> Result<RgbImage> {
    let mut err: Box<jpeg_error_mgr> = Box::new(unsafe { std::mem::zeroed() });
    unsafe { jpeg_std_error(&mut err) };
    err.error_exit = Some(error_exit);
    err.output_message = Some(output_message);
    let mut src: Box<jpeg_source_mgr> = Box::new(unsafe { std::mem::zeroed() });
    src.next_input_byte = bytes.as_ptr();
    src.bytes_in_buffer = bytes.len();
    src.init_source = Some(init_source);
    src.fill_input_buffer = Some(fill_input_buffer);
    src.skip_input_data = Some(skip_input_data);
    src.resync_to_restart = Some(jpeg_resync_to_restart);
    src.term_source = Some(term_source);

    let mut d = Decompressor { cinfo: Box::new(unsafe { std::mem::zeroed() }), _err: err, _src: src };
    d.cinfo.common.err = &mut *d._err;
    unsafe { jpeg_create_decompress(&mut *d.cinfo) };
    d.cinfo.src = &mut *d._src;
    let cinfo = &mut *d.cinfo;

    // As Pillow: skip tables-only datastreams until an image header.
    loop {
        match unsafe { jpeg_read_header(cinfo, 0) } {
            JPEG_HEADER_TABLES_ONLY => continue,
            JPEG_SUSPENDED => return Err(decode_error(source_name, TRUNCATED)),
            _ => break,
        }
    }
    check_limit(source_name, cinfo.image_width as u64, cinfo.image_height as u64, limits)?;
    // Pillow decodes into an image of its own (last SOF's) size; a frame libjpeg reads
    // differently is refused rather than padded or cut as Pillow's decoder would.
    if (cinfo.image_width, cinfo.image_height) != (header.width, header.height) {
        return Err(decode_error(source_name, "JPEG frame size differs from the header Pillow reads"));
    }
    // Pillow's modes by layer count: 1 -> "L", 3 -> "RGB", 4 -> "CMYK" (read as "CMYK;I").
    let layers = cinfo.num_components;
    cinfo.out_color_space = match layers {
        1 => J_COLOR_SPACE::JCS_GRAYSCALE,
        3 => J_COLOR_SPACE::JCS_RGB,
        4 => J_COLOR_SPACE::JCS_CMYK,
        n => return Err(decode_error(source_name, format!("cannot handle {n}-layer images"))),
    };
    // libjpeg-turbo's defaults, which Pillow keeps (no draft mode): spelled out.
    cinfo.dct_method = J_DCT_METHOD::JDCT_ISLOW;
    cinfo.do_fancy_upsampling = 1;
    cinfo.scale_num = 1;
    cinfo.scale_denom = 1;
    // Draft mode: Pillow's `draft()` sets only the scale (its decoderconfig `(scale, 0)`
    // leaves fancy upsampling and the ISLOW IDCT on).
    if let Some(draft) = limits.jpeg_draft {
        cinfo.scale_denom = draft.scale(cinfo.image_width, cinfo.image_height);
    }

    if unsafe { jpeg_start_decompress(cinfo) } == 0 {
        return Err(decode_error(source_name, TRUNCATED));
    }
    let (width, height) = (cinfo.output_width, cinfo.output_height);
    let components = cinfo.output_components as usize;
    if components != layers as usize {
        return Err(decode_error(source_name, "unexpected JPEG output layout"));
    }
    let row_len = width as usize * components;
    let len =
        row_len.checked_mul(height as usize).ok_or_else(|| decode_error(source_name, "image too large for memory"))?;
    // Not zero-filled: libjpeg writes every row before the length is set.
    let mut raw: Vec<u8> = Vec::new();
    raw.try_reserve_exact(len)
        .map_err(|_| decode_error(source_name, format!("cannot allocate {len} bytes for {width}x{height} pixels")))?;
    let base = raw.as_mut_ptr();
    // SAFETY: every row pointer lies inside the reserved capacity of `len` bytes.
    let mut rows: Vec<*mut u8> = (0..height as usize).map(|y| unsafe { base.add(y * row_len) }).collect();
    while cinfo.output_scanline < height {
        let next = cinfo.output_scanline as usize;
        let read = unsafe { jpeg_read_scanlines(cinfo, rows[next..].as_mut_ptr(), (height as usize - next) as u32) };
        if read == 0 {
            return Err(decode_error(source_name, TRUNCATED));
        }
    }
    // Pillow reads to the end of the image; a missing EOI after the last row is accepted.
    // Its libjpeg-turbo (3.2) rejects a second SOF marker as soon as it sees it, where
    // this one (MozJPEG) reads the marker's fields first and so suspends when the data
    // ends inside them: that is Pillow's "broken data stream".
    // (libjpeg consumed the marker code and suspended at its first parameter byte.)
    if unsafe { jpeg_finish_decompress(cinfo) } == 0 {
        let at = bytes.len() - unsafe { (*cinfo.src).bytes_in_buffer };
        if at >= 2
            && bytes[at - 2] == 0xFF
            && matches!(bytes[at - 1], 0xC0..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF)
        {
            return Err(decode_error(source_name, "broken JPEG data: a second frame header (SOF) after the image"));
        }
    }
    drop(rows);
    // SAFETY: all `height` rows of `row_len` bytes were written by jpeg_read_scanlines.
    unsafe { raw.set_len(len) };
    drop(d);

    let data = match components {
        3 => raw,
        1 => {
            let mut rgb = alloc_rgb(source_name, width, height)?;
            for (px, &v) in rgb.chunks_exact_mut(3).zip(&raw) {
                px.fill(v);
            }
            rgb
        }
        _ => {
            // Pillow's "CMYK;I" raw mode: Adobe files store inverted CMYK.
            let mut rgb = alloc_rgb(source_name, width, height)?;
            for (px, cmyk) in rgb.chunks_exact_mut(3).zip(raw.chunks_exact(4)) {
                px.copy_from_slice(&cmyk_to_rgb(255 - cmyk[0], 255 - cmyk[1], 255 - cmyk[2], 255 - cmyk[3]));
            }
            rgb
        }
    };
    Ok(RgbImage { width, height, data })
}
