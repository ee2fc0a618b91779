//! `libImaging/TiffDecode.c`'s glue to libtiff (`ImagingLibTiffDecode`): the file read from
//! memory through libtiff's client procs, strips or tiles through the raw mode's unpacker,
//! YCbCr through `TIFFRGBAImage`, JPEG's YCbCr converted by libjpeg. libtiff's messages are
//! captured per handle (butterfly-onnx-libtiff's shim.c), never printed.

use butterfly_onnx_libtiff as lt;
use std::ffi::{c_char, c_int, c_void, CStr};

use super::super::decode_error;
use super::ifd::Ifd;
use super::setup::Setup;
use super::unpack::{unpack, unpack_band16, unpacker_bits, unpremultiply};
use super::{Mode, ModeImage};
use crate::Result;

struct Memory<'a> {
    data: &'a [u8],
    loc: u64,
}

unsafe extern "C" fn read_proc(h: lt::thandle_t, buf: *mut c_void, size: lt::tmsize_t) -> lt::tmsize_t {
    let m = unsafe { &mut *(h as *mut Memory) };
    let eof = m.data.len() as u64;
    if m.loc > eof || size < 0 {
        return 0;
    }
    let n = (size as u64).min(eof - m.loc) as usize;
    if n == 0 || buf.is_null() {
        return 0;
    }
    unsafe { std::ptr::copy_nonoverlapping(m.data.as_ptr().add(m.loc as usize), buf as *mut u8, n) };
    m.loc += n as u64;
    n as lt::tmsize_t
}
unsafe extern "C" fn write_proc(_: lt::thandle_t, _: *mut c_void, _: lt::tmsize_t) -> lt::tmsize_t {
    0
}
unsafe extern "C" fn seek_proc(h: lt::thandle_t, off: lt::toff_t, whence: c_int) -> lt::toff_t {
    let m = unsafe { &mut *(h as *mut Memory) };
    match whence {
        0 => m.loc = off,
        1 => m.loc = m.loc.wrapping_add(off),
        2 => m.loc = (m.data.len() as u64).wrapping_add(off),
        _ => {}
    }
    m.loc
}
unsafe extern "C" fn close_proc(_: lt::thandle_t) -> c_int {
    0
}
unsafe extern "C" fn size_proc(h: lt::thandle_t) -> lt::toff_t {
    let m = unsafe { &*(h as *mut Memory) };
    m.data.len() as u64
}
unsafe extern "C" fn map_proc(h: lt::thandle_t, base: *mut *mut c_void, size: *mut lt::toff_t) -> c_int {
    let m = unsafe { &*(h as *mut Memory) };
    unsafe {
        *base = m.data.as_ptr() as *mut c_void;
        *size = m.data.len() as u64;
    }
    1
}
unsafe extern "C" fn unmap_proc(_: lt::thandle_t, _: *mut c_void, _: lt::toff_t) {}

const TAG_IMAGEWIDTH: u32 = 256;
const TAG_IMAGELENGTH: u32 = 257;
const TAG_BITSPERSAMPLE: u32 = 258;
const TAG_COMPRESSION: u32 = 259;
const TAG_PHOTOMETRIC: u32 = 262;
const TAG_ROWSPERSTRIP: u32 = 278;
const TAG_PLANARCONFIG: u32 = 284;
const TAG_TILEWIDTH: u32 = 322;
const TAG_TILELENGTH: u32 = 323;
const TAG_EXTRASAMPLES: u32 = 338;
const TAG_JPEGCOLORMODE: u32 = 65538;

/// A libtiff handle on the file in memory, closed on drop, with its captured messages.
struct Handle {
    tif: *mut lt::TIFF,
    _messages: Box<lt::Messages>,
    messages: *mut lt::Messages,
}

impl Drop for Handle {
    fn drop(&mut self) {
        if !self.tif.is_null() {
            unsafe { lt::TIFFClose(self.tif) };
        }
    }
}

impl Handle {
    fn error(&self) -> String {
        let m = unsafe { &*self.messages };
        if m.errors > 0 {
            unsafe { CStr::from_ptr(m.error.as_ptr()) }.to_string_lossy().into_owned()
        } else {
            String::new()
        }
    }
}

fn broken(source_name: &str, h: Option<&Handle>) -> crate::Error {
    let detail = h.map(|h| h.error()).filter(|e| !e.is_empty());
    match detail {
        Some(d) => decode_error(source_name, format!("decoder error -2 (libtiff: {d})")),
        None => decode_error(source_name, "decoder error -2"),
    }
}

