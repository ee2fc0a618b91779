//! `butterfly-onnx serve`: an HTTP model server over one [`Classifier`] (feature `serve`).
//!
//! ```no_run
//! use std::sync::Arc;
//! use butterfly_onnx::classifier::{Classifier, ClassifierOptions};
//! use butterfly_onnx::serve::{serve, ServeOptions};
//! let classifier = Arc::new(Classifier::open("model.onnx", ClassifierOptions::default())?);
//! serve(classifier, ServeOptions::default())?; // until SIGTERM or Ctrl-C
//! # Ok::<(), butterfly_onnx::Error>(())
//! ```
//!
//! Routes (docs/serving.md): the Open Inference Protocol's REST subset (`/v2/health/live`,
//! `/v2/health/ready`, `/v2/models/{name}`, `/v2/models/{name}/ready`,
//! `POST /v2/models/{name}/infer` with Triton's binary tensor data extension),
//! `POST /v1/classify` (the image as the body or multipart; `predict --json` lines out) and
//! `GET /metrics` (Prometheus text).
//!
//! How a request runs: it is admitted if fewer than [`ServeOptions::max_queue`] requests are
//! in the server (else 503 with `Retry-After`, before its body is read), its body is read (at
//! most [`ServeOptions::max_body_bytes`]), its images are decoded and preprocessed on a
//! blocking thread (at most `threads` requests decode at once), and the ready rows go to the
//! batcher ([`batcher`]), which runs the model on up to [`ServeOptions::max_batch`] images
//! of several requests at once, waiting at most [`ServeOptions::max_wait`] for a batch to
//! fill. A bad image fails its request alone (it never reaches the batcher).
//!
//! Exactness: the batcher runs the model exactly as `Classifier::predict` and the streaming
//! pipeline do (`run_in_pieces` with the classifier's model batch), and ONNX Runtime's rows
//! do not depend on the other rows of a run (checked by the `serve` tests and by the
//! rows-vs-batch test of tests/test_serve.py), so a response equals `predict` on the same
//! file bit for bit, whatever batch it ran in.

mod batcher;
mod http;
mod metrics;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::classifier::Classifier;
use crate::{Error, Result};

/// Default images per model batch across requests (docs/serving.md: measured on
/// EfficientNet-Lite0, 2 cores; throughput is flat above a few images).
pub const DEFAULT_MAX_BATCH: usize = 16;
/// Default wait for a batch to fill, in milliseconds (docs/serving.md).
pub const DEFAULT_MAX_WAIT_MS: u64 = 2;
/// Default number of requests admitted at once (queued, decoding or running); more get 503.
pub const DEFAULT_MAX_QUEUE: usize = 64;
/// Default limit on a request body, in bytes (32 MiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 32 << 20;
/// Classes per image when a request does not say (`top_k`), as `predict`'s default.
pub const DEFAULT_TOP_K: usize = 5;
/// The seconds a 503 tells the client to wait (`Retry-After`).
pub const RETRY_AFTER_SECONDS: u64 = 1;

/// How to serve. `Default`: 127.0.0.1:8000, the model's file stem as its name, the defaults above.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub host: String,
    /// 0 = any free port (the one taken is printed, see [`serve_with`]).
    pub port: u16,
    /// The model's name in `/v2/models/{name}` (`None` = the model file's stem).
    pub name: Option<String>,
    /// At most this many images per model batch (and per request).
    pub max_batch: usize,
    /// How long the batcher waits for more requests once it has one.
    pub max_wait: Duration,
    /// Requests admitted at once; past it, 503 with `Retry-After`.
    pub max_queue: usize,
    /// Largest request body in bytes; past it, 413.
    pub max_body_bytes: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            host: "127.0.0.1".into(),
            port: 8000,
            name: None,
            max_batch: DEFAULT_MAX_BATCH,
            max_wait: Duration::from_millis(DEFAULT_MAX_WAIT_MS),
            max_queue: DEFAULT_MAX_QUEUE,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

/// How often [`serve_until`] asks its caller whether to stop.
pub const STOP_POLL: Duration = Duration::from_millis(100);

/// Serve `classifier` until SIGTERM or SIGINT (Ctrl-C): then stop accepting, answer the
/// requests in flight, and return. Prints one line on stdout once listening:
/// `butterfly-onnx serve: listening on http://HOST:PORT (model NAME)`.
///
/// The signal handlers it installs stay for the life of the process (tokio's never uninstall):
/// a process that goes on after serving wants [`serve_until`].
pub fn serve(classifier: Arc<Classifier>, options: ServeOptions) -> Result<()> {
    serve_with(classifier, options, announce)
}

