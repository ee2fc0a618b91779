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
//! own rayon pool (never rayon's global one), and the model has one ONNX Runtime session
//! per concurrent run ([`pipeline::thread_split`]), each behind a mutex (`run` needs
//! `&mut`): a run takes a free session, or waits for one.
//!
//! Two ways to classify:
//! * one shot: [`Classifier::preprocess`], [`Classifier::run`], [`Classifier::logits`],
//!   [`Classifier::predict`] take a slice and hold the whole batch in memory;
//! * streaming ([`pipeline`]): [`Classifier::predict_stream`] and
//!   [`Classifier::logits_stream`] take any iterator of inputs and decode the next chunk on
//!   the pool while ONNX Runtime runs the current one; memory is bounded by the chunk size,
//!   not by the number of images. Results come in input order, failures in place.
//!
//! Layout: `session.rs` (ONNX Runtime: session, contract check, running batches),
//! `providers.rs` (the execution providers the sessions run on, from
//! `python/butterfly_onnx/data/providers.json`; never a fallback), `batch.rs` (decode +
//! preprocess into a batch tensor), `pipeline.rs` (streaming).

mod batch;
pub mod pipeline;
pub mod providers;
mod session;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use ndarray::{Array2, Array4, ArrayView1, ArrayView2, ArrayView4, Axis};

use crate::contract::{ModelContract, OutputKind};
use crate::decode::{DecodeLimits, JpegDraft, RgbImage};
use crate::preprocess::PreprocessSpec;
use crate::runtime;
use crate::{Error, Result};

pub use pipeline::{ImageResult, LogitsChunk, LogitsStream, Pipeline, PredictStream, MAX_MODEL_BATCH};
pub use providers::Provider;

/// Pillow's decompression-bomb error threshold, `2 * PIL.Image.MAX_IMAGE_PIXELS`
/// (above it `Image.open` raises `DecompressionBombError`); the default limit.
pub const DEFAULT_MAX_IMAGE_PIXELS: u64 = 178_956_970;

/// `max_image_pixels` meaning "no limit" (the CLI's `--max-image-pixels 0`; Python's
/// `max_image_pixels=None` with `PIL.Image.MAX_IMAGE_PIXELS = None`).
pub const NO_PIXEL_LIMIT: u64 = u64::MAX;

/// How to open a [`Classifier`]. `Default` = all cores, the model's own contract, Pillow's
/// pixel limit, and the ONNX Runtime library from the environment (see [`crate::runtime`]).
#[derive(Debug, Clone)]
pub struct ClassifierOptions {
    /// The threads the classifier may use (`None` = `std::thread::available_parallelism()`):
    /// the decoding pool's size, and the ONNX Runtime runs that may go at once times each
    /// run's intra-op threads, as [`pipeline::thread_split`] shares them out.
    pub threads: Option<usize>,
    /// Replace the contract's labels (required, with `preprocess`, for models without one).
    pub labels: Option<Vec<String>>,
    /// Replace the contract's preprocessing.
    pub preprocess: Option<PreprocessSpec>,
    /// `width * height` above this is an `ImageTooLarge` error, checked from the header
    /// before decoding; `None` = Pillow's default ceiling ([`crate::decode::PILLOW_BOMB_PIXELS`],
    /// as the python backend's Pillow), [`NO_PIXEL_LIMIT`] = no limit at all.
    pub max_image_pixels: Option<u64>,
    /// The libonnxruntime file to load (else `BUTTERFLY_ONNX_ORT_LIB` / `ORT_DYLIB_PATH`).
    pub ort_library: Option<PathBuf>,
    /// How many images the streaming pipeline feeds ONNX Runtime per run (`None` = measured
    /// on first use, see [`Classifier::model_batch`]; ignored by a model with a fixed batch).
    pub model_batch: Option<usize>,
    /// JPEG draft mode (opt-in, not torchvision-exact): JPEG files and bytes are decoded at a
    /// reduced DCT scale as Pillow's `im.draft("RGB", request)` does
    /// ([`crate::decode::JpegDraft`], `request` from the contract's resize), then
    /// preprocessed as usual. Other formats and decoded images are unaffected.
    pub jpeg_draft: bool,
    /// The execution providers to run the model on, in priority order ([`providers`]; the
    /// default: the CPU provider). One that the loaded ONNX Runtime lacks, or that fails to
    /// initialise, is an [`Error::ProviderUnavailable`]: never a fallback.
    pub providers: Vec<Provider>,
}

