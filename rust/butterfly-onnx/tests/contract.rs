//! The Rust contract reader against the shared fixtures in tests/fixtures/contracts/, which
//! tests/test_contract.py feeds to the Python reader: both must accept and reject exactly
//! the same documents.

use std::path::PathBuf;

use butterfly_onnx::contract::{self, ModelContract, OutputKind, TensorInfo};
use butterfly_onnx::preprocess::PreprocessSpec;
use butterfly_onnx::ErrorKind;
use serde_json::Value;

fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").join(path)
}

fn fixtures() -> Vec<(String, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/contracts");
    let mut cases: Vec<(String, Value)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            (path.file_name().unwrap().to_string_lossy().into_owned(), serde_json::from_str(&text).unwrap())
        })
        .collect();
    cases.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(cases.len() >= 8, "the shared contract fixtures are missing");
    cases
}

/// The metadata value as a model would carry it (tests/test_contract.py `raw_document`): the
/// document itself when it is a string (invalid JSON, duplicated keys, Infinity), else its
/// JSON text; then padded with spaces to `pad_to_bytes` bytes when the case says so.
fn raw_document(case: &Value) -> String {
    let mut raw = match &case["document"] {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    if let Some(size) = case.get("pad_to_bytes").and_then(Value::as_u64) {
        let pad = size as usize - raw.len();
        raw.push_str(&" ".repeat(pad));
    }
    raw
}

#[test]
fn shared_fixtures_agree_with_their_expected_outcome() {
    let mut valid = 0;
    for (name, case) in fixtures() {
        let raw = raw_document(&case);
        let outcome = ModelContract::from_json_str(&raw, &name);
        if case["valid"].as_bool().unwrap() {
            let contract = outcome.unwrap_or_else(|e| panic!("{name} should be accepted: {e}"));
            let labels: Vec<String> = serde_json::from_value(case["expect"]["labels"].clone()).unwrap();
            assert_eq!(contract.labels, labels, "{name}");
            assert_eq!(contract.preprocess.crop_size as u64, case["expect"]["crop_size"].as_u64().unwrap(), "{name}");
            if let Some(want) = case["expect"].get("preprocess").and_then(Value::as_object) {
                let got = contract::preprocess_to_value(&contract.preprocess);
                for (key, value) in want {
                    let same = match (value.as_array(), got[key].as_array()) {
                        // mean/std: float32 in the pipeline; compare as float32
                        (Some(w), Some(g)) => {
                            w.iter().zip(g).all(|(w, g)| w.as_f64().map(|v| v as f32) == g.as_f64().map(|v| v as f32))
                        }
                        _ => &got[key] == value,
                    };
                    assert!(same, "{name}: preprocess.{key} is {}, expected {value}", got[key]);
                }
            }
            valid += 1;
        } else {
            let error = match outcome {
                Ok(_) => panic!("{name} should be rejected ({})", case["description"]),
                Err(error) => error,
            };
            assert_eq!(error.kind(), ErrorKind::Contract, "{name}");
            let message = error.to_string();
            assert!(message.starts_with(&format!("{name}: ")), "{name}: the message must name the model: {message}");
            if let Some(needle) = case.get("error_contains").and_then(Value::as_str) {
                assert!(message.contains(needle), "{name}: {message:?} should mention {needle:?}");
            }
        }
    }
    assert!(valid >= 3, "too few valid fixtures");
}

#[test]
fn valid_fixtures_survive_a_round_trip_through_to_json() {
    for (name, case) in fixtures().into_iter().filter(|(_, c)| c["valid"] == Value::Bool(true)) {
        let contract = ModelContract::from_json_str(&raw_document(&case), &name).unwrap();
        let again = ModelContract::from_json_str(&contract.to_json(), &name).unwrap();
        assert_eq!(again.to_value(), contract.to_value(), "{name}");
        assert_eq!(again.preprocess, contract.preprocess, "{name}");
    }
}

#[test]
fn defaults_and_written_numbers() {
    let case = fixtures().into_iter().find(|(name, _)| name == "valid_minimal.json").unwrap().1;
    let contract = ModelContract::from_json_str(&raw_document(&case), "m.onnx").unwrap();
    assert_eq!(contract.output_kind, OutputKind::Logits);
    assert_eq!(contract.provenance, serde_json::json!({}));
    assert_eq!(contract.preprocess.max_size, None);
    // mean/std are float32 in the pipeline, but written back with the decimals they were read with.
    let full = fixtures().into_iter().find(|(name, _)| name == "valid_full.json").unwrap().1;
    let contract = ModelContract::from_json_str(&raw_document(&full), "m.onnx").unwrap();
    assert_eq!(contract.preprocess.mean, [0.485f32, 0.456, 0.406]);
    assert_eq!(contract.to_value()["preprocess"]["mean"], serde_json::json!([0.485, 0.456, 0.406]));
    assert_eq!(contract.to_value(), full["document"]);
}

#[test]
fn missing_contract_is_a_contract_error_naming_the_model() {
    let error = ModelContract::from_metadata(None, "butterfly.onnx").unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Contract);
    let message = error.to_string();
    assert!(message.starts_with("butterfly.onnx: "), "{message}");
    assert!(message.contains("no butterfly_onnx contract") && message.contains("labels="), "{message}");
}

