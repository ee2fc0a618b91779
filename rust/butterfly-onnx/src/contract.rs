//! The model contract: the JSON document an exported model carries in its ONNX
//! `metadata_props` under [`METADATA_KEY`] (schema in docs/contract.md).
//!
//! This is the only Rust reader of it. It mirrors `python/butterfly_onnx/contract.py`
//! (`ModelContract.from_dict`, `PreprocessSpec.from_dict`) field by field and check by check;
//! the shared fixtures in `tests/fixtures/contracts/` prove that both accept and reject the
//! same documents. The document is parsed into a `serde_json::Value` first and validated by
//! hand (not with `#[derive(Deserialize)]`) so that the rules, defaults and messages follow
//! the Python reader exactly: e.g. unknown top-level keys are allowed but unknown
//! `preprocess` keys are not, and a duplicated key keeps its last value, as `json.loads` does.

use serde_json::{Map, Value};

use crate::preprocess::{Interpolation, PreprocessSpec, ResampleOrder};
use crate::{Error, Result};

/// The only schema version this reader understands.
pub const SCHEMA_VERSION: u32 = 1;
/// The ONNX `metadata_props` key that holds the contract JSON.
pub const METADATA_KEY: &str = "butterfly_onnx";
/// Interpolation names (torchvision `InterpolationMode` values).
pub const INTERPOLATIONS: [&str; 2] = ["bilinear", "bicubic"];
/// Pillow pass-order rules (see contract.py `RESAMPLE_ORDERS`).
pub const RESAMPLE_ORDERS: [&str; 3] = ["pillow_12_1", "pillow_12_2", "pillow_13"];

// Limits: the same constants as contract.py (MAX_SIZE, MEAN_RANGE, STD_RANGE, MAX_DEPTH,
// MAX_DOCUMENT_BYTES); the shared fixtures pin them. docs/contract.md#limits.

/// `resize_size`, `crop_size` and `max_size` are integers in `1..=MAX_SIZE` (a crop of 8192
/// is already 805 MB of float32 per image).
pub const MAX_SIZE: u32 = 8192;
/// Each `mean` entry lies in this closed range, each `std` entry in [`STD_RANGE`], so that
/// `(pixel - mean) / std` stays within +-1e6 for pixels in [0, 1]: never inf or NaN.
pub const MEAN_RANGE: (f64, f64) = (-1000.0, 1000.0);
pub const STD_RANGE: (f64, f64) = (1e-3, 1000.0);
/// The contract JSON nests at most this many arrays/objects (the top-level object is 1);
/// checked by a scan before parsing, so serde_json's own recursion limit (128) is never hit.
pub const MAX_DEPTH: usize = 64;
/// The contract JSON is at most this many bytes.
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// What the model's output holds: raw logits (softmax applied for probabilities) or
/// probabilities already (used as they are).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    Logits,
    Probabilities,
}

impl OutputKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OutputKind::Logits => "logits",
            OutputKind::Probabilities => "probabilities",
        }
    }
}

/// Everything needed to run an exported classifier (schema version 1).
#[derive(Debug, Clone)]
pub struct ModelContract {
    pub labels: Vec<String>,
    pub preprocess: PreprocessSpec,
    pub input_name: String,
    pub output_name: String,
    pub output_kind: OutputKind,
    /// Free-form JSON object (architecture, weights, versions, metrics).
    pub provenance: Value,
    pub schema_version: u32,
}

/// A validation failure, before the caller's source name is attached.
type Check<T> = std::result::Result<T, String>;

impl ModelContract {
    /// Parse the metadata value (a JSON string). `source` names the model in errors.
    pub fn from_json_str(raw: &str, source: &str) -> Result<Self> {
        let data = parse_json(raw, "the butterfly_onnx contract")
            .map_err(|reason| Error::Contract { source_name: source.to_string(), reason })?;
        Self::from_value(&data, source)
    }

    /// Read the contract from a model's metadata lookup (`None` when the key is absent).
    pub fn from_metadata(raw: Option<&str>, source: &str) -> Result<Self> {
        match raw {
            Some(raw) => Self::from_json_str(raw, source),
            None => Err(missing_contract(source)),
        }
    }

    /// Validate an already-parsed document (contract.py `ModelContract.from_dict`).
    pub fn from_value(data: &Value, source: &str) -> Result<Self> {
        contract_from_value(data).map_err(|reason| invalid(source, &reason))
    }

