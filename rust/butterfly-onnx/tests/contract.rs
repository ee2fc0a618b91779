//! The Rust contract reader against the shared fixtures in tests/fixtures/contracts/, which
//! tests/test_contract.py feeds to the Python reader: both must accept and reject exactly
//! the same documents.

use std::path::PathBuf;

use butterfly_onnx::contract::{ModelContract, OutputKind};
use serde_json::Value;

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

/// The metadata value as a model would carry it: the document itself when it is a string
/// (invalid JSON, duplicated keys, Infinity), else its JSON text.
fn raw_document(case: &Value) -> String {
    match &case["document"] {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
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
            valid += 1;
        } else {
            let error = match outcome {
                Ok(_) => panic!("{name} should be rejected ({})", case["description"]),
                Err(error) => error,
            };
            assert_eq!(error.kind(), "ContractError", "{name}");
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
    assert_eq!(error.kind(), "ContractError");
    let message = error.to_string();
    assert!(message.starts_with("butterfly.onnx: "), "{message}");
    assert!(message.contains("no butterfly_onnx contract") && message.contains("labels="), "{message}");
}
