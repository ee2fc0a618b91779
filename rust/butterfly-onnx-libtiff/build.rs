//! Builds the vendored libtiff 4.7.2 with `cc`: the pristine upstream sources under vendor/,
//! our hand-written tif_config.h / tiffconf.h (Linux and macOS on x86-64 and aarch64) under
//! config/, found first on the include path. Codecs: none, LZW, PackBits, Deflate, JPEG and
//! old-style JPEG (libjpeg-turbo from mozjpeg-sys), CCITT G3/G4, NeXT, ThunderScan, LogLuv,
//! PixarLog; no LZMA, ZSTD, WebP, JBIG or LERC.
use std::env;
use std::path::PathBuf;

const SOURCES: &[&str] = &[
    "aux",
    "close",
    "codec",
    "color",
    "compress",
    "dir",
    "dirinfo",
    "dirread",
    "dirwrite",
    "dumpmode",
    "error",
    "extension",
    "fax3",
    "fax3sm",
    "flush",
    "getimage",
    "hash_set",
    "jpeg",
    "luv",
    "lzw",
    "next",
    "ojpeg",
    "open",
    "packbits",
    "pixarlog",
    "predict",
    "print",
    "read",
    "strip",
    "swab",
    "thunder",
    "tile",
    "unix",
    "version",
    "warning",
    "write",
    "zip",
];

fn main() {
    // tif_config.h / tiffconf.h are written for 64-bit Linux and macOS (SIZEOF_SIZE_T 8,
    // tmsize_t = int64_t = isize): refuse other targets clearly instead of mis-building.
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let width = env::var("CARGO_CFG_TARGET_POINTER_WIDTH").unwrap_or_default();
    if width != "64" || !matches!(os.as_str(), "linux" | "macos") {
        panic!("butterfly-onnx-libtiff: the vendored libtiff is configured for 64-bit Linux and macOS only, not {os} ({width}-bit)");
    }
    let dir = PathBuf::from("vendor/libtiff");
    let config = PathBuf::from("config");
    println!("cargo:rerun-if-changed=vendor");
    println!("cargo:rerun-if-changed=config");
    let mut build = cc::Build::new();
    build.include(&config).include(&dir).warnings(false).define("HAVE_CONFIG_H", None);
    for path in env::split_paths(&env::var_os("DEP_JPEG_INCLUDE").expect("mozjpeg-sys exports DEP_JPEG_INCLUDE")) {
        build.include(path);
    }
    if let Some(z) = env::var_os("DEP_Z_INCLUDE") {
        build.include(z);
    }
    for name in SOURCES {
        build.file(dir.join(format!("tif_{name}.c")));
    }
    build.file("src/shim.c");
    println!("cargo:rerun-if-changed=src/shim.c");
    build.compile("tiff");
    // DEP_TIFF_INCLUDE for dependents: tiffio.h needs tiffconf.h, so both folders.
    let include = [config, dir].map(|d| std::fs::canonicalize(d).expect("the crate's own folders exist"));
    println!("cargo:include={}", env::join_paths(include).expect("paths without separators").to_string_lossy());
}