impl Default for ClassifierOptions {
    fn default() -> Self {
        ClassifierOptions {
            threads: None,
            labels: None,
            preprocess: None,
            max_image_pixels: Some(DEFAULT_MAX_IMAGE_PIXELS),
            ort_library: None,
            model_batch: None,
            jpeg_draft: false,
            providers: providers::cpu(),
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
            ImageInput::Path(path) => crate::error::path_name(path),
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
    threads: usize,
    model: session::Model,
    prep: Arc<batch::Preprocessor>,
    pool: rayon::ThreadPool,
    /// Images per ONNX Runtime run in the pipeline: given, or measured once.
    model_batch: OnceLock<usize>,
    /// Intra-op threads per concurrent run ([`pipeline::thread_split`]).
    split_intra: usize,
    /// The providers the sessions use, the CPU provider last ([`providers::in_use`]).
    providers: Vec<String>,
    /// The model that answers near-ties ([`Classifier::with_fallback`]).
    fallback: Option<Fallback>,
}

/// A second model answering the images whose two best outputs are closer than `margin`.
struct Fallback {
    classifier: Arc<Classifier>,
    margin: f64,
    /// Images it has answered so far.
    answered: AtomicUsize,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("model_path", &self.model_path)
            .field("classes", &self.contract.labels.len())
            .field("crop_size", &self.contract.preprocess.crop_size)
            .field("threads", &self.threads)
            .field("providers", &self.providers)
            .finish()
    }
}

impl Classifier {
    /// Open a model: load ONNX Runtime if needed, create the session, read the contract,
    /// apply the overrides and check the contract against the model's input and output.
    ///
    /// Errors: `ModelNotFound`; `InvalidModel` (not ONNX, or no single NCHW float input /
    /// 2-D float output); `Contract` (missing, invalid, unknown version, or inconsistent
    /// with the model); `RuntimeUnavailable`; `ProviderUnavailable` (a provider the runtime
    /// lacks or that fails to initialise); `InvalidArgument` (threads == 0, an unknown
    /// provider or option).
    pub fn open(model_path: impl AsRef<Path>, options: ClassifierOptions) -> Result<Self> {
        let model_path = model_path.as_ref().to_path_buf();
        if !model_path.exists() {
            return Err(Error::ModelNotFound { path: model_path });
        }
        if !model_path.is_file() {
            return Err(Error::InvalidModel { path: model_path, reason: "not a file".into() });
        }
        Self::build(model_path, session::Source::File, options)
    }

    /// [`Self::open`] for a model given as the `.onnx` file's bytes (ONNX Runtime reads it
    /// from memory); `name` stands for the model in errors and in [`Self::model_path`].
    pub fn from_bytes(bytes: &[u8], name: impl Into<PathBuf>, options: ClassifierOptions) -> Result<Self> {
        Self::build(name.into(), session::Source::Bytes(bytes), options)
    }

