//! `butterfly_onnx._native`: a thin PyO3 layer over the `butterfly-onnx` crate.
//!
//! It only converts arguments, releases the GIL (`Python::detach`) around decoding,
//! preprocessing and inference, and maps `butterfly_onnx::Error` onto the exception classes
//! of `python/butterfly_onnx/errors.py` that `ErrorKind::python_class` names. The Python adapter over it is
//! `python/butterfly_onnx/_backends/rust.py`; the typed surface is `_native.pyi`.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use butterfly_onnx::classifier::{Classifier as CoreClassifier, ClassifierOptions, ImageErrors, ImageInput, Pipeline};
use butterfly_onnx::contract;
use butterfly_onnx::decode::RgbImage;
use butterfly_onnx::Error;
use numpy::{IntoPyArray, PyArray2, PyArray4, PyReadonlyArray3, PyReadonlyArray4, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyIterator, PyTuple};

mod errors {
    // raised by the binding itself; core errors are mapped by `to_py_err`
    pyo3::import_exception!(butterfly_onnx.errors, InvalidArgumentError);
    pyo3::import_exception!(butterfly_onnx.errors, InvalidArgumentTypeError);
}

/// The Python exception for a core error: the class the core names
/// (`ErrorKind::python_class`, the one mapping, also what the server's error answers carry),
/// from `butterfly_onnx.errors`; image errors carry `.source` (ImageError's second argument).
fn to_py_err(error: &Error) -> PyErr {
    let kind = error.kind();
    let message = error.to_string();
    Python::attach(|py| {
        let made = py.import("butterfly_onnx.errors").and_then(|module| {
            let class = module.getattr(kind.python_class())?;
            if kind.is_image_error() {
                class.call1((message, error.source_name()))
            } else {
                class.call1((message,))
            }
        });
        match made {
            Ok(instance) => PyErr::from_value(instance),
            Err(failed) => failed, // butterfly_onnx.errors missing or changed: say that
        }
    })
}

/// Per-image failures as {input index: exception instance}.
fn errors_to_dict<'py>(py: Python<'py>, failures: &ImageErrors) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (index, error) in failures {
        dict.set_item(*index, to_py_err(error).into_value(py))?;
    }
    Ok(dict)
}

/// The convertible items with their positions in the caller's list, and the rejected ones.
struct Converted {
    positions: Vec<usize>,
    inputs: Vec<ImageInput>,
    rejected: ImageErrors,
}

/// Convert `(source, payload)` items (payload: str/os.PathLike path, bytes, or an HxWx3
/// uint8 array) while holding the GIL; everything after runs without it. A payload of the
/// wrong kind is a per-image ImageDecodeError naming the source, like undecodable bytes.
fn convert_items(items: &Bound<'_, PyAny>) -> PyResult<Converted> {
    let mut converted = Converted { positions: Vec::new(), inputs: Vec::new(), rejected: Vec::new() };
    for (index, item) in items.try_iter()?.enumerate() {
        convert_item(&mut converted, index, &item?)?;
    }
    Ok(converted)
}

