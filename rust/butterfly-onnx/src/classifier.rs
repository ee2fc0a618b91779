//! The classifier: an ONNX Runtime session plus the model contract, with batched,
//! parallel decoding and preprocessing.
//!
//! ```no_run
//! use butterfly_onnx::classifier::{Classifier, ClassifierOptions, ImageInput};
//! let classifier = Classifier::open("model.onnx", ClassifierOptions::default())?;
//! let (predictions, errors) = classifier.predict(&[ImageInput::path("photo.jpg")], 5)?;
//! for p in &predictions[0].1 {
//!     println!("{} {:.3}", p.label, p.probability);
//! }
//! # Ok::<(), butterfly_onnx::Error>(())
//! ```
//!
//! One `Classifier` may be shared by many threads: preprocessing runs on the classifier's
//! own rayon pool (never rayon's global one), and the session, whose `run` needs `&mut`,
//! sits behind a mutex, so inference calls take turns while decoding overlaps.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ndarray::{Array2, Array4, ArrayView4};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::{TensorElementType, TensorRef, ValueType};
use rayon::prelude::*;

use crate::contract::{self, ModelContract, OutputKind, METADATA_KEY};
use crate::decode::{self, DecodeLimits, RgbImage};
use crate::preprocess::{self, ImageView, PreprocessSpec};
use crate::runtime;
use crate::{Error, Result};

/// Pillow's decompression-bomb error threshold, `2 * PIL.Image.MAX_IMAGE_PIXELS`
/// (above it `Image.open` raises `DecompressionBombError`); the default limit.
pub const DEFAULT_MAX_IMAGE_PIXELS: u64 = 178_956_970;

/// How to open a [`Classifier`]. `Default` = all cores, the model's own contract, Pillow's
/// pixel limit, and the ONNX Runtime library from the environment (see [`crate::runtime`]).
#[derive(Debug, Clone)]
pub struct ClassifierOptions {
    /// Bounds both the preprocessing pool and ONNX Runtime's intra-op threads
    /// (`None` = `std::thread::available_parallelism()`).
    pub threads: Option<usize>,
    /// Replace the contract's labels (required, with `preprocess`, for models without one).
    pub labels: Option<Vec<String>>,
    /// Replace the contract's preprocessing.
    pub preprocess: Option<PreprocessSpec>,
    /// `width * height` above this is an `ImageTooLarge` error, checked from the header
    /// before decoding; `None` = unlimited.
    pub max_image_pixels: Option<u64>,
    /// The libonnxruntime file to load (else `BUTTERFLY_ONNX_ORT_LIB` / `ORT_DYLIB_PATH`).
    pub ort_library: Option<PathBuf>,
}

impl Default for ClassifierOptions {
    fn default() -> Self {
        ClassifierOptions {
            threads: None,
            labels: None,
            preprocess: None,
            max_image_pixels: Some(DEFAULT_MAX_IMAGE_PIXELS),
            ort_library: None,
        }
    }
}

/// One image to classify. `source` names it in error messages.
#[derive(Debug, Clone)]
pub enum ImageInput {
    /// An image file, decoded like `PIL.Image.open(path).convert("RGB")`.
    Path(PathBuf),
    /// An encoded image file's bytes.
    Bytes { source: String, bytes: Vec<u8> },
    /// Already decoded RGB8 pixels (row-major, HxWx3).
    Rgb { source: String, image: RgbImage },
}

impl ImageInput {
    pub fn path(path: impl Into<PathBuf>) -> Self {
        ImageInput::Path(path.into())
    }

    /// The name used for this input in error messages.
    pub fn source(&self) -> String {
        match self {
            ImageInput::Path(path) => path.display().to_string(),
            ImageInput::Bytes { source, .. } | ImageInput::Rgb { source, .. } => source.clone(),
        }
    }
}

/// One of the top-k classes of an image.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub label: String,
    pub index: usize,
    pub probability: f32,
}

/// Per-image failures: (index in the input list, error); the other images still come back.
pub type ImageErrors = Vec<(usize, Error)>;

/// The top-k of each image that decoded: (index in the input list, best first).
pub type ImagePredictions = Vec<(usize, Vec<Prediction>)>;