    fn build(model_path: PathBuf, source: session::Source<'_>, options: ClassifierOptions) -> Result<Self> {
        let threads = match options.threads {
            Some(0) => return Err(Error::InvalidArgument { reason: "threads must be at least 1".into() }),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        if options.model_batch == Some(0) {
            return Err(Error::InvalidArgument { reason: "model_batch must be at least 1".into() });
        }
        providers::check(&options.providers)?;
        runtime::ensure_loaded(options.ort_library.as_deref())?;
        providers::check_available(&options.providers, &providers::available()?)?;
        let model_bytes = match &source {
            session::Source::File => std::fs::metadata(&model_path).map_or(0, |m| m.len()),
            session::Source::Bytes(bytes) => bytes.len() as u64,
        };
        let split = pipeline::thread_split(threads, model_bytes);
        let session::Opened { model, contract, model_contract_json } =
            session::open(&model_path, source, split, &options)?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("butterfly-preprocess-{i}"))
            // A panicking pipeline task must not abort the process (rayon's default for
            // `spawn`); its chunk then fails with an error. Images never panic out of
            // `batch::Preprocessor`, which guards each one.
            .panic_handler(|_| {})
            .build()
            .map_err(|e| Error::InvalidArgument { reason: format!("cannot start {threads} threads: {e}") })?;
        let model_batch = OnceLock::new();
        if let Some(size) = model.static_batch().or(options.model_batch) {
            model_batch.set(size).expect("new cell");
        }
        let prep = Arc::new(batch::Preprocessor {
            spec: contract.preprocess.clone(),
            limits: DecodeLimits {
                max_pixels: options.max_image_pixels,
                jpeg_draft: options.jpeg_draft.then_some(JpegDraft {
                    resize_size: contract.preprocess.resize_size,
                    max_size: contract.preprocess.max_size,
                }),
            },
        });
        let split_intra = split.1;
        let providers = providers::in_use(&options.providers);
        Ok(Classifier {
            model_path,
            contract,
            model_contract_json,
            threads,
            model,
            prep,
            pool,
            model_batch,
            split_intra,
            providers,
            fallback: None,
        })
    }

    /// Answer this model's near-ties with `fallback` (usually the fp32 file an int8 variant was
    /// made from): every image whose two best outputs are less than `margin` apart
    /// ([`near_ties`]) is run again on `fallback`, from the same preprocessed rows, and takes
    /// its output (one that is not finite keeps this model's). `margin` `None`: the
    /// `fallback_margin` this model's contract records (an int8 variant's largest error spread
    /// on its calibration images, written by `export_onnx`; docs/inference.md, "Near-tie
    /// fallback"), as the Python `Classifier(fallback_model=)` does.
    ///
    /// Errors: `Contract` when `fallback` differs in labels, preprocessing or output kind;
    /// `InvalidArgument` for a margin that is not a finite number >= 0, or none given and none
    /// recorded.
    pub fn with_fallback(mut self, fallback: impl Into<Arc<Classifier>>, margin: Option<f64>) -> Result<Self> {
        let fallback = fallback.into();
        let source = crate::error::path_name(&self.model_path);
        let margin = match margin {
            Some(margin) => margin,
            None => match self.contract.provenance.get("fallback_margin") {
                None | Some(serde_json::Value::Null) => {
                    return Err(Error::InvalidArgument {
                        reason: format!(
                            "{source}: records no fallback_margin (an int8 variant written by export_onnx does): \
                             give one"
                        ),
                    })
                }
                Some(value) => value.as_f64().ok_or_else(|| Error::InvalidArgument {
                    reason: format!("{source}: fallback_margin must be a finite number >= 0, got {value}"),
                })?,
            },
        };
        if !margin.is_finite() || margin < 0.0 {
            return Err(Error::InvalidArgument {
                reason: format!("{source}: fallback_margin must be a finite number >= 0, got {margin}"),
            });
        }
        let theirs = fallback.contract();
        for (what, same) in [
            ("labels", self.contract.labels == theirs.labels),
            ("preprocessing", self.contract.preprocess == theirs.preprocess),
            ("output kind", self.contract.output_kind == theirs.output_kind),
        ] {
            if !same {
                return Err(Error::Contract {
                    source_name: crate::error::path_name(fallback.model_path()),
                    reason: format!("its {what} differ from {source}'s, so it cannot answer that model's near-ties"),
                });
            }
        }
        self.fallback = Some(Fallback { classifier: fallback, margin, answered: AtomicUsize::new(0) });
        Ok(self)
    }

    /// The margin below which an image is answered by the fallback model (`None`: no fallback).
    pub fn fallback_margin(&self) -> Option<f64> {
        self.fallback.as_ref().map(|fallback| fallback.margin)
    }