/// Convert one item, `index` its position in the caller's list.
fn convert_item(converted: &mut Converted, index: usize, item: &Bound<'_, PyAny>) -> PyResult<()> {
    let not_a_pair = || {
        let kind = item.get_type().name().map_or_else(|_| "?".to_string(), |n| n.to_string());
        format!("items must be (source, payload) tuples; item {index} is a {kind}")
    };
    let pair = item.cast::<PyTuple>().map_err(|_| errors::InvalidArgumentTypeError::new_err(not_a_pair()))?;
    if pair.len() != 2 {
        return Err(errors::InvalidArgumentError::new_err(format!(
            "items must be (source, payload) tuples; item {index} has {} elements",
            pair.len()
        )));
    }
    let source = source_name(&pair.get_item(0)?)?;
    let payload = pair.get_item(1)?;
    let input = if let Ok(bytes) = payload.cast::<PyBytes>() {
        ImageInput::Bytes { source, bytes: bytes.as_bytes().to_vec() }
    } else if let Ok(array) = payload.extract::<PyReadonlyArray3<'_, u8>>() {
        let shape = array.shape();
        if shape[2] != 3 {
            let reason = format!("expected an HxWx3 uint8 array, got shape {shape:?}");
            converted.rejected.push((index, Error::ImageDecode { source_name: source, reason }));
            return Ok(());
        }
        let (height, width) = (shape[0] as u32, shape[1] as u32);
        // Copied (in C order whatever the strides): Python code may still mutate the
        // array while the GIL is released.
        // (ndarray's as_slice is C order only; numpy's would also take Fortran order.)
        let view = array.as_array();
        let data = match view.as_slice() {
            Some(slice) => slice.to_vec(),
            None => view.iter().copied().collect(),
        };
        ImageInput::Rgb { source, image: RgbImage { width, height, data } }
    } else if let Ok(path) = payload.extract::<PathBuf>() {
        ImageInput::Path(path)
    } else {
        let reason = format!("unsupported image payload of type {}", payload.get_type().name()?);
        converted.rejected.push((index, Error::ImageDecode { source_name: source, reason }));
        return Ok(());
    };
    converted.positions.push(index);
    converted.inputs.push(input);
    Ok(())
}

/// An item's source as text for messages. A file name that is not UTF-8 comes from Python
/// as a str with lone surrogates (os.fsdecode's surrogateescape), which is no Rust `String`:
/// it is taken as the OS bytes it stands for and named as the core names such a path
/// (`error::path_name`); the Python adapter puts the caller's str back into the errors.
fn source_name(source: &Bound<'_, PyAny>) -> PyResult<String> {
    let text = source.str()?;
    match text.extract::<String>() {
        Ok(source) => Ok(source),
        Err(_) => Ok(butterfly_onnx::error::path_name(&text.extract::<PathBuf>()?)),
    }
}

/// Preprocess the convertible items; failures by position in the caller's list, conversion
/// failures included. Pure Rust: callers run it inside `py.detach`.
fn preprocess_items(
    classifier: &CoreClassifier,
    converted: Converted,
) -> Result<(ndarray::Array4<f32>, ImageErrors), Error> {
    let (batch, failures) = classifier.preprocess(&converted.inputs)?;
    let mut all: ImageErrors = failures.into_iter().map(|(i, e)| (converted.positions[i], e)).collect();
    all.extend(converted.rejected);
    all.sort_by_key(|(i, _)| *i);
    Ok((batch, all))
}

/// An ONNX classifier with torchvision-exact preprocessing (see butterfly_onnx.Classifier
/// for the public API; this is its rust backend).
#[pyclass(frozen, module = "butterfly_onnx._native")]
struct Classifier {
    inner: Arc<CoreClassifier>,
}