/// TiffDecode.c's ImagingLibTiffDecode.
pub(super) fn decode_libtiff(b: &[u8], ifd: &Ifd, s: &Setup, img: &mut ModeImage, source_name: &str) -> Result<()> {
    static SILENCE: std::sync::Once = std::sync::Once::new();
    SILENCE.call_once(|| unsafe { lt::bo_tiff_silence_globals() });
    let _ = (s.planar, &s.bps);
    let mut memory = Memory { data: b, loc: 0 };
    let mut messages: Box<lt::Messages> = Box::new(unsafe { std::mem::zeroed() });
    let mp: *mut lt::Messages = &mut *messages;
    // Memory bound: a few times the decoded image, and never more than 4 GiB.
    let image_bytes = (s.width.saturating_mul(s.height)).saturating_mul(16);
    let bound = image_bytes.saturating_add(64 << 20).min(4 << 30) as isize;
    let tif = unsafe {
        let opts = lt::TIFFOpenOptionsAlloc();
        if opts.is_null() {
            return Err(decode_error(source_name, "cannot allocate libtiff options"));
        }
        lt::TIFFOpenOptionsSetMaxSingleMemAlloc(opts, bound);
        lt::TIFFOpenOptionsSetMaxCumulatedMemAlloc(opts, bound.saturating_mul(2));
        lt::TIFFOpenOptionsSetErrorHandlerExtR(opts, lt::bo_tiff_error, mp as *mut c_void);
        lt::TIFFOpenOptionsSetWarningHandlerExtR(opts, lt::bo_tiff_warning, mp as *mut c_void);
        let tif = lt::TIFFClientOpenExt(
            c"tempfile.tif".as_ptr(),
            c"rC".as_ptr(),
            &mut memory as *mut Memory as lt::thandle_t,
            read_proc,
            write_proc,
            seek_proc,
            close_proc,
            size_proc,
            map_proc,
            unmap_proc,
            opts,
        );
        lt::TIFFOpenOptionsFree(opts);
        tif
    };
    let h = Handle { tif, _messages: messages, messages: mp };
    if tif.is_null() {
        return Err(broken(source_name, Some(&h)));
    }
    // Errors that Pillow's decoder leaves at 0 (an unreadable sub-directory) leave the image
    // as it was allocated: zeros.
    if ifd.offset != 0 && unsafe { lt::TIFFSetSubDirectory(tif, ifd.offset) } == 0 {
        return Ok(());
    }
    let (mut w, mut hgt) = (0u32, 0u32);
    unsafe {
        lt::TIFFGetField(tif, TAG_IMAGEWIDTH, &mut w as *mut u32);
        lt::TIFFGetField(tif, TAG_IMAGELENGTH, &mut hgt as *mut u32);
    }
    if w as i32 as i64 != s.width as i64 || hgt as i32 as i64 != s.height as i64 {
        return Err(broken(source_name, Some(&h)));
    }
    let (mut photometric, mut compression, mut planar) = (0u16, 0u16, 0u16);
    unsafe {
        lt::TIFFGetField(tif, TAG_PHOTOMETRIC, &mut photometric as *mut u16);
        lt::TIFFGetField(tif, TAG_COMPRESSION, &mut compression as *mut u16);
        lt::TIFFGetFieldDefaulted(tif, TAG_PLANARCONFIG, &mut planar as *mut u16);
    }
    let mut as_rgba = photometric == 6;
    if as_rgba && compression == 7 && planar == 1 {
        unsafe { lt::TIFFSetField(tif, TAG_JPEGCOLORMODE, 1 as c_int) };
        as_rgba = false;
    }
    let Some(bits) = unpacker_bits(img.mode, &s.rawmode) else {
        return Err(decode_error(source_name, format!("unknown raw mode for given image mode ({})", s.rawmode)));
    };
    let result = if as_rgba {
        decode_rgba(&h, img, &s.rawmode, bits)
    } else {
        let planes = if planar == 2 && img.mode.bands() > 1 {
            let mut bps = 8u16;
            unsafe { lt::TIFFGetFieldDefaulted(tif, TAG_BITSPERSAMPLE, &mut bps as *mut u16) };
            if bps != 8 && bps != 16 {
                return Err(broken(source_name, Some(&h)));
            }
            Some((img.mode.bands(), bps == 16))
        } else {
            None
        };
        let r = if unsafe { lt::TIFFIsTiled(tif) } != 0 {
            decode_tiles(&h, img, &s.rawmode, bits, planes)
        } else {
            decode_strips(&h, img, &s.rawmode, bits, planes)
        };
        if r.is_ok() && planes.is_some_and(|p| p.0 > 3) && img.mode == Mode::Rgba {
            let (mut n, mut info) = (0u16, std::ptr::null::<u16>());
            unsafe {
                lt::TIFFGetFieldDefaulted(tif, TAG_EXTRASAMPLES, &mut n as *mut u16, &mut info as *mut *const u16)
            };
            if n >= 1 && !info.is_null() && matches!(unsafe { *info }, 0 | 1) {
                for p in img.data.chunks_exact_mut(4) {
                    let v = unpremultiply(p[0], p[1], p[2], p[3]);
                    p.copy_from_slice(&v);
                }
            }
        }
        r
    };
    result.map_err(|()| broken(source_name, Some(&h)))
}