pub struct Classifier {
    model_path: PathBuf,
    contract: ModelContract,
    /// The contract JSON stored in the model, verbatim (`None` when absent).
    model_contract_json: Option<String>,
    /// `Some(b)` when the model's batch dimension is fixed at `b`.
    static_batch: Option<usize>,
    threads: usize,
    limits: DecodeLimits,
    session: Mutex<Session>,
    pool: rayon::ThreadPool,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("model_path", &self.model_path)
            .field("classes", &self.contract.labels.len())
            .field("crop_size", &self.contract.preprocess.crop_size)
            .field("threads", &self.threads)
            .finish()
    }
}

impl Classifier {
    /// Open a model: load ONNX Runtime if needed, create the session, read the contract,
    /// apply the overrides and check the contract against the model's input and output.
    ///
    /// Errors: `ModelNotFound`; `InvalidModel` (not ONNX, or no single NCHW float input /
    /// 2-D float output); `Contract` (missing, invalid, unknown version, or inconsistent
    /// with the model); `RuntimeUnavailable`; `InvalidArgument` (threads == 0).
    pub fn open(model_path: impl AsRef<Path>, options: ClassifierOptions) -> Result<Self> {
        let model_path = model_path.as_ref().to_path_buf();
        if !model_path.exists() {
            return Err(Error::ModelNotFound { path: model_path });
        }
        if !model_path.is_file() {
            return Err(Error::InvalidModel { path: model_path, reason: "not a file".into() });
        }
        let threads = match options.threads {
            Some(0) => return Err(Error::InvalidArgument { reason: "threads must be at least 1".into() }),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        runtime::ensure_loaded(options.ort_library.as_deref())?;
        let session = build_session(&model_path, threads)?;

        let unreadable = |e: ort::Error| Error::InvalidModel { path: model_path.clone(), reason: format!("cannot read metadata: {e}") };
        let metadata = session.metadata().map_err(unreadable)?;
        // `custom()` cannot tell an absent key from an empty value; the key list can.
        let model_contract_json =
            if metadata.custom_keys().map_err(unreadable)?.iter().any(|k| k == METADATA_KEY) { metadata.custom(METADATA_KEY) } else { None };
        drop(metadata);
        let contract = resolve_contract(&session, &model_path, model_contract_json.as_deref(), &options)?;
        let static_batch = check_model_fits(&session, &model_path, &contract)?;

        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("butterfly-preprocess-{i}"))
            .build()
            .map_err(|e| Error::InvalidArgument { reason: format!("cannot start {threads} threads: {e}") })?;
        Ok(Classifier {
            model_path,
            contract,
            model_contract_json,
            static_batch,
            threads,
            limits: DecodeLimits { max_pixels: options.max_image_pixels },
            session: Mutex::new(session),
            pool,
        })
    }

    /// The effective contract (the model's, with the explicit overrides applied).
    pub fn contract(&self) -> &ModelContract {
        &self.contract
    }

    /// The contract JSON stored in the model, verbatim (`None` when the model has none).
    pub fn model_contract_json(&self) -> Option<&str> {
        self.model_contract_json.as_deref()
    }

    pub fn labels(&self) -> &[String] {
        &self.contract.labels
    }