#[pymethods]
impl Classifier {
    /// Open `model_path`. `preprocess_json`: a PreprocessSpec as JSON (its `to_dict()`),
    /// replacing the contract's; `labels` replace the contract's labels; `jpeg_draft`: decode
    /// JPEGs at a reduced DCT scale as Pillow's `draft()` (core `ClassifierOptions::jpeg_draft`).
    #[new]
    /// `providers`: (name, {option: value}) pairs in priority order (None: the CPU provider).
    /// `fallback`: a classifier that answers this one's near-ties (core
    /// `Classifier::with_fallback`, `fallback_margin` None: the contract's).
    #[pyo3(signature = (model_path=None, *, model_bytes=None, threads=None, labels=None, preprocess_json=None, max_image_pixels=None, ort_library=None, jpeg_draft=false, providers=None, fallback=None, fallback_margin=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        model_path: Option<PathBuf>,
        model_bytes: Option<Vec<u8>>,
        threads: Option<i64>,
        labels: Option<Vec<String>>,
        preprocess_json: Option<&str>,
        max_image_pixels: Option<u64>,
        ort_library: Option<PathBuf>,
        jpeg_draft: bool,
        providers: Option<Vec<(String, std::collections::BTreeMap<String, String>)>>,
        fallback: Option<PyRef<'_, Classifier>>,
        fallback_margin: Option<f64>,
    ) -> PyResult<Self> {
        let threads = match threads {
            Some(n) if n < 1 => {
                return Err(errors::InvalidArgumentError::new_err(format!("threads must be at least 1, got {n}")))
            }
            Some(n) => Some(n as usize),
            None => None,
        };
        let model_path = match (model_path, &model_bytes) {
            (Some(path), None) => path,
            (None, Some(_)) => PathBuf::from("<model bytes>"),
            _ => return Err(errors::InvalidArgumentError::new_err("give exactly one of model_path and model_bytes")),
        };
        let source = model_path.display().to_string();
        let preprocess = match preprocess_json {
            Some(text) => Some(contract::preprocess_from_json_str(text, &source).map_err(|e| to_py_err(&e))?),
            None => None,
        };
        let options = ClassifierOptions {
            threads,
            labels,
            preprocess,
            max_image_pixels,
            ort_library,
            model_batch: None,
            jpeg_draft,
            providers: match providers {
                Some(list) => list
                    .into_iter()
                    .map(|(name, options)| butterfly_onnx::classifier::Provider {
                        name,
                        options: options.into_iter().collect(),
                    })
                    .collect(),
                None => butterfly_onnx::classifier::providers::cpu(),
            },
        };
        let fallback = fallback.map(|fallback| Arc::clone(&fallback.inner));
        let inner = py
            .detach(|| {
                let inner = match &model_bytes {
                    Some(bytes) => CoreClassifier::from_bytes(bytes, model_path, options),
                    None => CoreClassifier::open(&model_path, options),
                }?;
                match fallback {
                    Some(fallback) => inner.with_fallback(fallback, fallback_margin),
                    None => Ok(inner),
                }
            })
            .map_err(|e| to_py_err(&e))?;
        Ok(Classifier { inner: Arc::new(inner) })
    }

    /// The margin below which the fallback answers an image (None: no fallback).
    #[getter]
    fn fallback_margin(&self) -> Option<f64> {
        self.inner.fallback_margin()
    }

    /// Images the fallback has answered so far.
    #[getter]
    fn fallbacks(&self) -> usize {
        self.inner.fallbacks()
    }

    /// The effective contract, as `ModelContract.to_dict()` JSON.
    #[getter]
    fn contract_json(&self) -> String {
        self.inner.contract().to_json()
    }

    /// The contract JSON stored in the model, verbatim; None when it has none.
    #[getter]
    fn model_contract_json(&self) -> Option<String> {
        self.inner.model_contract_json().map(str::to_string)
    }

    #[getter]
    fn threads(&self) -> usize {
        self.inner.threads()
    }

    /// How `threads` is shared out: (concurrent ONNX Runtime runs, intra-op threads per run)
    /// (core `Classifier::thread_split`).
    #[getter]
    fn thread_split(&self) -> (usize, usize) {
        self.inner.thread_split()
    }

    /// The execution providers the sessions use, the CPU provider last (core
    /// `Classifier::providers`).
    #[getter]
    fn providers(&self) -> Vec<String> {
        self.inner.providers().to_vec()
    }

    /// Whether JPEGs are decoded in draft mode.
    #[getter]
    fn jpeg_draft(&self) -> bool {
        self.inner.jpeg_draft()
    }

    #[getter]
    fn static_batch(&self) -> Option<usize> {
        self.inner.static_batch()
    }

    #[getter]
    fn model_path(&self) -> PathBuf {
        self.inner.model_path().to_path_buf()
    }

    /// `items`: (source, payload) pairs. Returns (float32 (n_ok, 3, crop, crop), {index: ImageError}).
    fn preprocess<'py>(
        &self,
        py: Python<'py>,
        items: &Bound<'py, PyAny>,
    ) -> PyResult<(Bound<'py, PyArray4<f32>>, Bound<'py, PyDict>)> {
        let converted = convert_items(items)?;
        let inner = &self.inner;
        let (batch, failures) = py.detach(|| preprocess_items(inner, converted)).map_err(|e| to_py_err(&e))?;
        Ok((batch.into_pyarray(py), errors_to_dict(py, &failures)?))
    }

    /// Run the model on a float32 (N, 3, crop, crop) batch; returns float32 (N, classes).
    fn run<'py>(&self, py: Python<'py>, batch: PyReadonlyArray4<'py, f32>) -> PyResult<Bound<'py, PyArray2<f32>>> {
        // Copied so that no Python thread can change it while the GIL is released.
        let batch = batch.as_array().to_owned();
        let output = py.detach(|| self.inner.run(batch.view())).map_err(|e| to_py_err(&e))?;
        Ok(output.into_pyarray(py))
    }

    /// preprocess then run (the fallback answering the near-ties), without the GIL in between.
    /// Returns (logits, {index: ImageError}).
    fn logits<'py>(
        &self,
        py: Python<'py>,
        items: &Bound<'py, PyAny>,
    ) -> PyResult<(Bound<'py, PyArray2<f32>>, Bound<'py, PyDict>)> {
        let converted = convert_items(items)?;
        let inner = &self.inner;
        let result = py.detach(|| {
            let (batch, failures) = preprocess_items(inner, converted)?;
            let mut logits = inner.run(batch.view())?;
            inner.answer_near_ties(&mut logits, batch.view())?;
            Ok((logits, failures))
        });
        let (logits, failures) = result.map_err(|e| to_py_err(&e))?;
        Ok((logits.into_pyarray(py), errors_to_dict(py, &failures)?))
    }

    /// Stream `items` (any iterable of (source, payload) pairs) a chunk of `batch_size` at a
    /// time: an iterator of `(logits float32 (n_ok, classes), {index in items: ImageError})`,
    /// one per consecutive chunk, in order. While the model runs on one chunk, the next one
    /// is decoded (core `classifier::Pipeline`); the GIL is released while Rust works and
    /// waits, and taken only to read the next chunk's items and to build each result.
    fn iter_logits(&self, py: Python<'_>, items: &Bound<'_, PyAny>, batch_size: i64) -> PyResult<LogitsIter> {
        if batch_size < 1 {
            return Err(errors::InvalidArgumentError::new_err(format!(
                "batch_size must be at least 1, got {batch_size}"
            )));
        }
        let items = items.try_iter()?.unbind();
        // Pipeline::new may measure the model batch (first use): without the GIL.
        let inner = Arc::clone(&self.inner);
        let pipeline = py.detach(|| Pipeline::new(inner));
        let state = IterState { items, pipeline, chunks: VecDeque::new(), taken: 0, exhausted: false, deferred: None };
        Ok(LogitsIter { batch_size: batch_size as usize, classes: self.inner.labels().len(), state: Mutex::new(state) })
    }

    /// Images per ONNX Runtime run in `iter_logits` (the model's fixed batch, else measured
    /// once, on first use).
    #[getter]
    fn model_batch(&self, py: Python<'_>) -> usize {
        let inner = &self.inner;
        py.detach(|| inner.model_batch())
    }

    fn __repr__(&self) -> String {
        let contract = self.inner.contract();
        format!(
            "_native.Classifier(model={:?}, classes={}, input=3x{}x{}, threads={})",
            self.inner.model_path().display().to_string(),
            contract.labels.len(),
            contract.preprocess.crop_size,
            contract.preprocess.crop_size,
            self.inner.threads()
        )
    }
}