fn unpack_plane(
    img_mode: Mode,
    rawmode: &str,
    planes: Option<(usize, bool)>,
    plane: usize,
    out: &mut [u8],
    src: &[u8],
    n: usize,
) {
    match planes {
        None => unpack(img_mode, rawmode, out, src, n),
        Some((_, true)) => unpack_band16(out, src, plane, n),
        Some((_, false)) => {
            for i in 0..n {
                out[4 * i + plane] = src[i];
            }
        }
    }
}

/// Bits per pixel of the buffer the unpacker reads: `bits` for contiguous samples; for planar
/// images (`planes` = (count, 16-bit)) one 8- or 16-bit sample per plane.
fn unpacked_bits(bits: usize, planes: Option<(usize, bool)>) -> usize {
    match planes {
        Some((n, true)) => 16 * n,
        Some((n, false)) => 8 * n,
        None => bits,
    }
}

fn decode_strips(
    h: &Handle,
    img: &mut ModeImage,
    rawmode: &str,
    bits: usize,
    planes: Option<(usize, bool)>,
) -> std::result::Result<(), ()> {
    let tif = h.tif;
    let nplanes = planes.map_or(1, |p| p.0);
    let bits = unpacked_bits(bits, planes);
    let (xs, ys) = (img.width, img.height);
    let mut rps = 0u32;
    if unsafe { lt::TIFFGetField(tif, TAG_ROWSPERSTRIP, &mut rps as *mut u32) } != 1 || rps == u32::MAX {
        rps = ys as u32;
    }
    if rps > i32::MAX as u32 {
        return Err(());
    }
    let strip_size = unsafe { lt::TIFFStripSize(tif) };
    if strip_size > i32::MAX as isize - 1 || strip_size < 0 {
        return Err(());
    }
    let unpacker_row = (xs * bits / nplanes).div_ceil(8) as isize;
    if strip_size > unpacker_row * rps as isize {
        return Err(());
    }
    let row_size = unsafe { lt::TIFFScanlineSize(tif) };
    if row_size == 0 || unpacker_row > row_size {
        return Err(());
    }
    let mut buf = vec![0u8; strip_size as usize];
    let mut y = 0usize;
    while y < ys {
        for plane in 0..nplanes {
            let strip = unsafe { lt::TIFFComputeStrip(tif, y as u32, plane as u16) };
            if unsafe { lt::TIFFReadEncodedStrip(tif, strip, buf.as_mut_ptr() as *mut c_void, strip_size) } == -1 {
                return Err(());
            }
            let rows = (rps as usize).min(ys - y);
            for r in 0..rows {
                let start = r * row_size as usize;
                let Some(src) = buf.get(start..) else { return Err(()) };
                let need = (xs * bits / nplanes).div_ceil(8);
                if src.len() < need {
                    return Err(());
                }
                unpack_plane(img.mode, rawmode, planes, plane, img.row(y + r, 0), src, xs);
            }
        }
        y += rps as usize;
        if rps == 0 {
            return Err(());
        }
    }
    Ok(())
}

fn decode_tiles(
    h: &Handle,
    img: &mut ModeImage,
    rawmode: &str,
    bits: usize,
    planes: Option<(usize, bool)>,
) -> std::result::Result<(), ()> {
    let tif = h.tif;
    let nplanes = planes.map_or(1, |p| p.0);
    let bits = unpacked_bits(bits, planes);
    let (xs, ys) = (img.width, img.height);
    let tile_bytes = unsafe { lt::TIFFTileSize(tif) };
    if tile_bytes <= 0 {
        return Err(());
    }
    let row_size = unsafe { lt::TIFFTileRowSize(tif) };
    if row_size == 0 || row_size > tile_bytes || tile_bytes > i32::MAX as isize - 1 {
        return Err(());
    }
    let (mut tw, mut tl) = (0u32, 0u32);
    unsafe {
        lt::TIFFGetField(tif, TAG_TILEWIDTH, &mut tw as *mut u32);
        lt::TIFFGetField(tif, TAG_TILELENGTH, &mut tl as *mut u32);
    }
    if tw > i32::MAX as u32 || tl > i32::MAX as u32 || tw == 0 || tl == 0 {
        return Err(());
    }
    let unpacker_row = (tw as usize * bits / nplanes).div_ceil(8) as isize;
    if tile_bytes != unpacker_row * tl as isize || unpacker_row > row_size {
        return Err(());
    }
    let mut buf = vec![0u8; tile_bytes as usize];
    let mut y = 0usize;
    while y < ys {
        for plane in 0..nplanes {
            let mut x = 0usize;
            while x < xs {
                let r = unsafe {
                    lt::TIFFReadTile(tif, buf.as_mut_ptr() as *mut c_void, x as u32, y as u32, 0, plane as u16)
                };
                if r == -1 {
                    return Err(());
                }
                let cw = (tw as usize).min(xs - x);
                let cl = (tl as usize).min(ys - y);
                for ty in 0..cl {
                    let start = ty * row_size as usize;
                    let src = &buf[start..];
                    unpack_plane(img.mode, rawmode, planes, plane, img.row(ty + y, x), src, cw);
                }
                x += tw as usize;
            }
        }
        y += tl as usize;
    }
    Ok(())
}

