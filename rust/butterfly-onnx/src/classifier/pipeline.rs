//! Streaming, pipelined prediction: the next chunk of images is decoded and preprocessed on
//! the classifier's rayon pool while ONNX Runtime runs the current chunk.
//!
//! ```no_run
//! use butterfly_onnx::classifier::{Classifier, ClassifierOptions, ImageInput};
//! let classifier = Classifier::open("model.onnx", ClassifierOptions::default())?;
//! let files = std::fs::read_dir("photos")?.map(|e| ImageInput::Path(e.unwrap().path()));
//! for result in classifier.predict_stream(files, 5, 32)? {
//!     let result = result?; // Err only when the model itself fails
//!     match &result.outcome {
//!         Ok(top) => println!("{}\t{} ({:.4})", result.source, top[0].label, top[0].probability),
//!         Err(error) => eprintln!("{error}"),
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # How it runs
//!
//! Inputs are taken from the iterator a *chunk* at a time (`chunk_size` images: what is
//! decoded and held at once). A chunk is decoded as one task on the classifier's pool
//! (its images spread over the pool's threads, each written into its row of the chunk's
//! tensor). As soon as chunk *k* is decoded, chunk *k + 1* is taken from the iterator and
//! its decoding starts, and then ONNX Runtime runs chunk *k* (on the calling thread and, with
//! several concurrent runs, scoped helper threads; see "Threads"). So at
//! most two chunks are alive: the one being run and the one being decoded (the queue
//! between decoding and the model holds one chunk), and memory is bounded by the chunk
//! size, not by the number of images. Results come back chunk by chunk in input order;
//! an image that fails is reported in its place and the others go on.
//!
//! # The model's batch
//!
//! ONNX Runtime does not see the decode chunk: it is fed [`Classifier::model_batch`] rows
//! per run. On CPUs the time per image often *grows* with the batch once activations fall
//! out of cache (EfficientNet-Lite0 on a 2-core VM: 5.7 ms per image at batch 1, 6.1 at 4,
//! 7.6 at 32), and a larger batch also grows ONNX Runtime's memory arena; only the fixed
//! cost of a run (tens of microseconds) favours large batches, and only for small models.
//! So the rule is: the smallest power of two whose run takes at least [`RUN_TARGET`]
//! (4 ms), judged from the fastest of three runs of one image (after a warm-up run), at most
//! [`MAX_MODEL_BATCH`]. It is applied once per classifier, on first use. EfficientNet-Lite0
//! and larger models get 1 (a single image takes over 4 ms here), a tiny test model 32. A
//! model with a fixed batch axis uses that batch; `ClassifierOptions::model_batch` fixes it.
//! Rows are independent, so the model batch changes speed only, never results.
//!
//! # Threads
//!
//! `threads = N` is the one knob: what the classifier may use in all. It is shared out by
//! [`thread_split`], the same rule in both Python backends:
//!
//! * decoding and preprocessing: the classifier's rayon pool, `N` threads;
//! * inference: `runs = min(N, MAX_CONCURRENT_RUNS, SESSION_MEMORY_BUDGET / model file size)`
//!   (at least 1) ONNX Runtime runs at once, each on its own session with `max(1, N / runs)`
//!   intra-op threads (so `N = 2`: two concurrent runs of one thread each; `N = 8`: four runs
//!   of two; a 100 MB ResNet-50 at `N = 8`: two runs of four, a 330 MB ViT-B: one of eight).
//!
//! The constants (4 runs, 256 MiB; and the model batch's 4 ms and 32) are read from
//! [`THREAD_RULE_JSON`], the file the python backend reads too.
//!
//! So at most `2N` threads are busy at once: `N` decoding the next chunk while `runs x
//! intra = N` (or fewer) run the model. Decoding a 224x224 JPEG is about a tenth of a small
//! model's run, so a stream keeps about `N` cores busy, a little more on large photos.
//!
//! Why concurrent runs rather than one run with `N` intra-op threads: on a small model one
//! run scales poorly over threads (its layers are too small to split well; EfficientNet-Lite0
//! on the 2-core VM: 5.7 ms per image on one thread, 5.35 on two), while two runs of one
//! thread each are independent and come close to twice one thread's throughput when the
//! cores are free. The chunk's model-batch pieces (see above) are dealt to the runs as they
//! finish, so results keep their order. The cost: a copy of the weights per extra session
//! (Lite0: 18 MB; bounded by [`SESSION_MEMORY_BUDGET`], 256 MiB, counted as the `.onnx`
//! file's size; external weight files are not counted) and one image's latency on fewer
//! threads. One session cannot serve concurrent runs here: `ort`'s `Session::run` takes
//! `&mut self`, its authors holding ONNX Runtime's `Run` not thread-safe (the python backend,
//! where onnxruntime documents it as thread-safe, shares one session when runs have one
//! intra-op thread). Decoding and the runs
//! are both busy while the pipeline is full and share the cores through the OS scheduler,
//! which is why ONNX Runtime's threads are built with spinning off
//! (`with_intra_op_spinning(false)`): an idle ORT thread sleeps instead of burning the core a
//! decoder could use. Neither uses rayon's global pool, and ORT's threads are never rayon
//! threads. Only `N <= 2` was measured (a 2-core VM); above it the cap keeps the memory of the
//! sessions bounded.