    /// A contract built from explicit parts (for models without one); validated like a
    /// parsed document.
    pub fn new(
        labels: Vec<String>,
        preprocess: PreprocessSpec,
        input_name: String,
        output_name: String,
        output_kind: OutputKind,
        provenance: Value,
    ) -> Result<Self> {
        let contract = ModelContract {
            labels,
            preprocess,
            input_name,
            output_name,
            output_kind,
            provenance,
            schema_version: SCHEMA_VERSION,
        };
        contract.validate().map_err(|reason| invalid("<contract>", &reason))?;
        Ok(contract)
    }

    /// The checks of contract.py `ModelContract.__post_init__` on fields set in Rust.
    fn validate(&self) -> Check<()> {
        check_labels(&self.labels)?;
        check_spec(&self.preprocess)?;
        if self.input_name.is_empty() {
            return Err("input_name must be a non-empty string".into());
        }
        if self.output_name.is_empty() {
            return Err("output_name must be a non-empty string".into());
        }
        if !self.provenance.is_object() {
            return Err("provenance must be an object".into());
        }
        Ok(())
    }

    pub fn num_classes(&self) -> usize {
        self.labels.len()
    }

    /// The document as contract.py `ModelContract.to_dict` writes it.
    pub fn to_value(&self) -> Value {
        serde_json::json!({
            "schema_version": self.schema_version,
            "labels": self.labels,
            "preprocess": preprocess_to_value(&self.preprocess),
            "input": {"name": self.input_name, "layout": "NCHW", "dtype": "float32"},
            "output": {"name": self.output_name, "kind": self.output_kind.as_str()},
            "provenance": self.provenance,
        })
    }

    /// Compact JSON of [`Self::to_value`].
    pub fn to_json(&self) -> String {
        self.to_value().to_string()
    }
}

/// Parse a `preprocess` object on its own (used for explicit overrides).
pub fn preprocess_from_value(data: &Value, source: &str) -> Result<PreprocessSpec> {
    spec_from_value(data).map_err(|reason| invalid(source, &reason))
}

/// Parse a `preprocess` object given as JSON text (`PreprocessSpec.to_dict()` in Python).
pub fn preprocess_from_json_str(raw: &str, source: &str) -> Result<PreprocessSpec> {
    let data = parse_json(raw, "preprocess").map_err(|reason| invalid(source, &reason))?;
    preprocess_from_value(&data, source)
}

/// Parse contract JSON text within the documented limits (size, then nesting depth), as
/// contract.py `_loads` does. The message says what failed, without the source.
fn parse_json(raw: &str, what: &str) -> Check<Value> {
    if raw.len() > MAX_DOCUMENT_BYTES {
        return Err(format!("{what} is {} bytes, more than the limit of {MAX_DOCUMENT_BYTES}", raw.len()));
    }
    if !nesting_depth_ok(raw.as_bytes()) {
        return Err(format!("{what} nests deeper than {MAX_DEPTH} levels"));
    }
    serde_json::from_str(raw).map_err(|e| format!("{what} is not valid JSON: {e}"))
}

