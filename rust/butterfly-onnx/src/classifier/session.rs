//! The ONNX Runtime side of a classifier: building the session, reading the contract stored
//! in the model, checking the model's input and output against it, and running batches.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ndarray::{s, Array2, Array4, ArrayView4};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::{TensorElementType, TensorRef, ValueType};

use super::ClassifierOptions;
use crate::contract::{self, ModelContract, OutputKind, METADATA_KEY};
use crate::{Error, Result};

/// An ONNX Runtime session with what is needed to feed it: the tensor names and shapes.
pub(super) struct Model {
    session: Mutex<Session>,
    path: PathBuf,
    input_name: String,
    output_name: String,
    crop: usize,
    classes: usize,
    /// `Some(b)` when the model's batch axis is fixed at `b`.
    static_batch: Option<usize>,
}

/// What [`open`] finds in a model file.
pub(super) struct Opened {
    pub model: Model,
    pub contract: ModelContract,
    pub model_contract_json: Option<String>,
}

/// Create the session (`threads` intra-op threads, spinning off), read the contract, apply
/// the overrides of `options` and check the result against the model's input and output.
pub(super) fn open(path: &Path, threads: usize, options: &ClassifierOptions) -> Result<Opened> {
    let session = build_session(path, threads)?;
    let unreadable = |e: ort::Error| Error::InvalidModel { path: path.to_path_buf(), reason: format!("cannot read metadata: {e}") };
    let metadata = session.metadata().map_err(unreadable)?;
    // `custom()` cannot tell an absent key from an empty value; the key list can.
    let model_contract_json =
        if metadata.custom_keys().map_err(unreadable)?.iter().any(|k| k == METADATA_KEY) { metadata.custom(METADATA_KEY) } else { None };
    drop(metadata);
    let contract = resolve_contract(&session, path, model_contract_json.as_deref(), options)?;
    let static_batch = check_model_fits(&session, path, &contract)?;
    let model = Model {
        path: path.to_path_buf(),
        input_name: contract.input_name.clone(),
        output_name: contract.output_name.clone(),
        crop: contract.preprocess.crop_size as usize,
        classes: contract.labels.len(),
        static_batch,
        session: Mutex::new(session),
    };
    Ok(Opened { model, contract, model_contract_json })
}

impl Model {
    pub fn static_batch(&self) -> Option<usize> {
        self.static_batch
    }

    /// The raw output `(N, classes)` of a batch `(N, 3, crop, crop)`, fed to ONNX Runtime
    /// `size` rows at a time (the last piece smaller, or zero-padded to `size` when the
    /// model's batch axis is fixed). Rows are independent, so `size` changes speed only.
    pub fn run(&self, batch: ArrayView4<'_, f32>, size: usize) -> Result<Array2<f32>> {
        let (n, channels, height, width) = batch.dim();
        let crop = self.crop;
        if (channels, height, width) != (3, crop, crop) {
            return Err(Error::InvalidArgument {
                reason: format!("the batch must have shape (N, 3, {crop}, {crop}), got {:?}", batch.shape()),
            });
        }
        if n == 0 {
            return Ok(Array2::zeros((0, self.classes)));
        }
        let size = self.static_batch.unwrap_or(size.clamp(1, n));
        let batch = batch.as_standard_layout();
        if size >= n && self.static_batch.is_none_or(|b| b == n) {
            return self.run_piece(batch.view());
        }
        let mut out = Array2::zeros((n, self.classes));
        let mut padded = None;
        for start in (0..n).step_by(size) {
            let end = (start + size).min(n);
            let piece = batch.slice(s![start..end, .., .., ..]);
            let logits = if end - start < size && self.static_batch.is_some() {
                let padded = padded.get_or_insert_with(|| Array4::<f32>::zeros((size, 3, crop, crop)));
                padded.slice_mut(s![..end - start, .., .., ..]).assign(&piece);
                self.run_piece(padded.view())?
            } else {
                self.run_piece(piece)?
            };
            out.slice_mut(s![start..end, ..]).assign(&logits.slice(s![..end - start, ..]));
        }
        Ok(out)
    }

    /// One `Session::run` (the session sits behind a mutex: `run` needs `&mut`).
    fn run_piece(&self, batch: ArrayView4<'_, f32>) -> Result<Array2<f32>> {
        let failed = |reason: String| Error::Inference { path: self.path.clone(), reason };
        let n = batch.dim().0;
        let input = TensorRef::from_array_view(batch).map_err(|e| failed(e.to_string()))?;
        let mut session = self.session.lock().unwrap_or_else(|e| e.into_inner());
        let outputs = session.run(ort::inputs![self.input_name.as_str() => input]).map_err(|e| failed(e.to_string()))?;
        let output = outputs.get(self.output_name.as_str()).ok_or_else(|| failed(format!("no output named {:?}", self.output_name)))?;
        let array = output.try_extract_array::<f32>().map_err(|e| failed(e.to_string()))?;
        if array.shape() != [n, self.classes] {
            return Err(Error::Contract {
                source_name: self.path.display().to_string(),
                reason: format!("the model output has shape {:?}, but the contract has {} labels", array.shape(), self.classes),
            });
        }
        Ok(array.into_dimensionality::<ndarray::Ix2>().expect("rank checked").to_owned())
    }
}