    /// Images the fallback model has answered so far (near-ties whose fallback output was
    /// finite; 0 without one).
    pub fn fallbacks(&self) -> usize {
        self.fallback.as_ref().map_or(0, |fallback| fallback.answered.load(Ordering::Relaxed))
    }

    /// The rows of `logits` (this model's output on `batch`, from [`Self::run`]) that
    /// [`near_ties`] picks, replaced by the fallback model's output on the same rows of `batch`,
    /// where that is finite; nothing without a fallback. [`Self::logits`], the streams and the
    /// server's batcher call it after their run.
    pub fn answer_near_ties(&self, logits: &mut Array2<f32>, batch: ArrayView4<'_, f32>) -> Result<()> {
        let Some(fallback) = &self.fallback else {
            return Ok(());
        };
        // Compared in f32, as the outputs are (and as NumPy compares a float32 gap with a float).
        let rows = near_ties(logits.view(), fallback.margin as f32);
        if rows.is_empty() {
            return Ok(());
        }
        let again = fallback.classifier.run(batch.select(Axis(0), &rows).view())?;
        let mut answered = 0;
        for (&row, output) in rows.iter().zip(again.outer_iter()) {
            if output.iter().all(|v| v.is_finite()) {
                logits.row_mut(row).assign(&output);
                answered += 1;
            }
        }
        fallback.answered.fetch_add(answered, Ordering::Relaxed);
        Ok(())
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

    /// The execution providers the model runs on, in priority order, ONNX Runtime's CPU
    /// provider last (it takes the nodes no other provider does), as onnxruntime's
    /// `get_providers()` lists them.
    pub fn providers(&self) -> &[String] {
        &self.providers
    }

    /// How `threads` is shared out ([`pipeline::thread_split`], module docs "Threads"):
    /// `(concurrent ONNX Runtime runs, intra-op threads per run)`.
    pub fn thread_split(&self) -> (usize, usize) {
        (self.model.runs(), self.split_intra)
    }

    /// Whether JPEGs are decoded in draft mode ([`ClassifierOptions::jpeg_draft`]).
    pub fn jpeg_draft(&self) -> bool {
        self.prep.limits.jpeg_draft.is_some()
    }

    /// The model's fixed batch size, when its batch axis is not dynamic.
    pub fn static_batch(&self) -> Option<usize> {
        self.model.static_batch()
    }

    /// How many images the streaming pipeline gives ONNX Runtime per run: the model's fixed
    /// batch, else `ClassifierOptions::model_batch`, else chosen on first use by the rule of
    /// [`pipeline`] (the smallest power of two whose run takes at least
    /// [`pipeline::RUN_TARGET`], at most [`MAX_MODEL_BATCH`]).
    pub fn model_batch(&self) -> usize {
        *self.model_batch.get_or_init(|| pipeline::measure_model_batch(self))
    }

    /// Decode and preprocess images in parallel, each written straight into its row of the
    /// batch. Returns the rows of the images that succeeded, in input order, shape
    /// `(n_ok, 3, crop, crop)`, and the failures by input index. `Err(InvalidArgument)` when
    /// the batch tensor cannot be allocated (use fewer images per call).
    pub fn preprocess(&self, items: &[ImageInput]) -> Result<(Array4<f32>, ImageErrors)> {
        if items.len() <= 1 {
            return self.prep.batch(items);
        }
        self.pool.install(|| self.prep.batch(items))
    }

    /// Run the model on a preprocessed batch `(N, 3, crop, crop)`: the raw output `(N, classes)`.
    /// The batch is split evenly over the concurrent runs of [`Self::thread_split`] (one
    /// piece when there is one run), except for a model exported with a fixed batch size,
    /// which is fed in pieces of that size (the last one zero-padded).
    pub fn run(&self, batch: ArrayView4<'_, f32>) -> Result<Array2<f32>> {
        self.model.run(batch, usize::MAX)
    }

    /// [`Self::run`] in pieces of `size` rows (the pipeline's model batch).
    pub(crate) fn run_in_pieces(&self, batch: ArrayView4<'_, f32>, size: usize) -> Result<Array2<f32>> {
        self.model.run(batch, size)
    }

    /// The probabilities of one output row: softmax, unless the contract says the model
    /// already outputs probabilities.
    pub fn probabilities(&self, row: ArrayView1<'_, f32>) -> Vec<f32> {
        match self.contract.output_kind {
            OutputKind::Logits => softmax(&row.to_vec()),
            OutputKind::Probabilities => row.to_vec(),
        }
    }

    /// The `k` best classes of one output row, best first.
    pub fn top_k(&self, row: ArrayView1<'_, f32>, k: usize) -> Vec<Prediction> {
        top_k_of(&self.probabilities(row), &self.contract.labels, k)
    }

    /// [`Self::preprocess`] then [`Self::run`] on the images that decoded; a row holding NaN
    /// or infinity is that image's [`Error::NonFiniteOutput`], not a row.
    pub fn logits(&self, items: &[ImageInput]) -> Result<(Array2<f32>, ImageErrors)> {
        let (batch, errors) = self.preprocess(items)?;
        let mut logits = self.run(batch.view())?;
        self.answer_near_ties(&mut logits, batch.view())?;
        Ok(split_non_finite(logits, errors, 0, items.len(), |i| items[i].source()))
    }

    /// The top-k classes of each image that decoded, best first, as (input index,
    /// predictions); softmax over the output unless the contract says it already holds
    /// probabilities.
    pub fn predict(&self, items: &[ImageInput], top_k: usize) -> Result<(ImagePredictions, ImageErrors)> {
        let (logits, errors) = self.logits(items)?;
        let failed: std::collections::HashSet<usize> = errors.iter().map(|(i, _)| *i).collect();
        let ok_indices = (0..items.len()).filter(|i| !failed.contains(i));
        let predictions =
            ok_indices.zip(logits.outer_iter()).map(|(index, row)| (index, self.top_k(row, top_k))).collect();
        Ok((predictions, errors))
    }

    /// Stream the top-k of every input, in input order, failures in place: decoding runs
    /// `chunk_size` images ahead of ONNX Runtime on the classifier's pool, so memory is
    /// bounded by the chunk, not by the inputs. A model failure ends the stream with one
    /// `Err`. `chunk_size` 0 is an `InvalidArgument` error.
    pub fn predict_stream<I>(
        &self,
        inputs: I,
        top_k: usize,
        chunk_size: usize,
    ) -> Result<PredictStream<&Self, I::IntoIter>>
    where
        I: IntoIterator<Item = ImageInput>,
    {
        Ok(PredictStream::new(LogitsStream::new(self, inputs, chunk_size)?, top_k))
    }

    /// The raw model output, a chunk of `chunk_size` inputs at a time, pipelined as
    /// [`Self::predict_stream`].
    pub fn logits_stream<I>(&self, inputs: I, chunk_size: usize) -> Result<LogitsStream<&Self, I::IntoIter>>
    where
        I: IntoIterator<Item = ImageInput>,
    {
        LogitsStream::new(self, inputs, chunk_size)
    }
}

/// Moves the rows of `logits` that hold NaN or infinity into `errors` as
/// [`Error::NonFiniteOutput`]: `logits` has one row per input of `start..start + count` not
/// in `errors` (indices in the caller's numbering), `source(i)` names input `i`. Errors
/// come back sorted by index.
pub(crate) fn split_non_finite(
    logits: Array2<f32>,
    mut errors: ImageErrors,
    start: usize,
    count: usize,
    source: impl Fn(usize) -> String,
) -> (Array2<f32>, ImageErrors) {
    let finite: Vec<bool> = logits.outer_iter().map(|row| row.iter().all(|v| v.is_finite())).collect();
    if finite.iter().all(|&ok| ok) {
        return (logits, errors);
    }
    let failed: std::collections::HashSet<usize> = errors.iter().map(|(i, _)| *i).collect();
    let decoded: Vec<usize> = (start..start + count).filter(|i| !failed.contains(i)).collect();
    let mut keep = Vec::new();
    for (row, (&index, &ok)) in decoded.iter().zip(&finite).enumerate() {
        if ok {
            keep.push(row);
        } else {
            errors.push((index, Error::NonFiniteOutput { source_name: source(index) }));
        }
    }
    errors.sort_by_key(|(i, _)| *i);
    (logits.select(ndarray::Axis(0), &keep), errors)
}

/// The rows of `outputs` whose two best values differ by less than `margin` (in f32): the
/// answers a model whose error moves two classes by up to `margin` could have swapped (the
/// Python rule: `_backends/__init__.py::near_ties`). Rows that are not all finite are never
/// picked (they become errors); no rows when there are fewer than two classes.
pub fn near_ties(outputs: ArrayView2<'_, f32>, margin: f32) -> Vec<usize> {
    if outputs.ncols() < 2 {
        return Vec::new();
    }
    let close = |row: ArrayView1<'_, f32>| {
        if !row.iter().all(|v| v.is_finite()) {
            return false;
        }
        let (mut best, mut second) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
        for &value in row {
            if value > best {
                (best, second) = (value, best);
            } else if value > second {
                second = value;
            }
        }
        best - second < margin
    };
    outputs.outer_iter().enumerate().filter(|(_, row)| close(row.view())).map(|(index, _)| index).collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_rows_become_errors_in_place() {
        // Inputs 10..16 of a stream; 11 and 14 failed to decode, so the 4 rows are 10, 12, 13, 15.
        let logits = ndarray::array![[1.0, 2.0], [f32::NAN, 0.0], [3.0, 4.0], [f32::NEG_INFINITY, 1.0]];
        let errors = vec![
            (11, Error::ImageNotFound { source_name: "i11".into() }),
            (14, Error::ImageNotFound { source_name: "i14".into() }),
        ];
        let (kept, errors) = split_non_finite(logits, errors, 10, 6, |i| format!("i{i}"));
        assert_eq!(kept, ndarray::array![[1.0, 2.0], [3.0, 4.0]]);
        let found: Vec<(usize, ErrorKindName)> = errors.iter().map(|(i, e)| (*i, name(e))).collect();
        assert_eq!(
            found,
            [(11, "ImageNotFound"), (12, "NonFiniteOutput"), (14, "ImageNotFound"), (15, "NonFiniteOutput")]
        );
        assert_eq!(errors[1].1.to_string(), "i12: the model's output is not finite (NaN or infinity), no prediction");
        // All finite: untouched.
        let (kept, errors) = split_non_finite(ndarray::array![[0.5f32]], Vec::new(), 0, 1, |i| format!("i{i}"));
        assert_eq!((kept, errors.len()), (ndarray::array![[0.5f32]], 0));
    }

