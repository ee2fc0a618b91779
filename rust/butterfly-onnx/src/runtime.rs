//! Loading the ONNX Runtime shared library (`ort` with `load-dynamic`).
//!
//! Nothing is linked at build time: the library the onnxruntime Python wheel ships
//! (`<site-packages>/onnxruntime/capi/libonnxruntime.so.<version>`) or any other
//! `libonnxruntime` >= 1.17 is opened at run time with [`ort::init_from`], which returns a
//! typed error. It must happen before any other `ort` call: left to itself, `ort` would
//! dlopen `$ORT_DYLIB_PATH` / `libonnxruntime.so` on first use and panic when that fails.
//!
//! Where the library comes from, first match wins:
//! 1. an explicit path (`ClassifierOptions::ort_library`, the CLI's `--ort-lib`);
//! 2. the environment: `BUTTERFLY_ONNX_ORT_LIB`, then `ORT_DYLIB_PATH`;
//! 3. (the CLI only; the Python package finds the wheel itself, in `_backends/rust.py`) the
//!    onnxruntime wheel in the usual site-packages folders, found by [`find_wheel_library`]
//!    by looking at files (no Python is run): the active environment, then the user's, then
//!    the system's. Never the working directory or a folder above it: a `.venv/` planted
//!    there (or shipped in a cloned repository) would run its code at `dlopen`.
//!
//! A library is trusted as OpenSSH trusts a key file ([`untrusted_reason`]): neither it nor its
//! folder may be writable by group or others, and both must belong to the user or root. A
//! found library that fails is refused; an explicitly named one (steps 1-2) is loaded with a
//! warning, since the user chose it.
//!
//! A process holds one ONNX Runtime: once loaded, asking for a *different* library file is
//! an [`Error::RuntimeUnavailable`] (ort would silently keep the first one). A library that
//! cannot be loaded (missing, not ONNX Runtime, too old) is refused before ort sees it, and
//! a later call may name another one: ort itself gets a single try per process.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::{Error, Result};

/// Environment variables naming the library, in order of precedence.
pub const ENV_VARS: [&str; 2] = ["BUTTERFLY_ONNX_ORT_LIB", "ORT_DYLIB_PATH"];

/// What this process did with ONNX Runtime so far.
enum State {
    NotLoaded,
    Loaded(PathBuf),
    /// `ort::init_from` failed: ort's internal once-cell is then marked initialised without
    /// a library (ort rc.13), so no further ort call is safe in this process.
    Failed(String),
}

static STATE: Mutex<State> = Mutex::new(State::NotLoaded);

/// The library loaded in this process, if any.
pub fn loaded_library() -> Option<PathBuf> {
    match &*STATE.lock().unwrap_or_else(|e| e.into_inner()) {
        State::Loaded(path) => Some(path.clone()),
        _ => None,
    }
}

/// The library path from an explicit argument or the environment (steps 1-2 above).
pub fn configured_library(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = explicit {
        return Some(path.to_path_buf());
    }
    ENV_VARS.iter().filter_map(std::env::var_os).find(|value| !value.is_empty()).map(PathBuf::from)
}

/// The site-packages folders [`find_wheel_library`] looks in, in order: the active
/// environment (`$VIRTUAL_ENV`, `$CONDA_PREFIX`, absolute paths only), the user's
/// (`~/.local`, pyenv's versions), then the system's (`/usr/local/lib/python3*`,
/// `/usr/lib/python3*`, and the macOS framework / Homebrew ones). Nothing relative to the
/// working directory (see the module docs).
pub fn wheel_search_dirs() -> Vec<PathBuf> {
    let mut prefixes: Vec<PathBuf> = Vec::new();
    for var in ["VIRTUAL_ENV", "CONDA_PREFIX"] {
        if let Some(prefix) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            prefixes.push(PathBuf::from(prefix));
        }
    }
    let home = std::env::var_os("HOME").filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(home) = &home {
        prefixes.push(home.join(".local"));
        let pyenv = std::env::var_os("PYENV_ROOT").map(PathBuf::from).unwrap_or_else(|| home.join(".pyenv"));
        prefixes.extend(sorted_children(&pyenv.join("versions"), |_| true).into_iter().rev());
    }
    prefixes.extend(["/usr/local", "/usr", "/opt/homebrew"].map(PathBuf::from));
    prefixes.extend(
        sorted_children(Path::new("/Library/Frameworks/Python.framework/Versions"), |_| true).into_iter().rev(),
    );
    let mut dirs = Vec::new();
    for prefix in prefixes {
        // <prefix>/lib/python3.X/{site,dist}-packages, newest version first; Debian's
        // /usr/lib/python3/dist-packages too; Windows venvs: <prefix>/Lib/site-packages.
        for lib in sorted_children(&prefix.join("lib"), |name| name.starts_with("python3")).into_iter().rev() {
            dirs.extend([lib.join("site-packages"), lib.join("dist-packages")]);
        }
        dirs.push(prefix.join("Lib").join("site-packages"));
    }
    // A relative entry ($HOME or $VIRTUAL_ENV set to "venv", say) would be the working directory's.
    dirs.retain(|d| d.is_absolute() && d.is_dir());
    dirs.dedup();
    dirs
}

