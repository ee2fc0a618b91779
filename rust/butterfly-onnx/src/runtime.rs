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
//! an [`Error::RuntimeUnavailable`] (ort would silently keep the first one).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use crate::{Error, Result};

/// Environment variables naming the library, in order of precedence.
pub const ENV_VARS: [&str; 2] = ["BUTTERFLY_ONNX_ORT_LIB", "ORT_DYLIB_PATH"];

/// The library this process loaded (canonical path), once loaded.
static LOADED: Mutex<Option<PathBuf>> = Mutex::new(None);

/// The library loaded in this process, if any.
pub fn loaded_library() -> Option<PathBuf> {
    LOADED.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The library path from an explicit argument or the environment (steps 1-2 above).
pub fn configured_library(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = explicit {
        return Some(path.to_path_buf());
    }
    ENV_VARS
        .iter()
        .filter_map(|name| std::env::var_os(name))
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
    let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(current) = loaded.as_ref() {
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
        return Err(Error::RuntimeUnavailable {
            reason: format!("{}: not a shared library file", path.display()),
        });
    }
    let builder = ort::init_from(&canonical).map_err(|e| Error::RuntimeUnavailable { reason: e.to_string() })?;
    // Telemetry off; sessions get their own thread pools (no global pool).
    builder.with_name("butterfly_onnx").with_telemetry(false).commit();
    *loaded = Some(canonical.clone());
    Ok(canonical)
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
        assert_eq!(err.kind(), "BackendUnavailableError");
        assert!(err.to_string().contains("/nonexistent/libonnxruntime.so.1"), "{err}");
    }
}