/// Where the items of one submitted chunk sit in the caller's iterable.
struct ChunkPlan {
    /// Positions of the items handed to the core pipeline, in order (empty: none were).
    positions: Vec<usize>,
    /// Items refused while converting (wrong payload type), by position.
    rejected: ImageErrors,
}

struct IterState {
    items: Py<PyIterator>,
    pipeline: Pipeline<Arc<CoreClassifier>>,
    /// One plan per chunk read from `items` and not yet returned, oldest first; the plans
    /// with positions match the pipeline's chunks in flight one to one.
    chunks: VecDeque<ChunkPlan>,
    /// Items read from `items` so far.
    taken: usize,
    exhausted: bool,
    /// An error raised while reading the chunk after the one being returned: raised by the
    /// next `__next__`, so the returned chunk's results are not lost.
    deferred: Option<PyErr>,
}

impl IterState {
    /// Read and convert the next chunk of items (GIL held). `None` at the end of `items`.
    fn read_chunk(&mut self, py: Python<'_>, batch_size: usize) -> PyResult<Option<(ChunkPlan, Vec<ImageInput>)>> {
        if self.exhausted {
            return Ok(None);
        }
        let mut converted = Converted { positions: Vec::new(), inputs: Vec::new(), rejected: Vec::new() };
        let iterator = self.items.bind(py);
        let mut read = 0;
        while read < batch_size {
            let Some(item) = iterator.clone().next() else {
                self.exhausted = true;
                break;
            };
            let item = item.inspect_err(|_| self.exhausted = true)?;
            convert_item(&mut converted, self.taken, &item).inspect_err(|_| self.exhausted = true)?;
            self.taken += 1;
            read += 1;
        }
        if read == 0 {
            return Ok(None);
        }
        Ok(Some((ChunkPlan { positions: converted.positions, rejected: converted.rejected }, converted.inputs)))
    }
}

