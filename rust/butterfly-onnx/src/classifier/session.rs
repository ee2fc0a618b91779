//! The ONNX Runtime side of a classifier: building the session, reading the contract stored
//! in the model (resolved and checked against the graph by [`contract::resolve`]), and
//! running batches.

use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use ndarray::{s, Array2, Array4, ArrayView4};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::{TensorElementType, TensorRef, ValueType};

use super::providers::{self, Provider};
use super::ClassifierOptions;
use crate::contract::{self, ModelContract, TensorInfo, METADATA_KEY};
use crate::{Error, Result};

/// The model's ONNX Runtime sessions (one per concurrent run, see [`super::pipeline`],
/// "Threads") with what is needed to feed them: the tensor names and shapes.
pub(super) struct Model {
    /// `runs` sessions of the same model, each with its own intra-op threads; a run takes
    /// whichever is free (ort's `Session::run` needs `&mut`).
    sessions: SessionPool<Session>,
    path: PathBuf,
    input_name: String,
    output_name: String,
    crop: usize,
    classes: usize,
    /// `Some(b)` when the model's batch axis is fixed at `b`.
    static_batch: Option<usize>,
}

/// The pieces one worker ran: (first row, output rows).
type Pieces = Vec<(usize, Array2<f32>)>;

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

/// Create the sessions (`runs` of them, `intra` intra-op threads each, spinning off), read
/// the contract, apply the overrides of `options` and check the result against the model's
/// input and output.
pub(super) fn open(
    path: &Path,
    source: Source<'_>,
    (runs, intra): (usize, usize),
    options: &ClassifierOptions,
) -> Result<Opened> {
    let providers = &options.providers;
    let session = build_session(path, &source, intra, providers)?;
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
        &crate::error::path_name(path),
    )?;
    let static_batch = contract::static_batch(&inputs, &contract);
    let mut sessions = vec![session];
    for _ in 1..runs.max(1) {
        sessions.push(build_session(path, &source, intra, providers)?);
    }
    let sessions = SessionPool::new(sessions);
    let model = Model {
        path: path.to_path_buf(),
        input_name: contract.input_name.clone(),
        output_name: contract.output_name.clone(),
        crop: contract.preprocess.crop_size as usize,
        classes: contract.labels.len(),
        static_batch,
        sessions,
    };
    Ok(Opened { model, contract, model_contract_json })
}

impl Model {
    pub fn static_batch(&self) -> Option<usize> {
        self.static_batch
    }

    /// How many ONNX Runtime runs may go at once (the number of sessions).
    pub fn runs(&self) -> usize {
        self.sessions.len()
    }