// ort's builder errors carry the builder back (large); they are turned into strings at once.
#[allow(clippy::result_large_err)]
fn build_session(model_path: &Path, threads: usize) -> Result<Session> {
    let invalid = |reason: String| Error::InvalidModel { path: model_path.to_path_buf(), reason };
    let runtime = |reason: String| Error::RuntimeUnavailable { reason };
    let mut builder = Session::builder()
        .map_err(|e| runtime(e.to_string()))?
        .with_intra_threads(threads)
        .and_then(|b| b.with_inter_threads(1))
        .and_then(|b| b.with_optimization_level(GraphOptimizationLevel::All))
        // ORT's threads spin after each run by default; here the CPU is shared with the
        // decoding pool (which works on the next chunk while the model runs), so they sleep.
        .and_then(|b| b.with_intra_op_spinning(false))
        .and_then(|b| b.with_execution_providers([ort::ep::CPU::default().with_arena_allocator(true).build()]))
        .map_err(|e| runtime(e.to_string()))?;
    builder.commit_from_file(model_path).map_err(|e| invalid(e.to_string()))
}

/// The model's single (non-initializer) input, or an error naming the inputs.
fn single_name(names: Vec<String>, what: &str, model_path: &Path) -> Result<String> {
    match names.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(Error::InvalidModel {
            path: model_path.to_path_buf(),
            reason: format!("expected a single {what}, the model has {names:?}; a contract naming the {what} is needed"),
        }),
    }
}

/// The effective contract: the model's, with explicit labels/preprocess replacing its
/// fields. Without a usable contract in the model (absent, invalid, unknown version), both
/// overrides are required and the names come from the model's single input and output.
fn resolve_contract(session: &Session, model_path: &Path, raw: Option<&str>, options: &ClassifierOptions) -> Result<ModelContract> {
    let source = model_path.display().to_string();
    if let Some(labels) = &options.labels {
        contract::validate_labels(labels, &source)?;
    }
    let from_model = ModelContract::from_metadata(raw, &source);
    let mut contract = match (from_model, &options.labels, &options.preprocess) {
        (Ok(contract), _, _) => contract,
        (Err(_), Some(labels), Some(spec)) => {
            let input = single_name(session.inputs().iter().map(|o| o.name().to_string()).collect(), "input", model_path)?;
            let output = single_name(session.outputs().iter().map(|o| o.name().to_string()).collect(), "output", model_path)?;
            ModelContract::new(labels.clone(), spec.clone(), input, output, OutputKind::Logits, serde_json::Value::Object(Default::default()))?
        }
        (Err(error), _, _) => return Err(error),
    };
    if let Some(labels) = &options.labels {
        contract.labels = labels.clone();
    }
    if let Some(spec) = &options.preprocess {
        contract.preprocess = spec.clone();
    }
    // Overrides get the same checks as a parsed document.
    ModelContract::new(
        contract.labels,
        contract.preprocess,
        contract.input_name,
        contract.output_name,
        contract.output_kind,
        contract.provenance,
    )
    .map_err(|e| match e {
        Error::Contract { reason, .. } => Error::Contract { source_name: source.clone(), reason },
        other => other,
    })
}

/// Check the contract against the model: input `[N, 3, crop, crop]` float32 (any or fixed
/// N), output `[N, classes]` float32. Returns the fixed batch size, if any.
fn check_model_fits(session: &Session, model_path: &Path, contract: &ModelContract) -> Result<Option<usize>> {
    let source = model_path.display().to_string();
    let mismatch = |reason: String| Error::Contract { source_name: source.clone(), reason };
    let unfit = |reason: String| Error::InvalidModel { path: model_path.to_path_buf(), reason };

    let input = session.inputs().iter().find(|o| o.name() == contract.input_name).ok_or_else(|| {
        let names: Vec<&str> = session.inputs().iter().map(|o| o.name()).collect();
        mismatch(format!("the contract names input {:?}, the model has {names:?}", contract.input_name))
    })?;
    let output = session.outputs().iter().find(|o| o.name() == contract.output_name).ok_or_else(|| {
        let names: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
        mismatch(format!("the contract names output {:?}, the model has {names:?}", contract.output_name))
    })?;

    let input_dims = float_tensor_dims(input.dtype())
        .ok_or_else(|| unfit(format!("input {:?} must be a float32 tensor, it is {:?}", contract.input_name, input.dtype())))?;
    let crop = contract.preprocess.crop_size as i64;
    if input_dims.len() != 4 {
        return Err(unfit(format!("input {:?} must be NCHW (rank 4), its shape is {input_dims:?}", contract.input_name)));
    }
    // Dynamic axes (-1) accept anything; fixed ones must match what preprocessing produces.
    for (&dim, want) in input_dims[1..].iter().zip([3, crop, crop]) {
        if dim >= 0 && dim != want {
            return Err(mismatch(format!(
                "input {:?} has shape {input_dims:?}, but the preprocessing produces (N, 3, {crop}, {crop})",
                contract.input_name
            )));
        }
    }
    let output_dims = float_tensor_dims(output.dtype())
        .ok_or_else(|| unfit(format!("output {:?} must be a float32 tensor, it is {:?}", contract.output_name, output.dtype())))?;
    if output_dims.len() != 2 {
        return Err(unfit(format!("output {:?} must be (batch, classes), its shape is {output_dims:?}", contract.output_name)));
    }
    let classes = contract.labels.len() as i64;
    if output_dims[1] >= 0 && output_dims[1] != classes {
        return Err(mismatch(format!("{classes} labels, but the model output {:?} has {} classes", contract.output_name, output_dims[1])));
    }
    Ok((input_dims[0] > 0).then_some(input_dims[0] as usize))
}

/// The dims of a float32 tensor type (-1 for dynamic axes).
fn float_tensor_dims(dtype: &ValueType) -> Option<Vec<i64>> {
    match dtype {
        ValueType::Tensor { ty: TensorElementType::Float32, shape, .. } => Some(shape.iter().copied().collect()),
        _ => None,
    }
}