use std::collections::VecDeque;
use std::ops::Deref;
use std::sync::{mpsc, Arc, LazyLock};
use std::time::{Duration, Instant};

use ndarray::{Array2, Array4};

use super::{batch::Preprocessor, Classifier, ImageErrors, ImageInput, Prediction};
use crate::{Error, Result};

/// The constants of the thread rule and the model-batch rule, one file for both backends:
/// `data/thread_rule.json` (`python/butterfly_onnx/data/`, also read by `butterfly_onnx._backends`).
pub const THREAD_RULE_JSON: &str = include_str!("../../data/thread_rule.json");

/// The fields of [`THREAD_RULE_JSON`].
#[derive(Debug, serde::Deserialize)]
struct ThreadRule {
    max_concurrent_runs: usize,
    session_memory_budget_mib: u64,
    max_model_batch: usize,
    run_target_seconds: f64,
}

static RULE: LazyLock<ThreadRule> = LazyLock::new(|| {
    let rule: ThreadRule = serde_json::from_str(THREAD_RULE_JSON).expect("thread_rule.json has the rule's fields");
    assert!(rule.max_concurrent_runs >= 1 && rule.max_model_batch >= 1, "thread_rule.json: counts must be >= 1");
    assert!(rule.run_target_seconds.is_finite() && rule.run_target_seconds >= 0.0, "thread_rule.json: run target");
    rule
});

/// At most this many ONNX Runtime runs at once (each with its own session).
pub static MAX_CONCURRENT_RUNS: LazyLock<usize> = LazyLock::new(|| RULE.max_concurrent_runs);

/// The model copies of the concurrent runs' sessions together stay within this many bytes
/// of model file: fewer runs for a large model (module docs, "Threads").
pub static SESSION_MEMORY_BUDGET: LazyLock<u64> = LazyLock::new(|| RULE.session_memory_budget_mib << 20);

/// How `threads` is shared out (module docs, "Threads"): `(concurrent runs, intra-op
/// threads per run)` for a model file of `model_bytes`; decoding uses all `threads`.
/// `threads` 0 counts as 1.
pub fn thread_split(threads: usize, model_bytes: u64) -> (usize, usize) {
    let by_memory = usize::try_from(*SESSION_MEMORY_BUDGET / model_bytes.max(1)).unwrap_or(usize::MAX);
    let runs = threads.clamp(1, *MAX_CONCURRENT_RUNS).min(by_memory).max(1);
    (runs, (threads / runs).max(1))
}

/// The largest model batch the measurement tries.
pub static MAX_MODEL_BATCH: LazyLock<usize> = LazyLock::new(|| RULE.max_model_batch);

/// A run of the model batch should take at least this long (ONNX Runtime's cost per run,
/// tens of microseconds, is then a few percent at most).
pub static RUN_TARGET: LazyLock<Duration> = LazyLock::new(|| Duration::from_secs_f64(RULE.run_target_seconds));

/// One chunk of a stream: the model's output for the inputs that decoded, and the failures.
#[derive(Debug)]
pub struct LogitsChunk {
    /// Index in the whole stream of the chunk's first input.
    pub start: usize,
    /// The names of the chunk's inputs ([`ImageInput::source`]), in order.
    pub sources: Vec<String>,
    /// One row per input that decoded, in input order: `(n_ok, classes)`.
    pub logits: Array2<f32>,
    /// The inputs that failed, by index in the whole stream, in order.
    pub errors: ImageErrors,
}

impl LogitsChunk {
    /// How many inputs the chunk covers (good and failed).
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }
}