    #[test]
    fn near_ties_are_the_rows_whose_best_two_are_closer_than_the_margin() {
        let outputs = ndarray::array![
            [0.0, 1.0, 0.95],      // gap 0.05
            [2.0, 0.0, 1.0],       // gap 1.0
            [3.0, 3.0, -1.0],      // a tie: gap 0
            [f32::NAN, 0.0, 0.01], // not finite: an error, never re-run
            [0.5, 0.2, 0.7]        // gap 0.2
        ];
        assert_eq!(near_ties(outputs.view(), 0.1), [0, 2]);
        assert_eq!(near_ties(outputs.view(), 0.2000001), [0, 2, 4]);
        assert_eq!(near_ties(outputs.view(), 0.0), Vec::<usize>::new());
        assert_eq!(near_ties(outputs.view(), 1e9), [0, 1, 2, 4]);
        assert_eq!(near_ties(ndarray::array![[1.0f32], [2.0]].view(), 1e9), Vec::<usize>::new());
    }

    type ErrorKindName = &'static str;

    fn name(error: &Error) -> ErrorKindName {
        match error.kind() {
            crate::ErrorKind::ImageNotFound => "ImageNotFound",
            crate::ErrorKind::NonFiniteOutput => "NonFiniteOutput",
            _ => "other",
        }
    }
}
