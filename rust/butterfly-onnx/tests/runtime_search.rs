//! Where the command looks for ONNX Runtime (runtime.rs, `wheel_search_dirs` and
//! `untrusted_reason`), run as a user would run it: a libonnxruntime planted in a `.venv/` or
//! `venv/` above the working directory is never opened, and a found library that others could
//! have written is refused (named with --ort-lib it only draws a warning).
//!
//! The planted library is a real shared object compiled here with `cc`, whose constructor
//! writes a marker file: constructors run inside `dlopen`, before any check, so the marker's
//! absence proves the file was never opened. Its own binary: it only spawns the command.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::fixture;

/// `dir/libonnxruntime.so.99.0.0`, a shared object whose constructor writes `marker`.
fn planted_library(dir: &Path, marker: &Path) -> Option<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    let source = dir.join("planted.c");
    std::fs::write(
        &source,
        format!(
            "#include <stdio.h>\n__attribute__((constructor)) static void planted(void) {{\n\
             FILE *f = fopen(\"{}\", \"w\"); if (f) {{ fputs(\"ran\", f); fclose(f); }}\n}}\n",
            marker.display()
        ),
    )
    .unwrap();
    let library = dir.join("libonnxruntime.so.99.0.0");
    let built = Command::new("cc").args(["-shared", "-fPIC", "-o"]).arg(&library).arg(&source).status();
    std::fs::remove_file(&source).ok();
    match built {
        Ok(status) if status.success() => Some(library),
        _ => None,
    }
}

/// A fake wheel: `<prefix>/lib/python3.11/site-packages/onnxruntime/capi/<planted library>`.
fn plant_venv(prefix: &Path, marker: &Path) -> Option<PathBuf> {
    planted_library(&prefix.join("lib/python3.11/site-packages/onnxruntime/capi"), marker)
}

/// The command with no hint of where ONNX Runtime is and a HOME of its own.
fn bare_cli(home: &Path, cwd: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_butterfly-onnx"));
    for var in ["BUTTERFLY_ONNX_ORT_LIB", "ORT_DYLIB_PATH", "VIRTUAL_ENV", "CONDA_PREFIX", "PYENV_ROOT"] {
        command.env_remove(var);
    }
    command.env("HOME", home).current_dir(cwd);
    command
}

fn run(command: &mut Command) -> (i32, String) {
    let output = command.output().unwrap();
    (output.status.code().unwrap_or(-1), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn planted_and_untrusted_libraries_are_never_opened() {
    let Some(fx) = fixture() else { return };
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("runtime-search-{}", std::process::id()));
    std::fs::remove_dir_all(&scratch).ok();
    let (parent, cwd, marker) = (scratch.join("parent"), scratch.join("parent/child"), scratch.join("marker"));
    std::fs::create_dir_all(&cwd).unwrap();
    let mut planted = Vec::new();
    for prefix in [scratch.join(".venv"), parent.join(".venv"), parent.join("venv"), cwd.join(".venv")] {
        let Some(library) = plant_venv(&prefix, &marker) else {
            eprintln!("SKIPPED: no C compiler (cc) to build the planted library");
            return;
        };
        planted.push(library);
    }
    let model = fx.path("model.onnx");

    // Nothing named: the folders above (and the working directory's own .venv) are not
    // searched. Whatever the system offers (the command may find nothing and exit 2), the
    // planted libraries never run.
    let (code, stderr) = run(bare_cli(&scratch, &cwd).arg("info").arg(&model));
    assert!(code == 0 || code == 2, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!marker.exists(), "a planted library ran: {stderr}");
    assert!(!stderr.contains(scratch.to_str().unwrap()), "{stderr}");

    // The active venv is searched, but a library in a world-writable folder there is refused
    // before it is opened, with the file and the reason named.
    let capi = planted[1].parent().unwrap();
    std::fs::set_permissions(capi, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (code, stderr) = run(bare_cli(&scratch, &cwd).env("VIRTUAL_ENV", parent.join(".venv")).arg("info").arg(&model));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("refusing to load") && stderr.contains(planted[1].to_str().unwrap()), "{stderr}");
    assert!(stderr.contains("its folder") && stderr.contains("writable by everyone"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!marker.exists(), "a refused library ran: {stderr}");

    // The same rule on the library file itself, group-writable this time.
    std::fs::set_permissions(capi, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&planted[1], std::fs::Permissions::from_mode(0o775)).unwrap();
    let (code, stderr) = run(bare_cli(&scratch, &cwd).env("VIRTUAL_ENV", parent.join(".venv")).arg("info").arg(&model));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("the library") && stderr.contains("writable by its group"), "{stderr}");
    assert!(!marker.exists(), "a refused library ran: {stderr}");

    // A real ONNX Runtime that others could write, named explicitly: loaded, with a warning.
    let shared = scratch.join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    let copy = shared.join(fx.ort_library.file_name().unwrap());
    std::fs::copy(&fx.ort_library, &copy).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (code, stderr) = run(bare_cli(&scratch, &cwd).arg("info").arg(&model).arg("--ort-lib").arg(&copy));
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.starts_with("butterfly-onnx: warning:") && stderr.contains("writable by everyone"), "{stderr}");
    std::fs::remove_dir_all(&scratch).ok();
}