/// A decode task in flight.
struct Pending {
    start: usize,
    sources: Vec<String>,
    done: mpsc::Receiver<Result<(Array4<f32>, ImageErrors)>>,
}

/// The pipeline's engine, for callers that feed chunks themselves (the Python binding
/// converts each chunk's items while holding the GIL). [`LogitsStream`] drives it from an
/// iterator.
///
/// `C` is anything that derefs to the classifier: `&Classifier`, `Arc<Classifier>`, ...
pub struct Pipeline<C: Deref<Target = Classifier>> {
    classifier: C,
    pending: VecDeque<Pending>,
    submitted: usize,
}

impl<C: Deref<Target = Classifier>> Pipeline<C> {
    /// A pipeline over `classifier`; measures its model batch first if that is not known yet
    /// (before any decoding starts, so the measurement has the cores to itself).
    pub fn new(classifier: C) -> Self {
        classifier.model_batch();
        Pipeline { classifier, pending: VecDeque::new(), submitted: 0 }
    }

    pub fn classifier(&self) -> &Classifier {
        &self.classifier
    }

    /// Start decoding `items` as the next chunk on the classifier's pool; returns at once.
    /// An empty chunk is ignored.
    pub fn submit(&mut self, items: Vec<ImageInput>) {
        if items.is_empty() {
            return;
        }
        let (sender, done) = mpsc::sync_channel(1);
        let sources = items.iter().map(ImageInput::source).collect();
        let prep: Arc<Preprocessor> = Arc::clone(&self.classifier.prep);
        self.classifier.pool.spawn(move || {
            // The receiver may be gone (the stream was dropped): nothing to do then.
            let _ = sender.send(prep.batch(&items));
        });
        self.pending.push_back(Pending { start: self.submitted, sources, done });
        self.submitted += self.pending.back().map_or(0, |p| p.sources.len());
    }

    /// Chunks submitted and not yet returned by [`Self::next_chunk`].
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Wait for the oldest submitted chunk to be decoded, then call `refill` and submit what
    /// it returns (so that chunk decodes while the model runs), then run the model on the
    /// oldest chunk. With nothing in flight, what `refill` returns is the chunk (decoded,
    /// then run). `None` when there is nothing to do. `Err` when the model fails.
    pub fn next_chunk(&mut self, refill: impl FnOnce() -> Option<Vec<ImageInput>>) -> Option<Result<LogitsChunk>> {
        let mut refill = Some(refill);
        if self.pending.is_empty() {
            // Nothing in flight: start with what `refill` gives, if anything.
            let items = refill.take().and_then(|refill| refill())?;
            self.submit(items);
        }
        let pending = self.pending.pop_front()?;
        let decoded = pending.done.recv();
        if let Some(items) = refill.and_then(|refill| refill()) {
            self.submit(items);
        }
        let (batch, local_errors) = match decoded {
            Ok(Ok(decoded)) => decoded,
            Ok(Err(error)) => return Some(Err(error)),
            Err(_) => {
                let first = pending.sources.first().cloned().unwrap_or_default();
                return Some(Err(Error::Inference {
                    path: self.classifier.model_path().to_path_buf(),
                    reason: format!("the decoding task of the chunk starting at {first} failed"),
                }));
            }
        };
        // The chunk's pieces of `model_batch` rows go to the concurrent runs as they free up.
        let size = self.classifier.model_batch();
        let mut logits = match self.classifier.run_in_pieces(batch.view(), size) {
            Ok(logits) => logits,
            Err(error) => return Some(Err(error)),
        };
        if let Err(error) = self.classifier.answer_near_ties(&mut logits, batch.view()) {
            return Some(Err(error));
        }
        drop(batch);
        let errors = local_errors.into_iter().map(|(i, e)| (pending.start + i, e)).collect();
        let (start, sources) = (pending.start, pending.sources);
        let (logits, errors) =
            super::split_non_finite(logits, errors, start, sources.len(), |i| sources[i - start].clone());
        Some(Ok(LogitsChunk { start, sources, logits, errors }))
    }
}

/// The model's output for an iterator of inputs, one [`LogitsChunk`] of `chunk_size`
/// inputs at a time (see the module docs). Ends after the first `Err` (a model failure).
pub struct LogitsStream<C: Deref<Target = Classifier>, I> {
    pipeline: Pipeline<C>,
    inputs: std::iter::Fuse<I>,
    chunk_size: usize,
    failed: bool,
}

