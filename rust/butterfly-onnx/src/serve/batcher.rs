//! Dynamic batching across requests: requests hand in their preprocessed rows, batcher
//! threads (one per concurrent ONNX Runtime run of the classifier) take up to `max_batch`
//! images of the oldest requests, waiting at most `max_wait` after the oldest arrived for
//! more to come, run the model once on them and give each request its rows back.
//!
//! The run is the one `Classifier::predict` and the streaming pipeline make
//! (`run_in_pieces` with the classifier's model batch), so a row's result does not depend
//! on which batch it ran in (module docs of [`super`], "Exactness").

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ndarray::{s, Array2, Array4, ArrayView4, Axis};
use tokio::sync::{oneshot, OwnedSemaphorePermit};

use super::metrics::Metrics;
use crate::classifier::Classifier;
use crate::{Error, Result};

/// One request's rows waiting for the model.
struct Job {
    rows: Array4<f32>,
    arrived: Instant,
    reply: oneshot::Sender<Result<Array2<f32>>>,
    /// The request's admission: released with the job (run, or dropped unrun because its
    /// client went away), so abandoned rows still count against `max_queue`.
    _admission: Option<OwnedSemaphorePermit>,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Images in `jobs`.
    images: usize,
    closed: bool,
}

struct Shared {
    classifier: Arc<Classifier>,
    metrics: Arc<Metrics>,
    max_batch: usize,
    max_wait: Duration,
    queue: Mutex<Queue>,
    /// Signalled when a job arrives or the queue closes.
    changed: Condvar,
}

/// The batcher threads; [`Batcher::stop`] ends them once the queue is empty.
pub(super) struct Batcher {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

/// What request handlers hold to submit rows.
#[derive(Clone)]
pub(super) struct Handle {
    shared: Arc<Shared>,
}

impl Batcher {
    pub fn start(
        classifier: Arc<Classifier>,
        metrics: Arc<Metrics>,
        max_batch: usize,
        max_wait: Duration,
    ) -> Result<Self> {
        let runs = classifier.thread_split().0.max(1);
        let shared = Arc::new(Shared {
            classifier,
            metrics,
            max_batch,
            max_wait,
            queue: Mutex::new(Queue::default()),
            changed: Condvar::new(),
        });
        let mut batcher = Batcher { shared, threads: Vec::new() };
        for i in 0..runs {
            let shared = Arc::clone(&batcher.shared);
            let thread = std::thread::Builder::new()
                .name(format!("butterfly-batcher-{i}"))
                .spawn(move || shared.work())
                .map_err(|e| Error::InvalidArgument { reason: format!("cannot start the batcher threads: {e}") });
            match thread {
                Ok(thread) => batcher.threads.push(thread),
                Err(error) => {
                    batcher.stop();
                    return Err(error);
                }
            }
        }
        Ok(batcher)
    }

    pub fn handle(&self) -> Handle {
        Handle { shared: Arc::clone(&self.shared) }
    }

    /// Let the threads finish the queued jobs, then end them.
    pub fn stop(mut self) {
        self.shared.lock().closed = true;
        self.shared.changed.notify_all();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Handle {
    /// The model's output for `rows` `(n, 3, crop, crop)`, `n <= max_batch`, run in a batch
    /// with other requests' rows.
    pub async fn run(&self, rows: Array4<f32>, admission: Option<OwnedSemaphorePermit>) -> Result<Array2<f32>> {
        let (reply, answer) = oneshot::channel();
        {
            let mut queue = self.shared.lock();
            if queue.closed {
                return Err(self.shared.failed("the server is shutting down".into()));
            }
            queue.images += rows.dim().0;
            self.shared.metrics.queue_depth.set(queue.images as i64);
            queue.jobs.push_back(Job { rows, arrived: Instant::now(), reply, _admission: admission });
        }
        self.shared.changed.notify_one();
        answer.await.unwrap_or_else(|_| Err(self.shared.failed("the batcher stopped".into())))
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn failed(&self, reason: String) -> Error {
        Error::Inference { path: self.classifier.model_path().to_path_buf(), reason }
    }

    /// A batcher thread: take a batch, run it, answer; until closed and empty.
    fn work(&self) {
        while let Some(jobs) = self.next_batch() {
            if !jobs.is_empty() {
                self.run(jobs);
            }
        }
    }

    /// The next batch: the oldest jobs, up to `max_batch` images (at least one job), taken
    /// once `max_batch` images wait or the oldest has waited `max_wait`. `None` when closed
    /// and empty.
    fn next_batch(&self) -> Option<Vec<Job>> {
        let mut queue = self.lock();
        loop {
            let Some(oldest) = queue.jobs.front() else {
                if queue.closed {
                    return None;
                }
                queue = self.changed.wait(queue).unwrap_or_else(PoisonError::into_inner);
                continue;
            };
            let deadline = oldest.arrived + self.max_wait;
            let now = Instant::now();
            if queue.images >= self.max_batch || queue.closed || now >= deadline {
                break;
            }
            queue = self.changed.wait_timeout(queue, deadline - now).unwrap_or_else(PoisonError::into_inner).0;
        }
        let mut jobs = Vec::new();
        let mut images = 0;
        let mut taken = 0;
        while let Some(job) = queue.jobs.front() {
            let n = job.rows.dim().0;
            if !jobs.is_empty() && images + n > self.max_batch {
                break;
            }
            taken += n;
            let job = queue.jobs.pop_front().expect("front exists");
            if job.reply.is_closed() {
                continue; // its client went away: not worth a run
            }
            images += n;
            jobs.push(job);
        }
        queue.images -= taken;
        self.metrics.queue_depth.set(queue.images as i64);
        let more = !queue.jobs.is_empty();
        drop(queue);
        if more {
            self.changed.notify_one(); // another batcher thread can take the rest
        }
        Some(jobs)
    }

    fn run(&self, jobs: Vec<Job>) {
        let views: Vec<ArrayView4<'_, f32>> = jobs.iter().map(|job| job.rows.view()).collect();
        let images: usize = views.iter().map(|v| v.dim().0).sum();
        self.metrics.batch_size.observe(images as f64);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let batch = if views.len() == 1 {
                views[0].to_owned()
            } else {
                ndarray::concatenate(Axis(0), &views)
                    .map_err(|e| self.failed(format!("cannot batch the requests: {e}")))?
            };
            let mut logits = self.classifier.run_in_pieces(batch.view(), self.classifier.model_batch())?;
            self.classifier.answer_near_ties(&mut logits, batch.view())?;
            Ok(logits)
        }))
        .unwrap_or_else(|_| Err(self.failed("a thread running the model panicked".into())));
        drop(views);
        match outcome {
            Ok(logits) => {
                let mut start = 0;
                for job in jobs {
                    let n = job.rows.dim().0;
                    let _ = job.reply.send(Ok(logits.slice(s![start..start + n, ..]).to_owned()));
                    start += n;
                }
            }
            Err(error) => {
                // Every request of the batch gets the failure (as an `Inference` error, which
                // is what a failed run is; its reason kept as it was).
                let reason = match &error {
                    Error::Inference { reason, .. } => reason.clone(),
                    other => other.to_string(),
                };
                for job in jobs {
                    let _ = job.reply.send(Err(self.failed(reason.clone())));
                }
            }
        }
    }
}