/// True when no point of `text` is inside more than [`MAX_DEPTH`] arrays/objects (brackets
/// inside strings do not count): a linear scan, the same as contract.py `_nesting_depth_ok`.
fn nesting_depth_ok(text: &[u8]) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &byte in text {
        if in_string {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
        } else {
            match byte {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return false;
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    true
}

/// The effective-contract rule's view of one graph input or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// The dimensions, -1 (any negative) for a dynamic axis; `None` when unknown (not a tensor).
    pub dims: Option<Vec<i64>>,
    /// Whether the element type is float32.
    pub float32: bool,
}

/// The effective contract of a model: the one rule both backends follow (contract.py
/// `resolve_contract` is the Python one; `tests/fixtures/resolve/cases.json` holds the
/// cases both are tested against).
///
/// 1. Explicit `labels` are checked (an explicit `preprocess` too).
/// 2. The model's contract (`raw`: the metadata value, `None` when absent) is read; explicit
///    `labels` / `preprocess` replace its fields. A missing or unreadable contract is a
///    `Contract` error, unless both are given (a foreign model): then the names are the
///    model's single input and output (else `InvalidModel`) and the output kind is logits.
/// 3. The result is checked against the graph: the named input and output exist
///    (`Contract`); the input is float32 and rank 4 (`InvalidModel`) with `3, crop, crop`
///    where static (`Contract`); the output is float32 and rank 2 (`InvalidModel`) with
///    `labels.len()` classes where static (`Contract`).
///
/// Nothing is filled in from defaults. Every error names `source`.
pub fn resolve(
    raw: Option<&str>,
    labels: Option<&[String]>,
    preprocess: Option<&PreprocessSpec>,
    inputs: &[TensorInfo],
    outputs: &[TensorInfo],
    source: &str,
) -> Result<ModelContract> {
    let contract_error = |reason: String| Error::Contract { source_name: source.to_string(), reason };
    let unfit = |reason: String| Error::InvalidModel { path: std::path::PathBuf::from(source), reason };
    if let Some(labels) = labels {
        check_labels(labels).map_err(|reason| contract_error(format!("labels: {reason}")))?;
    }
    if let Some(spec) = preprocess {
        check_spec(spec).map_err(|reason| contract_error(format!("preprocess: {reason}")))?;
    }
    let mut contract = match (ModelContract::from_metadata(raw, source), labels, preprocess) {
        (Ok(contract), _, _) => contract,
        (Err(_), Some(labels), Some(spec)) => {
            let (input, output) = match (inputs, outputs) {
                ([input], [output]) => (input.name.clone(), output.name.clone()),
                _ => {
                    return Err(unfit(format!(
                        "without a usable contract the model must have exactly one input and one output, \
                         it has inputs [{}] and outputs [{}]",
                        port_names(inputs),
                        port_names(outputs)
                    )))
                }
            };
            ModelContract::new(
                labels.to_vec(),
                spec.clone(),
                input,
                output,
                OutputKind::Logits,
                Value::Object(Map::new()),
            )
            .map_err(|e| match e {
                Error::Contract { reason, .. } => contract_error(reason),
                other => other,
            })?
        }
        (Err(error), _, _) => return Err(error),
    };
    if let Some(labels) = labels {
        contract.labels = labels.to_vec();
    }
    if let Some(spec) = preprocess {
        contract.preprocess = spec.clone();
    }

    let input = inputs.iter().find(|p| p.name == contract.input_name).ok_or_else(|| {
        contract_error(format!(
            "the contract names input '{}', the model has [{}]",
            contract.input_name,
            port_names(inputs)
        ))
    })?;
    let output = outputs.iter().find(|p| p.name == contract.output_name).ok_or_else(|| {
        contract_error(format!(
            "the contract names output '{}', the model has [{}]",
            contract.output_name,
            port_names(outputs)
        ))
    })?;
    if !input.float32 {
        return Err(unfit(format!("input '{}' must be a float32 tensor", contract.input_name)));
    }
    let crop = contract.preprocess.crop_size as i64;
    let input_dims = match &input.dims {
        Some(dims) if dims.len() == 4 => dims,
        other => {
            return Err(unfit(format!(
                "input '{}' must be NCHW (rank 4), its shape is {}",
                contract.input_name,
                show_dims(other.as_deref())
            )))
        }
    };
    for (&dim, want) in input_dims[1..].iter().zip([3, crop, crop]) {
        if dim >= 0 && dim != want {
            return Err(contract_error(format!(
                "input '{}' has shape {}, but the preprocessing produces (N, 3, {crop}, {crop})",
                contract.input_name,
                show_dims(Some(input_dims))
            )));
        }
    }
    if !output.float32 {
        return Err(unfit(format!("output '{}' must be a float32 tensor", contract.output_name)));
    }
    let output_dims = match &output.dims {
        Some(dims) if dims.len() == 2 => dims,
        other => {
            return Err(unfit(format!(
                "output '{}' must be (batch, classes), its shape is {}",
                contract.output_name,
                show_dims(other.as_deref())
            )))
        }
    };
    let classes = contract.labels.len() as i64;
    if output_dims[1] >= 0 && output_dims[1] != classes {
        return Err(contract_error(format!(
            "{classes} labels, but the model output '{}' has {} classes",
            contract.output_name, output_dims[1]
        )));
    }
    Ok(contract)
}

/// `'a', 'b'`: the names of graph inputs or outputs, as contract.py lists them.
fn port_names(ports: &[TensorInfo]) -> String {
    ports.iter().map(|p| format!("'{}'", p.name)).collect::<Vec<_>>().join(", ")
}

/// The fixed batch size of the contract's input, if its first axis is static.
pub fn static_batch(inputs: &[TensorInfo], contract: &ModelContract) -> Option<usize> {
    let input = inputs.iter().find(|p| p.name == contract.input_name)?;
    let first = *input.dims.as_ref()?.first()?;
    (first > 0).then_some(first as usize)
}

/// A shape as contract.py `_dims` writes it: `[-1, 3, 224, 224]`, dynamic axes as -1.
fn show_dims(dims: Option<&[i64]>) -> String {
    match dims {
        None => "unknown".into(),
        Some(dims) => {
            let parts: Vec<String> = dims.iter().map(|d| if *d >= 0 { d.to_string() } else { "-1".into() }).collect();
            format!("[{}]", parts.join(", "))
        }
    }
}

/// The JSON table `python/butterfly_onnx/data/resample_orders.json` (also read by contract.py).
pub const RESAMPLE_ORDERS_JSON: &str = include_str!("../../../python/butterfly_onnx/data/resample_orders.json");

/// The `resample_order` rule of a Pillow version (`"13.0.0"`), from [`RESAMPLE_ORDERS_JSON`]:
/// the first entry whose `from` `[major, minor]` is at most the version's (contract.py
/// `current_resample_order`). Each version piece counts by its leading digits.
pub fn resample_order_for_pillow(version: &str) -> ResampleOrder {
    let leading = |piece: Option<&str>| -> u64 {
        let digits: String = piece.unwrap_or("").chars().take_while(|c| c.is_ascii_digit()).collect();
        digits.parse().unwrap_or(0)
    };
    let mut pieces = version.split('.');
    let have = (leading(pieces.next()), leading(pieces.next()));
    let table: Value = serde_json::from_str(RESAMPLE_ORDERS_JSON).expect("resample_orders.json is valid JSON");
    for entry in table["orders"].as_array().expect("resample_orders.json has orders") {
        let since = (entry["from"][0].as_u64().unwrap_or(0), entry["from"][1].as_u64().unwrap_or(0));
        if have >= since {
            return match entry["order"].as_str() {
                Some("pillow_12_1") => ResampleOrder::Pillow12_1,
                Some("pillow_12_2") => ResampleOrder::Pillow12_2,
                Some("pillow_13") => ResampleOrder::Pillow13,
                other => panic!("resample_orders.json: unknown order {other:?}"),
            };
        }
    }
    ResampleOrder::Pillow12_1
}

/// Validate an explicit label list (non-empty, non-empty strings, unique).
pub fn validate_labels(labels: &[String], source: &str) -> Result<()> {
    check_labels(labels).map_err(|reason| invalid(source, &reason))
}

/// A `preprocess` object as contract.py `PreprocessSpec.to_dict` writes it.
pub fn preprocess_to_value(spec: &PreprocessSpec) -> Value {
    serde_json::json!({
        "resize_size": spec.resize_size,
        "crop_size": spec.crop_size,
        "interpolation": interpolation_name(spec.interpolation),
        "max_size": spec.max_size,
        "mean": spec.mean.map(f32_to_json),
        "std": spec.std.map(f32_to_json),
        "resample_order": resample_order_name(spec.resample_order),
    })
}

pub fn interpolation_name(interpolation: Interpolation) -> &'static str {
    match interpolation {
        Interpolation::Bilinear => "bilinear",
        Interpolation::Bicubic => "bicubic",
    }
}