/// TIFFRGBAImage, as TiffDecode.c's _decodeAsRGBA uses it (top-left orientation).
#[repr(C)]
#[allow(non_snake_case)]
struct RgbaImageHead {
    tif: *mut lt::TIFF,
    stoponerr: c_int,
    isContig: c_int,
    alpha: c_int,
    width: u32,
    height: u32,
    bitspersample: u16,
    samplesperpixel: u16,
    orientation: u16,
    req_orientation: u16,
    photometric: u16,
    redcmap: *mut u16,
    greencmap: *mut u16,
    bluecmap: *mut u16,
    get: *mut c_void,
    put: *mut c_void,
    map: *mut c_void,
    bwmap: *mut c_void,
    palmap: *mut c_void,
    ycbcr: *mut c_void,
    cielab: *mut c_void,
    ua_to_aa: *mut u8,
    bitdepthmap: *mut u8,
    row_offset: c_int,
    col_offset: c_int,
}

fn decode_rgba(h: &Handle, img: &mut ModeImage, rawmode: &str, bits: usize) -> std::result::Result<(), ()> {
    let tif = h.tif;
    let mut rpb = 0u32;
    let ret = unsafe {
        if lt::TIFFIsTiled(tif) != 0 {
            lt::TIFFGetFieldDefaulted(tif, TAG_TILELENGTH, &mut rpb as *mut u32)
        } else {
            lt::TIFFGetFieldDefaulted(tif, TAG_ROWSPERSTRIP, &mut rpb as *mut u32)
        }
    };
    let ys = img.height;
    if ret != 1 || rpb == u32::MAX {
        rpb = ys as u32;
    }
    if bits != 32 {
        return Err(());
    }
    // The C struct is larger than its documented head (it has a union of put routines
    // inside); 1 KiB of 8-byte aligned storage holds it on every LP64 target.
    let mut storage = vec![0u64; 128];
    let head = storage.as_mut_ptr() as *mut RgbaImageHead;
    let mut emsg = [0 as c_char; 1024];
    let ok = unsafe {
        lt::TIFFRGBAImageOK(tif, emsg.as_mut_ptr()) != 0
            && lt::TIFFRGBAImageBegin(head as *mut c_void, tif, 0, emsg.as_mut_ptr()) != 0
    };
    if !ok {
        return Err(());
    }
    struct End(*mut c_void);
    impl Drop for End {
        fn drop(&mut self) {
            unsafe { lt::TIFFRGBAImageEnd(self.0) };
        }
    }
    let _end = End(head as *mut c_void);
    let (iw, ih) = unsafe {
        (*head).orientation = 1;
        (*head).req_orientation = 1;
        (*head).col_offset = 0;
        ((*head).width, (*head).height)
    };
    if (i32::MAX / 4) as u32 <= iw.saturating_sub(1) {
        return Err(());
    }
    let row_bytes = iw as usize * 4;
    if row_bytes == 0 || (i32::MAX as usize / row_bytes) < rpb as usize {
        return Err(());
    }
    let mut buf = vec![0u32; rpb as usize * iw as usize];
    let mut y = 0usize;
    while y < ys {
        unsafe { (*head).row_offset = y as c_int };
        let rows = (rpb as i64).min(ih as i64 - y as i64);
        if rows < 0 {
            return Err(());
        }
        if unsafe { lt::TIFFRGBAImageGet(head as *mut c_void, buf.as_mut_ptr(), iw, rows as u32) } == 0 {
            return Err(());
        }
        let bytes: Vec<u8> = buf.iter().flat_map(|v| v.to_le_bytes()).collect();
        let n = (rpb as usize).min(ys - y);
        for r in 0..n {
            let src = &bytes[r * row_bytes..];
            let xs = img.width;
            if src.len() < xs * 4 {
                return Err(());
            }
            unpack(img.mode, rawmode, img.row(y + r, 0), src, xs);
        }
        if rpb == 0 {
            return Err(());
        }
        y += rpb as usize;
    }
    Ok(())
}
