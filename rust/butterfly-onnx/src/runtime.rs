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
//! 3. (the CLI and the Python binding only) the onnxruntime wheel, found by
//!    [`find_python_onnxruntime`].
//!
//! A process holds one ONNX Runtime: once loaded, asking for a *different* library file is
//! an [`Error::RuntimeUnavailable`] (ort would silently keep the first one). A library that
//! cannot be loaded (missing, not ONNX Runtime, too old) is refused before ort sees it, and
//! a later call may name another one: ort itself gets a single try per process.

use std::path::{Path, PathBuf};
use std::process::Command;
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
    ENV_VARS
        .iter()
        .filter_map(std::env::var_os)
        .find(|value| !value.is_empty())
        .map(PathBuf::from)
}

/// Ask a Python interpreter where the onnxruntime wheel's library is, without importing
/// onnxruntime (`importlib.util.find_spec` only reads the package location). Returns the
/// newest-named `capi/libonnxruntime.so*` (`.dylib` on macOS, `onnxruntime.dll` on Windows).
pub fn find_python_onnxruntime(python: &str) -> Option<PathBuf> {
    const SCRIPT: &str = "import importlib.util, pathlib\n\
        spec = importlib.util.find_spec('onnxruntime')\n\
        for loc in (spec.submodule_search_locations or []) if spec else []:\n\
        \x20   capi = pathlib.Path(loc) / 'capi'\n\
        \x20   libs = sorted(capi.glob('libonnxruntime.so*')) + sorted(capi.glob('libonnxruntime*.dylib')) + sorted(capi.glob('onnxruntime.dll'))\n\
        \x20   if libs:\n\
        \x20       print(libs[-1])\n\
        \x20       break\n";
    let output = Command::new(python).args(["-c", SCRIPT]).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let line = String::from_utf8(output.stdout).ok()?;
    let path = PathBuf::from(line.trim());
    (!line.trim().is_empty() && path.is_file()).then_some(path)
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