pub fn resample_order_name(order: ResampleOrder) -> &'static str {
    match order {
        ResampleOrder::Pillow12_1 => "pillow_12_1",
        ResampleOrder::Pillow12_2 => "pillow_12_2",
        ResampleOrder::Pillow13 => "pillow_13",
    }
}

/// mean/std are float32 in the pipeline (torchvision converts them first); write the
/// shortest decimal that reads back as the same f32 ("0.485", not 0.48500001430511475),
/// so a round trip through Python gives back the numbers the contract was written with.
fn f32_to_json(value: f32) -> Value {
    let shortest: f64 = format!("{value}").parse().unwrap_or(value as f64);
    serde_json::Number::from_f64(shortest).map_or(Value::Null, Value::Number)
}

pub(crate) fn missing_contract(source: &str) -> Error {
    Error::Contract {
        source_name: source.to_string(),
        reason: format!(
            "the model carries no butterfly_onnx contract (metadata key '{METADATA_KEY}'); export it \
             with butterfly_onnx.export_onnx, add one with 'butterfly-onnx annotate MODEL --labels \
             LABELS.txt [--resize ... --crop ...]' (the Python package's command), or (Python) pass \
             labels= and preprocess= explicitly"
        ),
    }
}

fn invalid(source: &str, reason: &str) -> Error {
    Error::Contract { source_name: source.to_string(), reason: format!("invalid butterfly_onnx contract: {reason}") }
}

