//! The few libtiff 4.7.2 functions butterfly-onnx's TIFF decoder calls (hand-written
//! declarations, no bindgen). The library is built by build.rs from the vendored sources.
#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_int, c_void};

// Linked for their symbols (zlib and libjpeg), used by libtiff's C code.
extern crate libz_sys as _;
extern crate mozjpeg_sys as _;

pub type tmsize_t = isize;
pub type toff_t = u64;
pub type thandle_t = *mut c_void;

#[repr(C)]
pub struct TIFF {
    _private: [u8; 0],
}
#[repr(C)]
pub struct TIFFOpenOptions {
    _private: [u8; 0],
}

pub type ReadWriteProc = unsafe extern "C" fn(thandle_t, *mut c_void, tmsize_t) -> tmsize_t;
pub type SeekProc = unsafe extern "C" fn(thandle_t, toff_t, c_int) -> toff_t;
pub type CloseProc = unsafe extern "C" fn(thandle_t) -> c_int;
pub type SizeProc = unsafe extern "C" fn(thandle_t) -> toff_t;
pub type MapFileProc = unsafe extern "C" fn(thandle_t, *mut *mut c_void, *mut toff_t) -> c_int;
pub type UnmapFileProc = unsafe extern "C" fn(thandle_t, *mut c_void, toff_t);
/// `TIFFErrorHandlerExtR` (the last argument is a C `va_list`; only src/shim.c's handlers,
/// written in C, are passed).
pub type ErrorHandlerExtR =
    unsafe extern "C" fn(*mut TIFF, *mut c_void, *const c_char, *const c_char, *mut c_void) -> c_int;

/// What src/shim.c's handlers keep: the first error and the first warning of a handle.
#[repr(C)]
pub struct Messages {
    pub error: [c_char; 512],
    pub errors: c_int,
    pub warning: [c_char; 512],
    pub warnings: c_int,
}

unsafe extern "C" {
    pub fn TIFFOpenOptionsAlloc() -> *mut TIFFOpenOptions;
    pub fn TIFFOpenOptionsFree(opts: *mut TIFFOpenOptions);
    pub fn TIFFOpenOptionsSetMaxSingleMemAlloc(opts: *mut TIFFOpenOptions, max: tmsize_t);
    pub fn TIFFOpenOptionsSetMaxCumulatedMemAlloc(opts: *mut TIFFOpenOptions, max: tmsize_t);
    pub fn TIFFOpenOptionsSetErrorHandlerExtR(opts: *mut TIFFOpenOptions, handler: ErrorHandlerExtR, data: *mut c_void);
    pub fn TIFFOpenOptionsSetWarningHandlerExtR(
        opts: *mut TIFFOpenOptions,
        handler: ErrorHandlerExtR,
        data: *mut c_void,
    );
    pub fn TIFFClientOpenExt(
        name: *const c_char,
        mode: *const c_char,
        handle: thandle_t,
        read: ReadWriteProc,
        write: ReadWriteProc,
        seek: SeekProc,
        close: CloseProc,
        size: SizeProc,
        map: MapFileProc,
        unmap: UnmapFileProc,
        opts: *mut TIFFOpenOptions,
    ) -> *mut TIFF;
    pub fn TIFFClose(tif: *mut TIFF);
    pub fn TIFFSetSubDirectory(tif: *mut TIFF, off: u64) -> c_int;
    pub fn TIFFGetField(tif: *mut TIFF, tag: u32, ...) -> c_int;
    pub fn TIFFGetFieldDefaulted(tif: *mut TIFF, tag: u32, ...) -> c_int;
    pub fn TIFFSetField(tif: *mut TIFF, tag: u32, ...) -> c_int;
    pub fn TIFFIsTiled(tif: *mut TIFF) -> c_int;
    pub fn TIFFStripSize(tif: *mut TIFF) -> tmsize_t;
    pub fn TIFFTileSize(tif: *mut TIFF) -> tmsize_t;
    pub fn TIFFScanlineSize(tif: *mut TIFF) -> tmsize_t;
    pub fn TIFFTileRowSize(tif: *mut TIFF) -> tmsize_t;
    pub fn TIFFComputeStrip(tif: *mut TIFF, row: u32, sample: u16) -> u32;
    pub fn TIFFComputeTile(tif: *mut TIFF, x: u32, y: u32, z: u32, sample: u16) -> u32;
    pub fn TIFFReadEncodedStrip(tif: *mut TIFF, strip: u32, buf: *mut c_void, size: tmsize_t) -> tmsize_t;
    pub fn TIFFReadEncodedTile(tif: *mut TIFF, tile: u32, buf: *mut c_void, size: tmsize_t) -> tmsize_t;
    pub fn TIFFReadTile(tif: *mut TIFF, buf: *mut c_void, x: u32, y: u32, z: u32, sample: u16) -> tmsize_t;
    pub fn TIFFRGBAImageOK(tif: *mut TIFF, emsg: *mut c_char) -> c_int;
    pub fn TIFFReadRGBAStrip(tif: *mut TIFF, row: u32, raster: *mut u32) -> c_int;
    pub fn TIFFReadRGBATile(tif: *mut TIFF, x: u32, y: u32, raster: *mut u32) -> c_int;
    pub fn TIFFRGBAImageBegin(img: *mut c_void, tif: *mut TIFF, stop: c_int, emsg: *mut c_char) -> c_int;
    pub fn TIFFRGBAImageGet(img: *mut c_void, raster: *mut u32, w: u32, h: u32) -> c_int;
    pub fn TIFFRGBAImageEnd(img: *mut c_void);
    pub fn TIFFIsCODECConfigured(scheme: u16) -> c_int;
    pub fn TIFFGetVersion() -> *const c_char;
    pub fn bo_tiff_error(
        tif: *mut TIFF,
        data: *mut c_void,
        module: *const c_char,
        fmt: *const c_char,
        ap: *mut c_void,
    ) -> c_int;
    pub fn bo_tiff_warning(
        tif: *mut TIFF,
        data: *mut c_void,
        module: *const c_char,
        fmt: *const c_char,
        ap: *mut c_void,
    ) -> c_int;
    pub fn bo_tiff_silence_globals();
}