/// The line [`serve`] prints once the server answers.
pub fn announce(address: SocketAddr, name: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    // A closed stdout must not stop the server.
    let _ = writeln!(out, "butterfly-onnx serve: listening on http://{address} (model {name})");
    let _ = out.flush();
}

/// [`serve`], calling `listening(address, model name)` on the calling thread once the server answers
/// on the socket (it may call the server; requests are answered meanwhile).
pub fn serve_with(
    classifier: Arc<Classifier>,
    options: ServeOptions,
    listening: impl FnOnce(SocketAddr, &str),
) -> Result<()> {
    run(classifier, options, listening, shutdown_signal(), || false)
}

/// Serve `classifier` until `stop()` says so, then stop as [`serve`] does; no signal handler is
/// installed (the caller owns the process's signals: the Python binding runs Python's).
/// `stop` is called every [`STOP_POLL`] on the calling thread, and may block: the server runs
/// on threads of its own meanwhile.
pub fn serve_until(
    classifier: Arc<Classifier>,
    options: ServeOptions,
    listening: impl FnOnce(SocketAddr, &str),
    stop: impl FnMut() -> bool,
) -> Result<()> {
    run(classifier, options, listening, std::future::pending(), stop)
}

/// Serve until `signal` completes or `stop()` is true.
fn run(
    classifier: Arc<Classifier>,
    options: ServeOptions,
    listening: impl FnOnce(SocketAddr, &str),
    signal: impl std::future::Future<Output = ()> + Send + 'static,
    mut stop: impl FnMut() -> bool,
) -> Result<()> {
    let invalid = |reason: String| Error::InvalidArgument { reason };
    if options.max_batch == 0 {
        return Err(invalid("max_batch must be at least 1".into()));
    }
    if options.max_queue == 0 {
        return Err(invalid("max_queue must be at least 1".into()));
    }
    if options.max_body_bytes == 0 {
        return Err(invalid("max_body_bytes must be at least 1".into()));
    }
    let name = match &options.name {
        Some(name) if name.is_empty() || name.contains('/') => {
            return Err(invalid(format!("the model name must be non-empty, without '/': {name:?}")))
        }
        Some(name) => name.clone(),
        None => classifier.model_path().file_stem().map_or("model".into(), |s| s.to_string_lossy().into_owned()),
    };
    // Measured now, before the first request (it times a few runs of the model).
    classifier.model_batch();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(classifier.threads().clamp(1, 4))
        .max_blocking_threads(classifier.threads().max(1) + 2)
        .thread_name("butterfly-serve")
        .enable_all()
        .build()
        .map_err(|e| invalid(format!("cannot start the server's threads: {e}")))?;
    let address = format!("{}:{}", options.host, options.port);
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(&address))
        .map_err(|e| invalid(format!("cannot listen on {address}: {e}")))?;
    let bound = listener.local_addr().map_err(|e| invalid(format!("{address}: {e}")))?;
    let metrics = Arc::new(metrics::Metrics::new(options.max_batch));
    let batcher =
        batcher::Batcher::start(Arc::clone(&classifier), Arc::clone(&metrics), options.max_batch, options.max_wait)?;
    let state = http::state(classifier, name.clone(), &options, batcher.handle(), metrics);
    let outcome = runtime.block_on(async move {
        let (stopping, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = http::router(state);
        let shutdown = async move {
            tokio::select! {
                () = signal => {}
                _ = stopped => {}
            }
        };
        // On the runtime's threads, so that a `stop()` that blocks holds up nothing.
        let server = tokio::spawn(async move { axum::serve(listener, app).with_graceful_shutdown(shutdown).await });
        // Once the server answers, so that `listening` may call it (a readiness probe, say).
        listening(bound, &name);
        tokio::pin!(server);
        let mut stopping = Some(stopping);
        let mut poll = tokio::time::interval(STOP_POLL);
        // A stop() that waited (for the GIL) is not called again at once for the ticks it missed.
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                joined = &mut server => break joined.map_err(std::io::Error::other).and_then(|served| served),
                _ = poll.tick() => {
                    if stopping.is_some() && stop() {
                        let _ = stopping.take().map(|tx| tx.send(()));
                    }
                }
            }
        }
    });
    // Every connection has been answered: the batcher's queue is empty; stop its threads.
    batcher.stop();
    runtime.shutdown_timeout(Duration::from_secs(1));
    outcome.map_err(|e| invalid(format!("the server on {bound} failed: {e}")))
}

/// SIGTERM or SIGINT.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            // No signal handling to be had: serve until killed.
            _ => std::future::pending::<()>().await,
        }
    }
    #[cfg(not(unix))]
    {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