#[test]
fn resample_order_table_examples() {
    let table: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_file("python/butterfly_onnx/data/resample_orders.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(table.to_string(), serde_json::from_str::<Value>(contract::RESAMPLE_ORDERS_JSON).unwrap().to_string());
    let examples = table["examples"].as_array().unwrap();
    assert!(examples.len() >= 5);
    for example in examples {
        let (version, order) = (example[0].as_str().unwrap(), example[1].as_str().unwrap());
        assert_eq!(contract::resample_order_for_pillow(version).as_str(), order, "Pillow {version}");
    }
}

fn tensor(entry: &Value) -> TensorInfo {
    TensorInfo {
        name: entry["name"].as_str().unwrap().to_string(),
        // null or a name: a dynamic axis
        dims: entry["shape"].as_array().map(|dims| dims.iter().map(|d| d.as_i64().unwrap_or(-1)).collect()),
        float32: entry["dtype"] == "float32",
    }
}

fn resolve_case(case: &Value, source: &str) -> butterfly_onnx::Result<ModelContract> {
    let raw = match &case["contract"] {
        Value::Null => None,
        Value::String(text) => Some(text.clone()),
        other => Some(other.to_string()),
    };
    let labels: Option<Vec<String>> = serde_json::from_value(case["labels"].clone()).unwrap();
    let preprocess = match &case["preprocess"] {
        Value::Null => None,
        spec => Some(contract::preprocess_from_value(spec, source)?),
    };
    let inputs: Vec<TensorInfo> = case["inputs"].as_array().unwrap().iter().map(tensor).collect();
    let outputs: Vec<TensorInfo> = case["outputs"].as_array().unwrap().iter().map(tensor).collect();
    contract::resolve(raw.as_deref(), labels.as_deref(), preprocess.as_ref(), &inputs, &outputs, source)
}

fn resolve_table() -> Value {
    serde_json::from_str(&std::fs::read_to_string(repo_file("tests/fixtures/resolve/cases.json")).unwrap()).unwrap()
}

/// tests/fixtures/resolve/cases.json, which tests/test_contract.py feeds to contract.py
/// `resolve_contract`: the same effective contract, or the same error class and fragment.
#[test]
fn shared_resolve_cases() {
    let table = resolve_table();
    let source = table["source"].as_str().unwrap();
    let cases = table["cases"].as_array().unwrap();
    assert!(cases.len() >= 40);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        match (resolve_case(case, source), case.get("error")) {
            (Ok(got), None) => {
                let want = &case["expect"];
                let labels: Vec<String> = serde_json::from_value(want["labels"].clone()).unwrap();
                assert_eq!(got.labels, labels, "{name}");
                let spec: PreprocessSpec = contract::preprocess_from_value(&want["preprocess"], name).unwrap();
                assert_eq!(got.preprocess, spec, "{name}");
                assert_eq!(got.input_name, want["input_name"].as_str().unwrap(), "{name}");
                assert_eq!(got.output_name, want["output_name"].as_str().unwrap(), "{name}");
                assert_eq!(got.output_kind.as_str(), want["output_kind"].as_str().unwrap(), "{name}");
            }
            (Ok(_), Some(error)) => panic!("{name}: expected {error}, got a contract"),
            (Err(error), None) => panic!("{name}: expected a contract, got {error}"),
            (Err(error), Some(want)) => {
                // The shared table names the Python class; the Rust kind it stands for:
                let kind = match want["class"].as_str().unwrap() {
                    "ContractError" => ErrorKind::Contract,
                    "InvalidModelError" => ErrorKind::InvalidModel,
                    other => panic!("{name}: unknown error class {other}"),
                };
                assert_eq!(error.kind(), kind, "{name}: {error}");
                let fragment = want["contains"].as_str().unwrap();
                assert!(error.to_string().contains(fragment), "{name}: {error:?} should contain {fragment:?}");
            }
        }
    }
}

#[test]
fn resolve_names_the_model_in_every_error() {
    let table = resolve_table();
    for case in
        table["cases"].as_array().unwrap().iter().filter(|c| c.get("error").is_some() && c["preprocess"].is_null())
    {
        let error = resolve_case(case, "zoo/butterfly.onnx").unwrap_err();
        assert!(error.to_string().starts_with("zoo/butterfly.onnx: "), "{}: {error}", case["name"]);
    }
}

#[test]
fn static_batch_comes_from_the_named_input() {
    let table = resolve_table();
    let case = table["cases"].as_array().unwrap().iter().find(|c| c["name"] == "graph_input_static_batch").unwrap();
    let resolved = resolve_case(case, "m.onnx").unwrap();
    let inputs: Vec<TensorInfo> = case["inputs"].as_array().unwrap().iter().map(tensor).collect();
    assert_eq!(contract::static_batch(&inputs, &resolved), Some(2));
    let dynamic = table["cases"].as_array().unwrap().iter().find(|c| c["name"] == "graph_input_dynamic").unwrap();
    let inputs: Vec<TensorInfo> = dynamic["inputs"].as_array().unwrap().iter().map(tensor).collect();
    assert_eq!(contract::static_batch(&inputs, &resolve_case(dynamic, "m.onnx").unwrap()), None);
}

#[test]
fn specs_built_in_rust_get_the_same_limits() {
    let good =
        contract::preprocess_from_value(&resolve_table()["cases"][0]["contract"]["preprocess"], "m.onnx").unwrap();
    assert!(contract::check_spec(&good).is_ok());
    let mut bad = good.clone();
    bad.crop_size = 1 << 31;
    assert!(contract::check_spec(&bad).unwrap_err().contains("8192"));
    let mut bad = good.clone();
    bad.std = [1e-30, 1.0, 1.0];
    assert!(contract::check_spec(&bad).unwrap_err().contains("std"));
    let mut bad = good.clone();
    bad.mean = [f32::NAN, 0.0, 0.0];
    assert!(contract::check_spec(&bad).unwrap_err().contains("mean"));
    let mut bad = good;
    bad.max_size = Some(100_000);
    assert!(contract::check_spec(&bad).unwrap_err().contains("max_size"));
}