    pub fn model_path(&self) -> &Path {
        &self.model_path
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The model's fixed batch size, when its batch axis is not dynamic.
    pub fn static_batch(&self) -> Option<usize> {
        self.static_batch
    }

    /// Decode and preprocess images in parallel, each written straight into its row of the
    /// batch. Returns the rows of the images that succeeded, in input order, shape
    /// `(n_ok, 3, crop, crop)`, and the failures by input index.
    pub fn preprocess(&self, items: &[ImageInput]) -> (Array4<f32>, ImageErrors) {
        let crop = self.contract.preprocess.crop_size as usize;
        let row_len = 3 * crop * crop;
        let mut data = vec![0f32; items.len() * row_len];
        let spec = &self.contract.preprocess;
        let limits = &self.limits;
        let outcomes: Vec<Result<()>> = self.pool.install(|| {
            data.par_chunks_mut(row_len.max(1))
                .zip(items.par_iter())
                .map(|(row, item)| {
                    // A panic in a decoder must not take the batch (or the Python process)
                    // down: it becomes this image's error.
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| preprocess_one(item, spec, limits, row)))
                        .unwrap_or_else(|panic| {
                            let what = panic
                                .downcast_ref::<&str>()
                                .map(|s| s.to_string())
                                .or_else(|| panic.downcast_ref::<String>().cloned())
                                .unwrap_or_else(|| "unknown panic".into());
                            Err(Error::ImageDecode { source_name: item.source(), reason: format!("internal error: {what}") })
                        })
                })
                .collect()
        });
        let mut errors = Vec::new();
        let mut kept = 0;
        for (index, outcome) in outcomes.into_iter().enumerate() {
            match outcome {
                Ok(()) => {
                    if kept != index {
                        data.copy_within(index * row_len..(index + 1) * row_len, kept * row_len);
                    }
                    kept += 1;
                }
                Err(error) => errors.push((index, error)),
            }
        }
        data.truncate(kept * row_len);
        let batch = Array4::from_shape_vec((kept, 3, crop, crop), data).expect("rows of 3*crop*crop floats");
        (batch, errors)
    }

    /// Run the model on a preprocessed batch `(N, 3, crop, crop)`: the raw output `(N, classes)`.
    pub fn run(&self, batch: ArrayView4<'_, f32>) -> Result<Array2<f32>> {
        let crop = self.contract.preprocess.crop_size as usize;
        let (n, channels, height, width) = batch.dim();
        if (channels, height, width) != (3, crop, crop) {
            return Err(Error::InvalidArgument {
                reason: format!("the batch must have shape (N, 3, {crop}, {crop}), got {:?}", batch.shape()),
            });
        }
        let classes = self.contract.labels.len();
        if n == 0 {
            return Ok(Array2::zeros((0, classes)));
        }
        let batch = batch.as_standard_layout();
        let mut session = self.session.lock().unwrap_or_else(|e| e.into_inner());
        match self.static_batch {
            None => self.run_chunk(&mut session, batch.view(), n),
            Some(size) => {
                // A fixed batch axis: feed chunks of exactly `size` rows, zero-padding the last.
                let mut out = Array2::zeros((n, classes));
                let mut start = 0;
                while start < n {
                    let end = (start + size).min(n);
                    let logits = if end - start == size {
                        self.run_chunk(&mut session, batch.slice(ndarray::s![start..end, .., .., ..]), size)?
                    } else {
                        let mut padded = Array4::<f32>::zeros((size, 3, crop, crop));
                        padded.slice_mut(ndarray::s![..end - start, .., .., ..]).assign(&batch.slice(ndarray::s![start..end, .., .., ..]));
                        self.run_chunk(&mut session, padded.view(), size)?
                    };
                    out.slice_mut(ndarray::s![start..end, ..]).assign(&logits.slice(ndarray::s![..end - start, ..]));
                    start = end;
                }
                Ok(out)
            }
        }
    }

    fn run_chunk(&self, session: &mut Session, batch: ArrayView4<'_, f32>, n: usize) -> Result<Array2<f32>> {
        let failed = |reason: String| Error::Inference { path: self.model_path.clone(), reason };
        let input = TensorRef::from_array_view(batch).map_err(|e| failed(e.to_string()))?;
        let outputs = session
            .run(ort::inputs![self.contract.input_name.as_str() => input])
            .map_err(|e| failed(e.to_string()))?;
        let output = outputs
            .get(self.contract.output_name.as_str())
            .ok_or_else(|| failed(format!("no output named {:?}", self.contract.output_name)))?;
        let array = output.try_extract_array::<f32>().map_err(|e| failed(e.to_string()))?;
        let classes = self.contract.labels.len();
        if array.shape() != [n, classes] {
            return Err(Error::Contract {
                source_name: self.model_path.display().to_string(),
                reason: format!(
                    "the model output has shape {:?}, but the contract has {classes} labels",
                    array.shape()
                ),
            });
        }
        Ok(array.into_dimensionality::<ndarray::Ix2>().expect("rank checked").to_owned())
    }

    /// [`Self::preprocess`] then [`Self::run`] on the images that decoded.
    pub fn logits(&self, items: &[ImageInput]) -> Result<(Array2<f32>, ImageErrors)> {
        let (batch, errors) = self.preprocess(items);
        let logits = self.run(batch.view())?;
        Ok((logits, errors))
    }

    /// The top-k classes of each image that decoded, best first, as (input index,
    /// predictions); softmax over the output unless the contract says it already holds
    /// probabilities.
    pub fn predict(&self, items: &[ImageInput], top_k: usize) -> Result<(ImagePredictions, ImageErrors)> {
        let (logits, errors) = self.logits(items)?;
        let failed: std::collections::HashSet<usize> = errors.iter().map(|(i, _)| *i).collect();
        let ok_indices = (0..items.len()).filter(|i| !failed.contains(i));
        let predictions = ok_indices
            .zip(logits.outer_iter())
            .map(|(index, row)| {
                let probabilities = match self.contract.output_kind {
                    OutputKind::Logits => softmax(row.as_slice().expect("standard layout")),
                    OutputKind::Probabilities => row.to_vec(),
                };
                (index, top_k_of(&probabilities, &self.contract.labels, top_k))
            })
            .collect();
        Ok((predictions, errors))
    }
}