/// The onnxruntime wheel's library in the first of `dirs` that has one:
/// `<dir>/onnxruntime/capi/libonnxruntime.so*` (`.dylib` on macOS, `onnxruntime.dll` on
/// Windows), the newest-named when there are several.
pub fn find_wheel_library_in(dirs: &[PathBuf]) -> Option<PathBuf> {
    dirs.iter().find_map(|dir| {
        let capi = dir.join("onnxruntime").join("capi");
        let libraries = sorted_children(&capi, |name| {
            name.starts_with("libonnxruntime.so")
                || (name.starts_with("libonnxruntime") && name.ends_with(".dylib"))
                || name == "onnxruntime.dll"
        });
        libraries.into_iter().rev().find(|p| p.is_file())
    })
}

/// [`find_wheel_library_in`] the [`wheel_search_dirs`]; `Err` (a [`Error::RuntimeUnavailable`]
/// naming the file and why) when the library found is not [trusted](untrusted_reason).
pub fn find_wheel_library() -> Result<Option<PathBuf>> {
    let Some(found) = find_wheel_library_in(&wheel_search_dirs()) else { return Ok(None) };
    match untrusted_reason(&found) {
        None => Ok(Some(found)),
        Some(reason) => Err(Error::RuntimeUnavailable {
            reason: format!(
                "refusing to load {}: {reason}; fix its permissions, or name it explicitly with --ort-lib \
                 or {} to load it anyway",
                found.display(),
                ENV_VARS[0]
            ),
        }),
    }
}

/// Why `library` should not be loaded without being asked for by name, or `None` when it is
/// safe: OpenSSH's rule for key files, applied to the file and to its folder (symlinks
/// resolved) -- writable by group or others, or owned by someone other than the user and
/// root, means another account could have put its code there. Always `None` off Unix.
pub fn untrusted_reason(library: &Path) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let file = match library.canonicalize() {
            Ok(file) => file,
            Err(e) => return Some(format!("{}: cannot resolve the path: {e}", library.display())),
        };
        // SAFETY: geteuid has no preconditions and cannot fail.
        let user = unsafe { libc::geteuid() };
        let folder = file.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"));
        for (what, path) in [("the library", &file), ("its folder", &folder)] {
            let metadata = match std::fs::metadata(path) {
                Ok(metadata) => metadata,
                Err(e) => return Some(format!("{what} {}: cannot read its permissions: {e}", path.display())),
            };
            if metadata.mode() & 0o022 != 0 {
                return Some(format!(
                    "{what} {} is writable by {} (mode {:o})",
                    path.display(),
                    if metadata.mode() & 0o002 != 0 { "everyone" } else { "its group" },
                    metadata.mode() & 0o7777
                ));
            }
            if metadata.uid() != user && metadata.uid() != 0 {
                return Some(format!(
                    "{what} {} is owned by uid {}, neither you (uid {user}) nor root",
                    path.display(),
                    metadata.uid()
                ));
            }
        }
        None
    }
    #[cfg(not(unix))]
    {
        let _ = library;
        None
    }
}

/// How to get a library when none was found (one line, for error messages).
pub fn how_to_get_a_library() -> String {
    format!(
        "no ONNX Runtime library found: pass --ort-lib PATH, set {} (or {}) to a libonnxruntime shared library, \
         or `pip install onnxruntime` (its capi/libonnxruntime is found in the active virtualenv, ~/.local or the system site-packages)",
        ENV_VARS[0], ENV_VARS[1]
    )
}

/// The entries of `dir` whose file name passes `keep`, sorted (empty when unreadable).
fn sorted_children(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut found: Vec<PathBuf> =
        entries.flatten().filter(|e| e.file_name().to_str().is_some_and(&keep)).map(|e| e.path()).collect();
    found.sort_by(|a, b| version_order(a, b));
    found
}

/// Names compared with their digit runs as numbers (python3.9 < python3.11, .so.1.9 < .so.1.32).
fn version_order(a: &Path, b: &Path) -> std::cmp::Ordering {
    fn key(path: &Path) -> Vec<(String, u64)> {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut chars = name.chars().peekable();
        let mut parts = Vec::new();
        while chars.peek().is_some() {
            let text: String = std::iter::from_fn(|| chars.next_if(|c| !c.is_ascii_digit())).collect();
            let digits: String = std::iter::from_fn(|| chars.next_if(|c| c.is_ascii_digit())).collect();
            parts.push((text, digits.parse().unwrap_or(0)));
        }
        parts
    }
    key(a).cmp(&key(b))
}

