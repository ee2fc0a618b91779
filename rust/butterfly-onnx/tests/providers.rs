//! `classifier::providers` against onnxruntime (Python) itself: the providers the loaded
//! library has, the CPU provider by default, and a provider it lacks refused (never a fallback)
//! with the message the Python package gives.

mod support;

use std::process::Command;

use butterfly_onnx::classifier::{providers, Classifier, ClassifierOptions, Provider};
use butterfly_onnx::ErrorKind;
use support::fixture;

#[test]
fn the_runtime_lists_what_onnxruntime_lists_and_a_missing_provider_is_refused() {
    let Some(fx) = fixture() else { return };
    let open = |providers: Vec<Provider>| {
        Classifier::open(
            fx.path("model.onnx"),
            ClassifierOptions { ort_library: Some(fx.ort_library.clone()), providers, ..Default::default() },
        )
    };
    let classifier = open(providers::cpu()).unwrap();
    assert_eq!(classifier.providers(), ["CPUExecutionProvider"]);

    // The reference: the same library through onnxruntime's Python API.
    let python = Command::new(&fx.python)
        .args(["-c", "import onnxruntime as o; print(','.join(o.get_available_providers()))"])
        .output()
        .unwrap();
    let listed = String::from_utf8(python.stdout).unwrap().trim().to_string();
    assert_eq!(providers::available().unwrap().join(","), listed);

    for device in ["cuda:0", "tensorrt", "coreml"] {
        let wanted = providers::from_device(device).unwrap();
        if listed.split(',').any(|name| name == wanted[0].name) {
            continue; // this library has it
        }
        let error = open(wanted.clone()).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::ProviderUnavailable);
        let message = error.to_string();
        let expected = format!(
            "execution provider {} is not in the loaded ONNX Runtime, which has {}; to get it: pip install",
            wanted[0].name,
            listed.replace(',', ", ")
        );
        assert!(message.starts_with(&expected), "{message}");
    }
    let unknown = open(vec![Provider::new("CudaProvider")]).unwrap_err();
    assert_eq!(unknown.kind(), ErrorKind::InvalidArgument);
}
