//! Loading ONNX Runtime: typed errors (never a panic) before and after a library is loaded.
//! One test in its own binary, because the order of loads in the process matters.

mod support;

use std::path::Path;

use butterfly_onnx::classifier::{Classifier, ClassifierOptions};
use butterfly_onnx::runtime::{ensure_loaded, loaded_library};
use butterfly_onnx::ErrorKind;

#[test]
fn load_errors_are_typed_and_one_library_per_process() {
    let Some(fixture) = support::fixture() else { return };
    let library = fixture.ort_library.clone();
    assert_eq!(loaded_library(), None);
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("runtime-test-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();

    // Not a shared library: a typed error, and nothing is loaded.
    let fake = scratch.join("libonnxruntime.so.1");
    std::fs::write(&fake, "not a library").unwrap();
    let error = ensure_loaded(Some(&fake)).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::RuntimeUnavailable);
    assert!(error.to_string().contains("libonnxruntime.so.1"), "{error}");
    assert_eq!(loaded_library(), None);
    // Missing, and not ONNX Runtime although a real shared library: refused the same way.
    assert_eq!(ensure_loaded(Some(&scratch.join("absent.so"))).unwrap_err().kind(), ErrorKind::RuntimeUnavailable);
    let libc = Path::new("/lib/x86_64-linux-gnu/libc.so.6");
    if libc.is_file() {
        let error = ensure_loaded(Some(libc)).unwrap_err();
        assert!(error.to_string().contains("not an ONNX Runtime library"), "{error}");
    }
    // A classifier reports the same error instead of panicking inside ort.
    let error = Classifier::open(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/runtime.rs"), // any file: the runtime loads first
        ClassifierOptions { ort_library: Some(fake.clone()), ..Default::default() },
    )
    .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::RuntimeUnavailable);

    // After those refusals the real one still loads; asking again (same file) is fine.
    let loaded = ensure_loaded(Some(&library)).unwrap();
    assert_eq!(loaded, library.canonicalize().unwrap());
    assert_eq!(ensure_loaded(Some(&library)).unwrap(), loaded);
    assert_eq!(ensure_loaded(None).unwrap(), loaded);

    // A different file after that: refused, since ort would silently keep the first.
    let copy = scratch.join("libonnxruntime-copy.so");
    std::fs::copy(&library, &copy).unwrap();
    let error = ensure_loaded(Some(&copy)).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::RuntimeUnavailable);
    assert!(error.to_string().contains("already loaded"), "{error}");
    std::fs::remove_dir_all(&scratch).ok();
}