/// One chunk's `(logits, {index: ImageError})`.
type LogitsAndErrors<'py> = (Bound<'py, PyArray2<f32>>, Bound<'py, PyDict>);

/// The iterator `Classifier.iter_logits` returns.
#[pyclass(module = "butterfly_onnx._native")]
struct LogitsIter {
    batch_size: usize,
    classes: usize,
    state: Mutex<IterState>,
}

#[pymethods]
impl LogitsIter {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<LogitsAndErrors<'py>>> {
        // Never wait for the lock while holding the GIL: the holder may be waiting for it.
        let Ok(mut state) = self.state.try_lock() else {
            return Err(errors::InvalidArgumentError::new_err(
                "this iter_logits iterator is already in use by another thread",
            ));
        };
        let state = &mut *state;
        if state.chunks.is_empty() {
            if let Some(error) = state.deferred.take() {
                return Err(error);
            }
            let Some((plan, inputs)) = state.read_chunk(py, self.batch_size)? else { return Ok(None) };
            state.pipeline.submit(inputs);
            state.chunks.push_back(plan);
        }
        let plan = state.chunks.pop_front().expect("a chunk is planned");
        if plan.positions.is_empty() {
            // Nothing of this chunk reached the pipeline: every item was refused.
            let logits = ndarray::Array2::<f32>::zeros((0, self.classes));
            return Ok(Some((logits.into_pyarray(py), errors_to_dict(py, &plan.rejected)?)));
        }
        // The chunk after it is read now, with the GIL, and decodes while the model runs.
        // An error reading it waits for the next call: this chunk's results come first.
        let next = match state.read_chunk(py, self.batch_size) {
            Ok(next) => next.map(|(next_plan, inputs)| {
                state.chunks.push_back(next_plan);
                inputs
            }),
            Err(error) => {
                state.deferred = Some(error);
                None
            }
        };
        let pipeline = &mut state.pipeline;
        let outcome = py.detach(|| pipeline.next_chunk(|| next)).expect("a chunk is in flight");
        let chunk = outcome.map_err(|e| to_py_err(&e))?;
        let mut failures: ImageErrors =
            chunk.errors.into_iter().map(|(index, error)| (plan.positions[index - chunk.start], error)).collect();
        failures.extend(plan.rejected);
        failures.sort_by_key(|(i, _)| *i);
        Ok(Some((chunk.logits.into_pyarray(py), errors_to_dict(py, &failures)?)))
    }
}

