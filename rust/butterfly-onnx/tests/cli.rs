//! The `butterfly-onnx` binary on real photos, checked against torchvision + onnxruntime.

mod support;

use std::process::{Command, Output};

use serde_json::Value;
use support::{fixture, Fixture};

/// The CLI with ONNX Runtime given explicitly and no interference from the environment.
fn cli(fx: &Fixture) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_butterfly-onnx"));
    command.env_remove("BUTTERFLY_ONNX_ORT_LIB").env_remove("ORT_DYLIB_PATH").env("BUTTERFLY_ONNX_PYTHON", &fx.python);
    command
}

fn run(command: &mut Command) -> (i32, String, String) {
    let Output { status, stdout, stderr } = command.output().unwrap();
    (status.code().unwrap_or(-1), String::from_utf8(stdout).unwrap(), String::from_utf8(stderr).unwrap())
}

#[test]
fn predict_json_matches_the_reference_and_reports_bad_images() {
    let Some(fx) = fixture() else { return };
    let (code, stdout, stderr) = run(cli(fx)
        .args(["predict", "--json", "--top-k", "3", "--threads", "2", "--ort-lib"])
        .arg(&fx.ort_library)
        .arg(fx.path("model.onnx"))
        .arg(fx.path("bad/text.jpg"))
        .arg(fx.path("images"))
        .arg(fx.path("missing.png")));
    assert_eq!(code, 1, "some images failed: exit status 1\n{stderr}");
    let document: Value = serde_json::from_str(&stdout).unwrap();
    let predictions = document["predictions"].as_array().unwrap();
    let reference = fx.reference["images"].as_array().unwrap();
    // The directory expanded to its images in sorted order (notes.txt skipped).
    assert_eq!(predictions.len(), reference.len());
    for (got, want) in predictions.iter().zip(reference) {
        assert_eq!(got["source"].as_str().unwrap(), fx.path(want["source"].as_str().unwrap()).to_str().unwrap());
        let top = got["top_k"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        for (g, w) in top.iter().zip(want["top_k"].as_array().unwrap()) {
            assert_eq!(g["label"], w["label"]);
            assert_eq!(g["index"], w["index"]);
            assert!((g["probability"].as_f64().unwrap() - w["probability"].as_f64().unwrap()).abs() < 1e-5);
        }
    }
    let errors = document["errors"].as_array().unwrap();
    let kinds: Vec<&str> = errors.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["ImageDecodeError", "ImageNotFoundError"]);
    assert!(stderr.contains("text.jpg") && stderr.contains("missing.png"), "{stderr}");
}

#[test]
fn predict_text_prints_one_line_per_image_and_exits_0() {
    let Some(fx) = fixture() else { return };
    let images = fx.images();
    // ONNX Runtime found through BUTTERFLY_ONNX_PYTHON's onnxruntime wheel (no --ort-lib).
    let (code, stdout, stderr) = run(cli(fx).args(["predict", "--top-k", "2"]).arg(fx.path("model.onnx")).args(&images));
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), images.len());
    for ((line, image), want) in lines.iter().zip(&images).zip(fx.reference["images"].as_array().unwrap()) {
        let fields: Vec<&str> = line.split('\t').collect();
        assert_eq!(fields[0], image.to_str().unwrap());
        let best = want["top_k"][0]["label"].as_str().unwrap();
        assert!(fields[1].starts_with(&format!("{best} (")), "{line}");
        assert_eq!(fields.len(), 3);
    }
}

#[test]
fn info_summarises_the_contract() {
    let Some(fx) = fixture() else { return };
    let (code, stdout, stderr) = run(cli(fx).arg("info").arg(fx.path("model.onnx")));
    assert_eq!(code, 0, "{stderr}");
    for needle in ["classes:        7", "admiral, monarch", "[N, 3, 64, 64]", "Resize(80, bilinear", "CenterCrop(64)", "tiny_classifier"] {
        assert!(stdout.contains(needle), "{needle:?} missing from:\n{stdout}");
    }
    let (code, stdout, _) = run(cli(fx).args(["info", "--json"]).arg(fx.path("model_static2.onnx")));
    assert_eq!(code, 0);
    let document: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(document["labels"], fx.reference["labels"]);
    assert_eq!(document["static_batch"], 2);
    assert_eq!(document["preprocess"]["crop_size"], 64);
}

#[test]
fn fatal_errors_exit_2_with_a_clear_message() {
    let Some(fx) = fixture() else { return };
    let cases: [(&[&str], &str, &str); 4] = [
        (&["info", "not_a_model.onnx"], "invalid model", "not_a_model.onnx"),
        (&["info", "model_no_contract.onnx"], "no butterfly_onnx contract", "model_no_contract.onnx"),
        (&["info", "nowhere.onnx"], "model file not found", "nowhere.onnx"),
        (&["info", "model.onnx", "--ort-lib", "/nonexistent/libonnxruntime.so.1"], "ONNX Runtime unavailable", "/nonexistent"),
    ];
    for (args, message, names) in cases {
        let mut command = cli(fx);
        command.current_dir(&fx.dir).args(args);
        let (code, stdout, stderr) = run(&mut command);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stdout.is_empty());
        assert!(stderr.contains(message) && stderr.contains(names), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // No library anywhere: neither flag, environment, nor a Python with onnxruntime.
    let (code, _, stderr) = run(cli(fx).env("BUTTERFLY_ONNX_PYTHON", "/nonexistent/python").arg("info").arg(fx.path("model.onnx")));
    assert_eq!(code, 2);
    assert!(stderr.contains("--ort-lib"), "{stderr}");
}