/// Python-like rendering of a JSON value inside messages.
fn show(value: &Value) -> String {
    match value {
        Value::String(s) => format!("'{s}'"),
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        other => other.to_string(),
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// The nesting limit on an already-parsed value (iterative), as contract.py `_value_depth_ok`.
fn value_depth_ok(value: &Value) -> bool {
    let mut stack = vec![(value, 1usize)];
    while let Some((item, depth)) = stack.pop() {
        let children: Vec<&Value> = match item {
            Value::Array(items) => items.iter().collect(),
            Value::Object(map) => map.values().collect(),
            _ => continue,
        };
        if depth > MAX_DEPTH {
            return false;
        }
        stack.extend(children.into_iter().map(|child| (child, depth + 1)));
    }
    true
}

fn contract_from_value(data: &Value) -> Check<ModelContract> {
    let data_value = data;
    let data = data.as_object().ok_or("the contract must be a JSON object")?;
    if !value_depth_ok(data_value) {
        return Err(format!("the contract nests deeper than {MAX_DEPTH} levels"));
    }
    // JSON integer 1 only: `true` and `1.0` are not a schema version.
    let version = data.get("schema_version");
    let version_ok = version.and_then(Value::as_u64) == Some(SCHEMA_VERSION as u64);
    if !version_ok {
        return Err(format!(
            "unsupported contract schema_version {} (this butterfly_onnx reads version {SCHEMA_VERSION}); \
             upgrade butterfly_onnx or re-export the model",
            version.map_or("None".into(), show)
        ));
    }
    for key in ["labels", "preprocess", "input", "output"] {
        if !data.contains_key(key) {
            return Err(format!("the contract is missing '{key}'"));
        }
    }
    let (Some(input), Some(output)) = (data["input"].as_object(), data["output"].as_object()) else {
        return Err("input and output must be objects".into());
    };
    let layout_ok = input.get("layout").is_none_or(|v| v == "NCHW");
    let dtype_ok = input.get("dtype").is_none_or(|v| v == "float32");
    if !layout_ok || !dtype_ok {
        return Err("input must be NCHW float32".into());
    }
    let labels = data["labels"].as_array().ok_or("labels must be a list of strings")?;
    let labels = labels_from_values(labels)?;
    let provenance = data.get("provenance").cloned().unwrap_or_else(|| Value::Object(Map::new()));
    if !provenance.is_object() {
        return Err("provenance must be an object".into());
    }
    let preprocess = spec_from_value(&data["preprocess"])?;
    let input_name = non_empty_string(input.get("name"), "input_name")?;
    let output_name = non_empty_string(output.get("name"), "output_name")?;
    let output_kind = match output.get("kind") {
        None => OutputKind::Logits,
        Some(v) if v == "logits" => OutputKind::Logits,
        Some(v) if v == "probabilities" => OutputKind::Probabilities,
        Some(v) => return Err(format!("output.kind must be 'logits' or 'probabilities', got {}", show(v))),
    };
    Ok(ModelContract {
        labels,
        preprocess,
        input_name,
        output_name,
        output_kind,
        provenance,
        schema_version: SCHEMA_VERSION,
    })
}

fn labels_from_values(values: &[Value]) -> Check<Vec<String>> {
    let mut labels = Vec::with_capacity(values.len());
    for value in values {
        match value.as_str() {
            Some(s) => labels.push(s.to_string()),
            None => return Err("labels must be non-empty strings".into()),
        }
    }
    check_labels(&labels)?;
    Ok(labels)
}

fn check_labels(labels: &[String]) -> Check<()> {
    if labels.is_empty() {
        return Err("labels must not be empty".into());
    }
    if labels.iter().any(String::is_empty) {
        return Err("labels must be non-empty strings".into());
    }
    // A newline or escape code in a label would break every text output (one line per
    // image) and could drive a terminal; is_control is Unicode's Cc, as Python's check.
    if let Some(label) = labels.iter().find(|l| l.chars().any(|c| c.is_control() || c == '\u{2028}' || c == '\u{2029}'))
    {
        return Err(format!("labels must not contain control characters (newline, tab, escape...); got {label:?}"));
    }
    let mut seen = std::collections::BTreeMap::<&str, usize>::new();
    for label in labels {
        *seen.entry(label).or_default() += 1;
    }
    let repeated: Vec<String> = seen.iter().filter(|(_, n)| **n > 1).map(|(l, _)| format!("'{l}'")).collect();
    if !repeated.is_empty() {
        return Err(format!("labels must be unique; repeated: [{}]", repeated.join(", ")));
    }
    Ok(())
}

fn non_empty_string(value: Option<&Value>, name: &str) -> Check<String> {
    match value.and_then(Value::as_str) {
        Some(s) if !s.is_empty() => Ok(s.to_string()),
        _ => Err(format!("{name} must be a non-empty string")),
    }
}

const SPEC_FIELDS: [&str; 7] =
    ["resize_size", "crop_size", "interpolation", "max_size", "mean", "std", "resample_order"];
const SPEC_REQUIRED: [&str; 6] = ["crop_size", "interpolation", "mean", "resample_order", "resize_size", "std"];

fn spec_from_value(data: &Value) -> Check<PreprocessSpec> {
    let data = data.as_object().ok_or_else(|| format!("preprocess must be an object, got {}", type_name(data)))?;
    let missing: Vec<String> =
        SPEC_REQUIRED.iter().filter(|k| !data.contains_key(**k)).map(|k| format!("'{k}'")).collect();
    if !missing.is_empty() {
        return Err(format!("preprocess is missing [{}]", missing.join(", ")));
    }
    let mut unknown: Vec<String> =
        data.keys().filter(|k| !SPEC_FIELDS.contains(&k.as_str())).map(|k| format!("'{k}'")).collect();
    if !unknown.is_empty() {
        unknown.sort();
        return Err(format!("preprocess has unknown fields [{}]", unknown.join(", ")));
    }
    // The checks, in this order, are contract.py `PreprocessSpec.__post_init__`'s.
    let resize_size = size(&data["resize_size"], "resize_size")?;
    let crop_size = size(&data["crop_size"], "crop_size")?;
    let max_size = match data.get("max_size") {
        None | Some(Value::Null) => None,
        Some(v) => Some(size(v, "max_size")?),
    };
    check_max_size(max_size, resize_size)?;
    let mean = triple(&data["mean"], "mean", MEAN_RANGE)?;
    let std = triple(&data["std"], "std", STD_RANGE)?;
    let interpolation = match data["interpolation"].as_str() {
        Some("bilinear") => Interpolation::Bilinear,
        Some("bicubic") => Interpolation::Bicubic,
        _ => {
            return Err(format!(
                "preprocess.interpolation must be one of ('bilinear', 'bicubic'), got {}",
                show(&data["interpolation"])
            ))
        }
    };
    let resample_order = match data["resample_order"].as_str() {
        Some("pillow_12_1") => ResampleOrder::Pillow12_1,
        Some("pillow_12_2") => ResampleOrder::Pillow12_2,
        Some("pillow_13") => ResampleOrder::Pillow13,
        _ => {
            return Err(format!(
                "preprocess.resample_order must be one of ('pillow_12_1', 'pillow_12_2', 'pillow_13'), got {}",
                show(&data["resample_order"])
            ))
        }
    };
    let spec = PreprocessSpec { resize_size, crop_size, interpolation, max_size, mean, std, resample_order };
    check_spec(&spec)?;
    Ok(spec)
}

fn check_max_size(max_size: Option<u32>, resize_size: u32) -> Check<()> {
    match max_size {
        Some(max_size) if max_size <= resize_size => Err(format!(
            "preprocess.max_size ({max_size}) must be greater than resize_size ({resize_size}), as torchvision requires"
        )),
        _ => Ok(()),
    }
}

/// The one validator of a [`PreprocessSpec`] built in Rust (the JSON reader checks the same
/// rules on the document, before the float32 conversion): sizes in `1..=MAX_SIZE`,
/// `max_size > resize_size`, `mean` in [`MEAN_RANGE`], `std` in [`STD_RANGE`]. The message
/// says what is wrong, without a source; `preprocess::preprocess_into` uses it too.
pub fn check_spec(spec: &PreprocessSpec) -> std::result::Result<(), String> {
    let sizes =
        [("resize_size", Some(spec.resize_size)), ("crop_size", Some(spec.crop_size)), ("max_size", spec.max_size)];
    for (name, value) in sizes {
        if let Some(value) = value {
            if !(1..=MAX_SIZE).contains(&value) {
                return Err(format!("preprocess.{name} must be a positive integer <= {MAX_SIZE}, got {value}"));
            }
        }
    }
    check_max_size(spec.max_size, spec.resize_size)?;
    for (name, values, (low, high)) in [("mean", spec.mean, MEAN_RANGE), ("std", spec.std, STD_RANGE)] {
        if !values.iter().all(|&v| (v as f64).is_finite() && low <= v as f64 && v as f64 <= high) {
            return Err(format!("preprocess.{name} must be 3 finite numbers in [{low}, {high}], got {values:?}"));
        }
    }
    Ok(())
}

/// A JSON integer in `1..=MAX_SIZE` (`true`, `224.0` and `"224"` are not integers).
fn size(value: &Value, name: &str) -> Check<u32> {
    match value.as_u64() {
        Some(n) if (1..=MAX_SIZE as u64).contains(&n) => Ok(n as u32),
        _ => Err(format!("preprocess.{name} must be a positive integer <= {MAX_SIZE}, got {}", show(value))),
    }
}

/// Three JSON numbers (not strings, not booleans) within `low..=high`, as float32.
fn triple(value: &Value, name: &str, (low, high): (f64, f64)) -> Check<[f32; 3]> {
    let problem = || format!("preprocess.{name} must be 3 finite numbers in [{low}, {high}], got {}", show(value));
    let numbers: Option<Vec<f64>> = value.as_array().and_then(|items| items.iter().map(Value::as_f64).collect());
    let numbers = match numbers {
        Some(n) if n.len() == 3 => n,
        _ => return Err(problem()),
    };
    // Bounds on the double (as contract.py); within them the float32 value torchvision's
    // Normalize uses is finite too.
    if !numbers.iter().all(|&v| v.is_finite() && low <= v && v <= high) {
        return Err(problem());
    }
    Ok([numbers[0] as f32, numbers[1] as f32, numbers[2] as f32])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc() -> Value {
        serde_json::json!({
            "schema_version": 1,
            "labels": ["a", "b"],
            "preprocess": {"resize_size": 256, "crop_size": 224, "interpolation": "bilinear",
                           "max_size": null, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                           "resample_order": "pillow_13"},
            "input": {"name": "input", "layout": "NCHW", "dtype": "float32"},
            "output": {"name": "logits", "kind": "logits"},
            "provenance": {"arch": "x"}
        })
    }

    #[test]
    fn round_trip_keeps_the_written_decimals() {
        let contract = ModelContract::from_value(&doc(), "m.onnx").unwrap();
        assert_eq!(contract.to_value(), doc());
    }

    #[test]
    fn values_built_in_rust_get_the_nesting_limit() {
        let mut deep = serde_json::json!({});
        for _ in 0..MAX_DEPTH {
            deep = serde_json::json!({ "n": deep });
        }
        let mut d = doc();
        d["provenance"] = deep;
        let err = ModelContract::from_value(&d, "m.onnx").unwrap_err();
        assert!(err.to_string().contains("nests deeper than 64"), "{err}");
        assert!(nesting_depth_ok(b"[[\"[[[[\\\"[[[\"]]"));
        assert!(!nesting_depth_ok("[".repeat(MAX_DEPTH + 1).as_bytes()));
        assert!(nesting_depth_ok("[".repeat(MAX_DEPTH).as_bytes()));
    }

    #[test]
    fn schema_version_must_be_the_integer_one() {
        for bad in [serde_json::json!(2), serde_json::json!(true), serde_json::json!(1.0), serde_json::json!("1")] {
            let mut d = doc();
            d["schema_version"] = bad;
            let err = ModelContract::from_value(&d, "m.onnx").unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Contract);
            assert!(err.to_string().starts_with("m.onnx: "), "{err}");
            assert!(err.to_string().contains("schema_version"), "{err}");
        }
    }
}