/// Numerically stable softmax, accumulated in f64.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let exps: Vec<f64> = logits.iter().map(|&v| (v as f64 - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.iter().map(|e| (e / sum) as f32).collect()
}

/// The `k` best classes, highest probability first; ties keep the lower class index first.
pub fn top_k_of(probabilities: &[f32], labels: &[String], k: usize) -> Vec<Prediction> {
    let mut order: Vec<usize> = (0..probabilities.len()).collect();
    order.sort_by(|&a, &b| probabilities[b].total_cmp(&probabilities[a]).then(a.cmp(&b)));
    order
        .into_iter()
        .take(k)
        .map(|index| Prediction { label: labels[index].clone(), index, probability: probabilities[index] })
        .collect()
}

fn preprocess_one(item: &ImageInput, spec: &PreprocessSpec, limits: &DecodeLimits, row: &mut [f32]) -> Result<()> {
    let decoded;
    let (source, image) = match item {
        ImageInput::Path(path) => {
            decoded = decode::read_rgb(path, limits)?;
            (path.display().to_string(), &decoded)
        }
        ImageInput::Bytes { source, bytes } => {
            decoded = decode::decode_rgb(bytes, source, limits)?;
            (source.clone(), &decoded)
        }
        ImageInput::Rgb { source, image } => {
            let expected = image.width as u64 * image.height as u64 * 3;
            if image.width == 0 || image.height == 0 || image.data.len() as u64 != expected {
                return Err(Error::ImageDecode {
                    source_name: source.clone(),
                    reason: format!(
                        "an RGB image of {}x{} needs {expected} bytes (> 0), got {}",
                        image.width,
                        image.height,
                        image.data.len()
                    ),
                });
            }
            (source.clone(), image)
        }
    };
    let view = ImageView { width: image.width, height: image.height, data: &image.data };
    preprocess::preprocess_into(view, spec, row).map_err(|e| match e {
        // Preprocessing errors name the image they are about.
        Error::InvalidArgument { reason } => Error::ImageDecode { source_name: source, reason },
        other => other,
    })
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
        // preprocessing pool, so they should sleep instead.
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
fn resolve_contract(
    session: &Session,
    model_path: &Path,
    raw: Option<&str>,
    options: &ClassifierOptions,
) -> Result<ModelContract> {
    let source = model_path.display().to_string();
    if let Some(labels) = &options.labels {
        contract::validate_labels(labels, &source)?;
    }
    let from_model = ModelContract::from_metadata(raw, &source);
    let mut contract = match (from_model, &options.labels, &options.preprocess) {
        (Ok(contract), _, _) => contract,
        (Err(_), Some(labels), Some(spec)) => {
            let input = single_name(session.inputs().iter().map(|o| o.name().to_string()).collect(), "input", model_path)?;
            let output =
                single_name(session.outputs().iter().map(|o| o.name().to_string()).collect(), "output", model_path)?;
            ModelContract::new(
                labels.clone(),
                spec.clone(),
                input,
                output,
                OutputKind::Logits,
                serde_json::Value::Object(Default::default()),
            )?
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

    let input_dims = float_tensor_dims(input.dtype()).ok_or_else(|| {
        unfit(format!("input {:?} must be a float32 tensor, it is {:?}", contract.input_name, input.dtype()))
    })?;
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
    let output_dims = float_tensor_dims(output.dtype()).ok_or_else(|| {
        unfit(format!("output {:?} must be a float32 tensor, it is {:?}", contract.output_name, output.dtype()))
    })?;
    if output_dims.len() != 2 {
        return Err(unfit(format!(
            "output {:?} must be (batch, classes), its shape is {output_dims:?}",
            contract.output_name
        )));
    }
    let classes = contract.labels.len() as i64;
    if output_dims[1] >= 0 && output_dims[1] != classes {
        return Err(mismatch(format!(
            "{classes} labels, but the model output {:?} has {} classes",
            contract.output_name, output_dims[1]
        )));
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