    /// The raw output `(N, classes)` of a batch `(N, 3, crop, crop)`, fed to ONNX Runtime in
    /// pieces of `size` rows (at most `ceil(N / runs)`, so every session gets work; or the
    /// model's fixed batch, the last piece zero-padded), up to [`Self::runs`] pieces at a
    /// time on scoped threads, each taking the next piece when done. Rows are independent, so
    /// neither `size` nor the split changes results, only speed.
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
        let size = self.static_batch.unwrap_or_else(|| size.clamp(1, n.div_ceil(self.runs())));
        let batch = batch.as_standard_layout();
        if size >= n && self.static_batch.is_none_or(|b| b == n) {
            return self.run_piece(self.sessions.take(), batch.view());
        }
        let pieces = n.div_ceil(size);
        let workers = self.runs().min(pieces);
        let next = AtomicUsize::new(0);
        let batch = batch.view();
        // Each worker: its own padding buffer; pieces taken in order, each run on whichever
        // session is free then (another caller may be running on one), one held at a time.
        let work = || -> Result<Pieces> {
            let mut done = Vec::new();
            let mut padded: Option<Array4<f32>> = None;
            loop {
                let piece = next.fetch_add(1, Ordering::Relaxed);
                if piece >= pieces {
                    return Ok(done);
                }
                let (start, end) = (piece * size, ((piece + 1) * size).min(n));
                let rows = batch.slice(s![start..end, .., .., ..]);
                let outcome = if end - start < size && self.static_batch.is_some() {
                    if padded.is_none() {
                        let zeros = super::batch::alloc_batch(size, crop)?;
                        padded = Some(
                            Array4::from_shape_vec((size, 3, crop, crop), zeros).expect("size*3*crop*crop floats"),
                        );
                    }
                    let padded = padded.as_mut().expect("allocated above");
                    padded.slice_mut(s![..end - start, .., .., ..]).assign(&rows);
                    self.run_piece(self.sessions.take(), padded.view())
                } else {
                    self.run_piece(self.sessions.take(), rows)
                };
                match outcome {
                    Ok(logits) => done.push((start, logits)),
                    Err(error) => {
                        next.store(pieces, Ordering::Relaxed); // the others stop too
                        return Err(error);
                    }
                }
            }
        };
        let results: Vec<Result<Pieces>> = if workers == 1 {
            vec![work()]
        } else {
            std::thread::scope(|scope| {
                let work = &work;
                let helpers: Vec<_> = (1..workers)
                    .map(|worker| {
                        std::thread::Builder::new().name(format!("butterfly-run-{worker}")).spawn_scoped(scope, work)
                    })
                    .collect();
                let mut results = vec![work()];
                for helper in helpers {
                    results.push(match helper {
                        Ok(handle) => handle
                            .join()
                            .unwrap_or_else(|_| Err(self.failed("a thread running the model panicked".into()))),
                        // No thread to be had: the pieces it would have taken were run by
                        // the others, which only stop when every piece is taken.
                        Err(_) => Ok(Vec::new()),
                    });
                }
                results
            })
        };
        let mut out = Array2::zeros((n, self.classes));
        for result in results {
            for (start, logits) in result? {
                let rows = logits.nrows().min(n - start);
                out.slice_mut(s![start..start + rows, ..]).assign(&logits.slice(s![..rows, ..]));
            }
        }
        Ok(out)
    }

    fn failed(&self, reason: String) -> Error {
        Error::Inference { path: self.path.clone(), reason }
    }

    /// One `Session::run` on a session the caller holds (given back when this returns).
    fn run_piece(&self, mut session: Taken<'_, Session>, batch: ArrayView4<'_, f32>) -> Result<Array2<f32>> {
        let failed = |reason: String| self.failed(reason);
        let n = batch.dim().0;
        let input = TensorRef::from_array_view(batch).map_err(|e| failed(e.to_string()))?;
        let outputs =
            session.run(ort::inputs![self.input_name.as_str() => input]).map_err(|e| failed(e.to_string()))?;
        let output = outputs
            .get(self.output_name.as_str())
            .ok_or_else(|| failed(format!("no output named {:?}", self.output_name)))?;
        let array = output.try_extract_array::<f32>().map_err(|e| failed(e.to_string()))?;
        if array.shape() != [n, self.classes] {
            return Err(Error::Contract {
                source_name: crate::error::path_name(&self.path),
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

/// Items (the sessions) handed out whichever is free: [`Self::take`] returns a free one, or
/// waits until any one is given back; never a fixed one, so callers sharing a classifier
/// never wait on a busy session while another is idle.
struct SessionPool<T> {
    items: Vec<Mutex<T>>,
    /// Indices of the items nobody holds.
    free: Mutex<Vec<usize>>,
    /// Signalled each time an item goes back on `free`.
    freed: Condvar,
}

/// An item taken from a [`SessionPool`]; back on its free list (waking one waiter) when dropped.
struct Taken<'a, T> {
    pool: &'a SessionPool<T>,
    index: usize,
    item: Option<MutexGuard<'a, T>>,
}

impl<T> SessionPool<T> {
    fn new(items: Vec<T>) -> Self {
        let free = (0..items.len()).rev().collect();
        SessionPool {
            items: items.into_iter().map(Mutex::new).collect(),
            free: Mutex::new(free),
            freed: Condvar::new(),
        }
    }

    fn len(&self) -> usize {
        self.items.len()
    }

    /// A free item; waits while every one is taken.
    fn take(&self) -> Taken<'_, T> {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        let index = loop {
            match free.pop() {
                Some(index) => break index,
                None => free = self.freed.wait(free).unwrap_or_else(PoisonError::into_inner),
            }
        };
        drop(free);
        // Item `index` was on the free list, so nobody holds its lock: this does not wait.
        let item = self.items[index].lock().unwrap_or_else(PoisonError::into_inner);
        Taken { pool: self, index, item: Some(item) }
    }
}

impl<T> Deref for Taken<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.item.as_deref().expect("held until dropped")
    }
}

