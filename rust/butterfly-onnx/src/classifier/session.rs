//! The ONNX Runtime side of a classifier: building the session, reading the contract stored
//! in the model (resolved and checked against the graph by [`contract::resolve`]), and
//! running batches.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ndarray::{s, Array2, Array4, ArrayView4};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::{TensorElementType, TensorRef, ValueType};

use super::ClassifierOptions;
use crate::contract::{self, ModelContract, TensorInfo, METADATA_KEY};
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

/// Where the model comes from: a file, or the file's bytes (`path` then only names it).
pub(super) enum Source<'a> {
    File,
    Bytes(&'a [u8]),
}

/// Create the session (`threads` intra-op threads, spinning off), read the contract, apply
/// the overrides of `options` and check the result against the model's input and output.
pub(super) fn open(path: &Path, source: Source<'_>, threads: usize, options: &ClassifierOptions) -> Result<Opened> {
    let session = build_session(path, source, threads)?;
    let unreadable =
        |e: ort::Error| Error::InvalidModel { path: path.to_path_buf(), reason: format!("cannot read metadata: {e}") };
    let metadata = session.metadata().map_err(unreadable)?;
    // `custom()` cannot tell an absent key from an empty value; the key list can.
    let model_contract_json = if metadata.custom_keys().map_err(unreadable)?.iter().any(|k| k == METADATA_KEY) {
        metadata.custom(METADATA_KEY)
    } else {
        None
    };
    drop(metadata);
    let inputs: Vec<TensorInfo> = session.inputs().iter().map(|o| tensor_info(o.name(), o.dtype())).collect();
    let outputs: Vec<TensorInfo> = session.outputs().iter().map(|o| tensor_info(o.name(), o.dtype())).collect();
    let contract = contract::resolve(
        model_contract_json.as_deref(),
        options.labels.as_deref(),
        options.preprocess.as_ref(),
        &inputs,
        &outputs,
        &path.display().to_string(),
    )?;
    let static_batch = contract::static_batch(&inputs, &contract);
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
                if padded.is_none() {
                    let zeros = super::batch::alloc_batch(size, crop)?;
                    padded =
                        Some(Array4::from_shape_vec((size, 3, crop, crop), zeros).expect("size*3*crop*crop floats"));
                }
                let padded = padded.as_mut().expect("allocated above");
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
        let outputs =
            session.run(ort::inputs![self.input_name.as_str() => input]).map_err(|e| failed(e.to_string()))?;
        let output = outputs
            .get(self.output_name.as_str())
            .ok_or_else(|| failed(format!("no output named {:?}", self.output_name)))?;
        let array = output.try_extract_array::<f32>().map_err(|e| failed(e.to_string()))?;
        if array.shape() != [n, self.classes] {
            return Err(Error::Contract {
                source_name: self.path.display().to_string(),
                reason: format!(
                    "the model output has shape {:?}, but the contract has {} labels",
                    array.shape(),
                    self.classes
                ),
            });
        }
        Ok(array.into_dimensionality::<ndarray::Ix2>().expect("rank checked").to_owned())
    }
}

// ort's builder errors carry the builder back (large); they are turned into strings at once.
#[allow(clippy::result_large_err)]
fn build_session(model_path: &Path, source: Source<'_>, threads: usize) -> Result<Session> {
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
    match source {
        Source::File => builder.commit_from_file(model_path),
        Source::Bytes(bytes) => builder.commit_from_memory(bytes),
    }
    .map_err(|e| invalid(e.to_string()))
}

/// What `contract::resolve` needs to know about one input or output of the graph.
fn tensor_info(name: &str, dtype: &ValueType) -> TensorInfo {
    match dtype {
        ValueType::Tensor { ty, shape, .. } => TensorInfo {
            name: name.to_string(),
            dims: Some(shape.iter().copied().collect()),
            float32: *ty == TensorElementType::Float32,
        },
        _ => TensorInfo { name: name.to_string(), dims: None, float32: false },
    }
}