/// Make sure ONNX Runtime is loaded; returns the library in use.
///
/// `library`: the file to load, or `None` for the environment variables (or whatever this
/// process already loaded). Safe to call from many threads and many times.
pub fn ensure_loaded(library: Option<&Path>) -> Result<PathBuf> {
    let mut state = STATE.lock().unwrap_or_else(|e| e.into_inner());
    match &*state {
        State::Loaded(current) => {
            if let Some(requested) = library {
                let requested_canonical = requested.canonicalize().unwrap_or_else(|_| requested.to_path_buf());
                if &requested_canonical != current {
                    return Err(Error::RuntimeUnavailable {
                        reason: format!(
                            "this process already loaded ONNX Runtime from {}; it cannot load a second one from {}",
                            current.display(),
                            requested.display()
                        ),
                    });
                }
            }
            return Ok(current.clone());
        }
        State::Failed(reason) => {
            return Err(Error::RuntimeUnavailable {
                reason: format!("{reason} (ONNX Runtime cannot be loaded again in this process; restart it)"),
            })
        }
        State::NotLoaded => {}
    }
    let path = configured_library(library).ok_or_else(|| Error::RuntimeUnavailable {
        reason: format!(
            "no ONNX Runtime library given: pass its path (--ort-lib, ort_library) or set {} or {} \
             to a libonnxruntime shared library (e.g. the one in the onnxruntime wheel's capi/ folder)",
            ENV_VARS[0], ENV_VARS[1]
        ),
    })?;
    // Absolute, because ort resolves relative paths against the executable's folder.
    let canonical = path.canonicalize().map_err(|e| Error::RuntimeUnavailable {
        reason: format!("{}: cannot open the ONNX Runtime library: {e}", path.display()),
    })?;
    if !canonical.is_file() {
        return Err(Error::RuntimeUnavailable { reason: format!("{}: not a shared library file", path.display()) });
    }
    // ort gets exactly one try per process, so only a library that passes ort's own checks
    // (loads, exports OrtGetApiBase, is new enough) is handed to it.
    probe(&canonical).map_err(|reason| Error::RuntimeUnavailable { reason })?;
    match ort::init_from(&canonical) {
        Ok(builder) => {
            // Telemetry off; sessions get their own thread pools (no global pool).
            builder.with_name("butterfly_onnx").with_telemetry(false).commit();
            *state = State::Loaded(canonical.clone());
            Ok(canonical)
        }
        Err(e) => {
            let reason = e.to_string();
            *state = State::Failed(reason.clone());
            Err(Error::RuntimeUnavailable { reason })
        }
    }
}

/// Open `path` the way ort will and check what ort checks; returns the version string.
fn probe(path: &Path) -> std::result::Result<String, String> {
    type GetApiBase = unsafe extern "C" fn() -> *const ort::sys::OrtApiBase;
    // SAFETY: loading a shared library runs its initialisers; that is the point of the
    // call, and the same file is loaded by ort right after.
    let library = unsafe { libloading::Library::new(path) }
        .map_err(|e| format!("{}: cannot load the ONNX Runtime library: {e}", path.display()))?;
    // Never unloaded: ONNX Runtime's thread-local state does not survive dlclose, and ort
    // loads the same file again (only a reference count changes).
    let library = std::mem::ManuallyDrop::new(library);
    // SAFETY: the symbol's signature is the C API's `OrtGetApiBase`.
    let get_api_base = unsafe { library.get::<GetApiBase>(b"OrtGetApiBase") }
        .map_err(|_| format!("{}: not an ONNX Runtime library (no OrtGetApiBase symbol)", path.display()))?;
    // SAFETY: OrtGetApiBase returns a pointer to a static struct, or null.
    let base = unsafe { get_api_base() };
    if base.is_null() {
        return Err(format!("{}: OrtGetApiBase returned null", path.display()));
    }
    // SAFETY: base is valid (checked above); the version is a static NUL-terminated string.
    let version = unsafe { std::ffi::CStr::from_ptr(((*base).GetVersionString)()) }.to_string_lossy().into_owned();
    let minor = version.split('.').nth(1).and_then(|m| m.parse::<u32>().ok()).unwrap_or(0);
    if minor < ort::MINOR_VERSION {
        return Err(format!(
            "{}: ONNX Runtime {version} is too old; butterfly-onnx needs 1.{} or newer",
            path.display(),
            ort::MINOR_VERSION
        ));
    }
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_library_is_a_typed_error_not_a_panic() {
        // Never loads anything, so it cannot disturb other tests of the process.
        if loaded_library().is_some() {
            return;
        }
        let err = ensure_loaded(Some(Path::new("/nonexistent/libonnxruntime.so.1"))).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::RuntimeUnavailable);
        assert!(err.to_string().contains("/nonexistent/libonnxruntime.so.1"), "{err}");
    }
}