impl<T> DerefMut for Taken<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.item.as_deref_mut().expect("held until dropped")
    }
}

impl<T> Drop for Taken<'_, T> {
    fn drop(&mut self) {
        drop(self.item.take());
        self.pool.free.lock().unwrap_or_else(PoisonError::into_inner).push(self.index);
        self.pool.freed.notify_one();
    }
}

// ort's builder errors carry the builder back (large); they are turned into strings at once.
#[allow(clippy::result_large_err)]
fn build_session(model_path: &Path, source: &Source<'_>, threads: usize, providers: &[Provider]) -> Result<Session> {
    let invalid = |reason: String| Error::InvalidModel { path: model_path.to_path_buf(), reason };
    let runtime = |reason: String| Error::RuntimeUnavailable { reason };
    let builder = Session::builder()
        .map_err(|e| runtime(e.to_string()))?
        .with_intra_threads(threads)
        .and_then(|b| b.with_inter_threads(1))
        .and_then(|b| b.with_optimization_level(GraphOptimizationLevel::All))
        // ORT's threads spin after each run by default; here the CPU is shared with the
        // decoding pool (which works on the next chunk while the model runs) and with the
        // other sessions' runs, so they sleep.
        .and_then(|b| b.with_intra_op_spinning(false))
        .map_err(|e| runtime(e.to_string()))?;
    // One at a time, so a failure names its provider (each `error_on_failure`: no fallback).
    let mut builder = builder;
    for provider in providers {
        builder = builder
            .with_execution_providers([providers::dispatch(provider)?])
            .map_err(|e| providers::init_failed(&provider.name, &e.to_string()))?;
    }
    match source {
        Source::File => builder.commit_from_file(model_path),
        Source::Bytes(bytes) => builder.commit_from_memory(bytes),
    }
    .map_err(|e| {
        // A provider can also fail while the session initialises (TensorRT building its
        // engine, say): when the model loads on the CPU provider alone, the provider is to blame.
        let accelerated = providers.iter().find(|p| p.name != providers::cpu_name());
        match accelerated {
            Some(provider) if build_session(model_path, source, 1, &providers::cpu()).is_ok() => {
                providers::init_failed(&provider.name, &e.to_string())
            }
            _ => invalid(e.to_string()),
        }
    })
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

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::SessionPool;

    #[test]
    fn a_piece_takes_whichever_session_is_free() {
        let pool = SessionPool::new(vec![0_u32, 1, 2]);
        // Another caller holds one: the next take gets another at once (never the busy one).
        let first = pool.take();
        let second = pool.take();
        let third = pool.take();
        let mut held = [*first, *second, *third];
        held.sort_unstable();
        assert_eq!(held, [0, 1, 2]);
        // All busy: a waiter gets the first one given back, whichever it is (here not the
        // first taken); the 30 s bound only turns a wrong wait into a failure, not a hang.
        let freed = *second;
        std::thread::scope(|scope| {
            let (sender, got) = mpsc::channel();
            let pool = &pool;
            scope.spawn(move || {
                let mut item = pool.take();
                *item += 10;
                sender.send(*item).unwrap();
            });
            drop(second);
            assert_eq!(got.recv_timeout(Duration::from_secs(30)).unwrap(), freed + 10);
        });
        drop((first, third));
        // Everything went back on the free list, the waiter's change kept.
        assert_eq!(pool.free.lock().unwrap().len(), 3);
        let taken: Vec<_> = (0..3).map(|_| pool.take()).collect();
        let mut all: Vec<u32> = taken.iter().map(|item| **item).collect();
        all.sort_unstable();
        let mut want = vec![0, 1, 2];
        want[freed as usize] += 10;
        want.sort_unstable();
        assert_eq!(all, want);
    }
}