impl<C: Deref<Target = Classifier>, I: Iterator<Item = ImageInput>> LogitsStream<C, I> {
    pub fn new(classifier: C, inputs: impl IntoIterator<IntoIter = I>, chunk_size: usize) -> Result<Self> {
        if chunk_size == 0 {
            return Err(Error::InvalidArgument { reason: "the chunk size (batch size) must be at least 1".into() });
        }
        Ok(LogitsStream {
            pipeline: Pipeline::new(classifier),
            inputs: inputs.into_iter().fuse(),
            chunk_size,
            failed: false,
        })
    }

    fn take_chunk(inputs: &mut std::iter::Fuse<I>, chunk_size: usize) -> Option<Vec<ImageInput>> {
        let items: Vec<ImageInput> = inputs.by_ref().take(chunk_size).collect();
        (!items.is_empty()).then_some(items)
    }
}

impl<C: Deref<Target = Classifier>, I: Iterator<Item = ImageInput>> Iterator for LogitsStream<C, I> {
    type Item = Result<LogitsChunk>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let (inputs, chunk_size) = (&mut self.inputs, self.chunk_size);
        if self.pipeline.in_flight() == 0 {
            let first = Self::take_chunk(inputs, chunk_size)?;
            self.pipeline.submit(first);
        }
        let chunk = self.pipeline.next_chunk(|| Self::take_chunk(inputs, chunk_size))?;
        self.failed = chunk.is_err();
        Some(chunk)
    }
}

/// One input's result from [`PredictStream`].
#[derive(Debug)]
pub struct ImageResult {
    /// Index of the input in the stream.
    pub index: usize,
    /// [`ImageInput::source`] of the input.
    pub source: String,
    /// Its top-k classes, best first, or why it failed.
    pub outcome: Result<Vec<Prediction>>,
}

/// The top-k of every input, in input order, failures in place (see
/// [`Classifier::predict_stream`]). Yields `Err` once (and then ends) if the model fails.
pub struct PredictStream<C: Deref<Target = Classifier>, I> {
    chunks: LogitsStream<C, I>,
    top_k: usize,
    ready: VecDeque<ImageResult>,
}

impl<C: Deref<Target = Classifier>, I: Iterator<Item = ImageInput>> PredictStream<C, I> {
    pub fn new(chunks: LogitsStream<C, I>, top_k: usize) -> Self {
        PredictStream { chunks, top_k, ready: VecDeque::new() }
    }
}

impl<C: Deref<Target = Classifier>, I: Iterator<Item = ImageInput>> Iterator for PredictStream<C, I> {
    type Item = Result<ImageResult>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(result) = self.ready.pop_front() {
            return Some(Ok(result));
        }
        let chunk = match self.chunks.next()? {
            Ok(chunk) => chunk,
            Err(error) => return Some(Err(error)),
        };
        let classifier = self.chunks.pipeline.classifier();
        let mut errors = chunk.errors.into_iter().peekable();
        let mut rows = chunk.logits.outer_iter();
        for (offset, source) in chunk.sources.into_iter().enumerate() {
            let index = chunk.start + offset;
            let outcome = match errors.next_if(|(i, _)| *i == index) {
                Some((_, error)) => Err(error),
                None => Ok(classifier.top_k(rows.next().expect("one row per decoded input"), self.top_k)),
            };
            self.ready.push_back(ImageResult { index, source, outcome });
        }
        self.ready.pop_front().map(Ok)
    }
}

/// The model batch (module docs, "The model's batch"): the smallest power of two whose run
/// would take at least [`RUN_TARGET`], judged from one image's run time, at most
/// [`MAX_MODEL_BATCH`].
pub(super) fn measure_model_batch(classifier: &Classifier) -> usize {
    let crop = classifier.contract().preprocess.crop_size as usize;
    let Ok(zeros) = super::batch::alloc_batch(1, crop) else {
        return 1; // the real run reports that the batch cannot be allocated
    };
    let one = Array4::from_shape_vec((1, 3, crop, crop), zeros).expect("3*crop*crop floats");
    if classifier.run_in_pieces(one.view(), 1).is_err() {
        return 1; // the real run reports the error
    }
    let fastest = (0..3)
        .filter_map(|_| {
            let started = Instant::now();
            classifier.run_in_pieces(one.view(), 1).ok()?;
            Some(started.elapsed())
        })
        .min()
        .unwrap_or(*RUN_TARGET);
    let mut size = 1;
    while size < *MAX_MODEL_BATCH && fastest * (size as u32) < *RUN_TARGET {
        size *= 2;
    }
    size
}