/// The ONNX Runtime library this process loaded, or None before the first Classifier.
#[pyfunction]
fn loaded_ort_library() -> Option<PathBuf> {
    butterfly_onnx::runtime::loaded_library()
}

/// Serve `classifier` over HTTP until a Python signal handler raises (Ctrl-C's KeyboardInterrupt,
/// or whatever the caller's SIGTERM handler raises) or `stop()` is true, then stop gracefully
/// (core `serve::serve_until`, the GIL released but taken every 0.1 s to check for signals and
/// call `stop`); no signal handler of the core's stays behind. `listening(host, port)` is called
/// once the server answers, after the line on stdout. What `stop`, `listening` or a signal
/// handler raises stops the server and is raised. `None` options take the server's defaults
/// (core `serve::ServeOptions`).
#[pyfunction]
#[pyo3(signature = (classifier, *, host=None, port=None, name=None, max_batch=None, max_wait_ms=None, max_queue=None, max_body_bytes=None, stop=None, listening=None))]
#[allow(clippy::too_many_arguments)]
fn serve(
    py: Python<'_>,
    classifier: PyRef<'_, Classifier>,
    host: Option<String>,
    port: Option<u16>,
    name: Option<String>,
    max_batch: Option<usize>,
    max_wait_ms: Option<u64>,
    max_queue: Option<usize>,
    max_body_bytes: Option<usize>,
    stop: Option<Py<PyAny>>,
    listening: Option<Py<PyAny>>,
) -> PyResult<()> {
    use butterfly_onnx::serve::ServeOptions;
    let defaults = ServeOptions::default();
    let options = ServeOptions {
        host: host.unwrap_or(defaults.host),
        port: port.unwrap_or(defaults.port),
        name,
        max_batch: max_batch.unwrap_or(defaults.max_batch),
        max_wait: max_wait_ms.map_or(defaults.max_wait, std::time::Duration::from_millis),
        max_queue: max_queue.unwrap_or(defaults.max_queue),
        max_body_bytes: max_body_bytes.unwrap_or(defaults.max_body_bytes),
    };
    let inner = Arc::clone(&classifier.inner);
    drop(classifier);
    // The first exception from Python (a callback or a signal handler): it stops the server.
    let raised: Mutex<Option<PyErr>> = Mutex::new(None);
    let keep = |outcome: PyResult<bool>| match outcome {
        Ok(stopping) => stopping,
        Err(err) => {
            raised.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(err);
            true
        }
    };
    let on_listening = |address: std::net::SocketAddr, model: &str| {
        butterfly_onnx::serve::announce(address, model);
        if let Some(callback) = &listening {
            keep(Python::attach(|py| callback.call1(py, (address.ip().to_string(), address.port())).map(|_| false)));
        }
    };
    // Python runs its signal handlers on the main thread only, from check_signals.
    let should_stop = || {
        if raised.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
            return true;
        }
        keep(Python::attach(|py| {
            py.check_signals()?;
            match &stop {
                Some(stop) => stop.bind(py).call0()?.is_truthy(),
                None => Ok(false),
            }
        }))
    };
    let served = py.detach(|| butterfly_onnx::serve::serve_until(inner, options, on_listening, should_stop));
    match raised.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(err) => Err(err),
        None => served.map_err(|e| to_py_err(&e)),
    }
}

/// Why a libonnxruntime file is not to be loaded unasked (writable by others, or owned by
/// someone else: `runtime::untrusted_reason`), or None when it is safe.
#[pyfunction]
fn ort_library_problem(path: PathBuf) -> Option<String> {
    butterfly_onnx::runtime::untrusted_reason(&path)
}

#[pymodule(name = "_native")]
fn native_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Classifier>()?;
    m.add_class::<LogitsIter>()?;
    m.add_function(wrap_pyfunction!(loaded_ort_library, m)?)?;
    m.add_function(wrap_pyfunction!(serve, m)?)?;
    m.add_function(wrap_pyfunction!(ort_library_problem, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
