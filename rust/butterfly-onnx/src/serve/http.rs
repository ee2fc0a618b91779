//! The routes: Open Inference Protocol v2 (with Triton's binary tensor data extension),
//! `/v1/classify` and `/metrics`. Module docs of [`super`] say how a request runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Query, Request, State as AxumState};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use ndarray::{Array2, Array4};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::batcher::Handle;
use super::metrics::Metrics;
use super::{ServeOptions, DEFAULT_TOP_K, RETRY_AFTER_SECONDS};
use crate::classifier::{split_non_finite, Classifier, ImageErrors, ImageInput, Prediction};
use crate::{Error, ErrorKind};

/// Triton's binary tensor data extension: the length of the JSON part of a body.
const HEADER_LENGTH: &str = "inference-header-content-length";
/// The v2 input (a batch of encoded images) and outputs, as the metadata declares them.
const INPUT_NAME: &str = "image";
const OUTPUTS: [(&str, &str); 3] = [("labels", "BYTES"), ("indices", "INT64"), ("probabilities", "FP32")];

pub(super) struct Shared {
    classifier: Arc<Classifier>,
    name: String,
    max_batch: usize,
    max_body_bytes: usize,
    max_queue: usize,
    /// Requests admitted at once (`max_queue`).
    admission: Arc<Semaphore>,
    /// Requests decoding at once (the classifier's threads).
    decoding: Arc<Semaphore>,
    batcher: Handle,
    metrics: Arc<Metrics>,
}

pub(super) type State = Arc<Shared>;

pub(super) fn state(
    classifier: Arc<Classifier>,
    name: String,
    options: &ServeOptions,
    batcher: Handle,
    metrics: Arc<Metrics>,
) -> State {
    let threads = classifier.threads().max(1);
    Arc::new(Shared {
        classifier,
        name,
        max_batch: options.max_batch,
        max_body_bytes: options.max_body_bytes,
        max_queue: options.max_queue,
        admission: Arc::new(Semaphore::new(options.max_queue)),
        decoding: Arc::new(Semaphore::new(threads)),
        batcher,
        metrics,
    })
}

pub(super) fn router(state: State) -> Router {
    let limit = state.max_body_bytes;
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(live))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/versions/{version}", get(model_metadata_version))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/versions/{version}/ready", get(model_ready_version))
        .route("/v2/models/{name}/infer", post(infer))
        .route("/v2/models/{name}/versions/{version}/infer", post(infer_version))
        .route("/v1/classify", post(classify))
        .route("/metrics", get(metrics))
        // Multipart reads obey this; raw bodies are read with the same limit.
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// An error answer: `{"error": message, "error_class": class}` with its status.
struct Failure {
    status: StatusCode,
    class: &'static str,
    message: String,
}

impl Failure {
    fn new(status: StatusCode, class: &'static str, message: impl Into<String>) -> Self {
        Failure { status, class, message: message.into() }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Failure::new(StatusCode::BAD_REQUEST, ErrorKind::InvalidArgument.python_class(), message)
    }

    fn from_error(error: &Error) -> Self {
        let status = match error.kind() {
            ErrorKind::ImageNotFound | ErrorKind::ImageDecode | ErrorKind::ImageTooLarge => StatusCode::BAD_REQUEST,
            // The image was read, but the model gives no finite output for it.
            ErrorKind::NonFiniteOutput => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::InvalidArgument => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Failure::new(status, error.kind().python_class(), error.to_string())
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut response =
            (self.status, axum::Json(json!({"error": self.message, "error_class": self.class}))).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        }
        response
    }
}

/// A request admitted to the server: holds its place in the queue until answered, or until
/// its client goes away (hyper then drops the handler; the gauge must still come down).
struct Admitted {
    /// Goes with the request's rows to the batcher (released when they have run or been
    /// dropped), so a request whose client left still counts until its rows are gone.
    permit: Option<OwnedSemaphorePermit>,
    started: Instant,
    metrics: Arc<Metrics>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.metrics.in_flight.dec();
    }
}

impl Shared {
    /// Admit a request, or 503 when `max_queue` requests are in already.
    fn admit(&self) -> Result<Admitted, Failure> {
        match Arc::clone(&self.admission).try_acquire_owned() {
            Ok(permit) => {
                self.metrics.in_flight.inc();
                Ok(Admitted { permit: Some(permit), started: Instant::now(), metrics: Arc::clone(&self.metrics) })
            }
            Err(_) => Err(Failure::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "QueueFull",
                format!("the server's queue is full ({} requests); retry later", self.max_queue),
            )),
        }
    }

    /// Count an answer in the metrics and give it back.
    fn finish(&self, route: &str, admitted: Option<&Admitted>, outcome: Result<Response, Failure>) -> Response {
        let response = match outcome {
            Ok(response) => response,
            Err(failure) => {
                self.metrics.count_error(failure.class);
                failure.into_response()
            }
        };
        if let Some(admitted) = admitted {
            self.metrics.latency.observe(admitted.started.elapsed().as_secs_f64());
        }
        self.metrics.count_request(route, response.status().as_u16());
        response
    }

    fn check_name(&self, name: &str) -> Result<(), Failure> {
        if name == self.name {
            return Ok(());
        }
        Err(Failure::new(
            StatusCode::NOT_FOUND,
            ErrorKind::InvalidArgument.python_class(),
            format!("unknown model {name:?}; this server serves {:?}", self.name),
        ))
    }

    /// Decode and preprocess on a blocking thread, at most `threads` requests at once.
    async fn preprocess(&self, inputs: Vec<ImageInput>) -> Result<(Array4<f32>, ImageErrors), Failure> {
        let _permit = self.decoding.acquire().await.map_err(|_| shutting_down())?;
        let classifier = Arc::clone(&self.classifier);
        tokio::task::spawn_blocking(move || classifier.preprocess(&inputs))
            .await
            .map_err(|_| Failure::new(StatusCode::INTERNAL_SERVER_ERROR, "ButterflyError", "decoding failed"))?
            .map_err(|e| Failure::from_error(&e))
    }

    /// The model's output for the rows, through the batcher.
    async fn run(&self, rows: Array4<f32>, admitted: &mut Admitted) -> Result<Array2<f32>, Failure> {
        if rows.dim().0 == 0 {
            return Ok(Array2::zeros((0, self.classifier.labels().len())));
        }
        let n = rows.dim().0;
        let logits = self.batcher.run(rows, admitted.permit.take()).await.map_err(|e| Failure::from_error(&e))?;
        self.metrics.images.inc_by(n as u64);
        Ok(logits)
    }

    fn top_k(&self, logits: &Array2<f32>, k: usize) -> Vec<Vec<Prediction>> {
        logits.outer_iter().map(|row| self.classifier.top_k(row, k)).collect()
    }
}

fn shutting_down() -> Failure {
    Failure::new(StatusCode::SERVICE_UNAVAILABLE, "QueueFull", "the server is shutting down")
}

async fn live() -> StatusCode {
    StatusCode::OK
}

async fn server_metadata() -> axum::Json<Value> {
    axum::Json(json!({
        "name": "butterfly-onnx",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data"],
    }))
}

async fn model_metadata(AxumState(state): AxumState<State>, Path(name): Path<String>) -> Response {
    let outcome = state.check_name(&name).map(|()| {
        let contract: Value = serde_json::from_str(&state.classifier.contract().to_json()).unwrap_or(Value::Null);
        let outputs: Vec<Value> = OUTPUTS
            .iter()
            .map(|(name, datatype)| json!({"name": name, "datatype": datatype, "shape": [-1, -1]}))
            .collect();
        axum::Json(json!({
            "name": state.name,
            "versions": ["1"],
            "platform": "butterfly_onnx",
            "inputs": [{"name": INPUT_NAME, "datatype": "BYTES", "shape": [-1]}],
            "outputs": outputs,
            "parameters": {
                "max_batch": state.max_batch,
                "top_k": DEFAULT_TOP_K,
                "contract": contract,
            },
        }))
        .into_response()
    });
    state.finish("metadata", None, outcome)
}

async fn model_metadata_version(state: AxumState<State>, Path((name, _)): Path<(String, String)>) -> Response {
    model_metadata(state, Path(name)).await
}

async fn model_ready(AxumState(state): AxumState<State>, Path(name): Path<String>) -> Response {
    let outcome = state.check_name(&name).map(|()| StatusCode::OK.into_response());
    state.finish("ready", None, outcome)
}

async fn model_ready_version(state: AxumState<State>, Path((name, _)): Path<(String, String)>) -> Response {
    model_ready(state, Path(name)).await
}

async fn metrics(AxumState(state): AxumState<State>) -> Response {
    let text = state.metrics.text();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

/// How long a client may take to send its body (its place in the queue is held meanwhile).
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// `read` (a body being received), or 408 when it takes longer than [`BODY_TIMEOUT`].
async fn within_body_timeout<T>(read: impl std::future::Future<Output = T>) -> Result<T, Failure> {
    tokio::time::timeout(BODY_TIMEOUT, read).await.map_err(|_| {
        Failure::new(
            StatusCode::REQUEST_TIMEOUT,
            ErrorKind::InvalidArgument.python_class(),
            format!("the request body did not arrive within {} s", BODY_TIMEOUT.as_secs()),
        )
    })
}

/// Read and drop a refused request's body (one frame at a time: no memory kept), at most
/// `limit` bytes and [`BODY_TIMEOUT`], so that the client, still sending, gets to read the
/// answer (a connection closed under a client that is writing resets, and its 503 is lost).
async fn drain(mut body: Body, limit: usize) {
    use http_body_util::BodyExt;
    let mut read = 0usize;
    let _ = tokio::time::timeout(BODY_TIMEOUT, async {
        while let Some(Ok(frame)) = body.frame().await {
            read += frame.data_ref().map_or(0, |d| d.len());
            if read > limit {
                break;
            }
        }
    })
    .await;
}

/// The body, at most `max_body_bytes` (413 past it), within [`BODY_TIMEOUT`] (408).
async fn read_body(state: &Shared, body: Body) -> Result<Bytes, Failure> {
    let read = within_body_timeout(axum::body::to_bytes(body, state.max_body_bytes)).await?;
    read.map_err(|e| {
        let too_large = std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            || e.to_string().contains("length limit");
        if too_large {
            Failure::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorKind::InvalidArgument.python_class(),
                format!("the request body is larger than the limit of {} bytes", state.max_body_bytes),
            )
        } else {
            Failure::bad_request(format!("cannot read the request body: {e}"))
        }
    })
}

// ---- v2 infer -------------------------------------------------------------------------

#[derive(Deserialize)]
struct InferRequest {
    id: Option<Value>,
    inputs: Vec<InferInput>,
    #[serde(default)]
    outputs: Option<Vec<RequestedOutput>>,
    #[serde(default)]
    parameters: serde_json::Map<String, Value>,
}

#[derive(Deserialize)]
struct InferInput {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: serde_json::Map<String, Value>,
    #[serde(default)]
    data: Option<Value>,
}

#[derive(Deserialize)]
struct RequestedOutput {
    name: String,
    #[serde(default)]
    parameters: serde_json::Map<String, Value>,
}

async fn infer(AxumState(state): AxumState<State>, Path(name): Path<String>, request: Request) -> Response {
    if let Err(failure) = state.check_name(&name) {
        drain(request.into_body(), state.max_body_bytes).await;
        return state.finish("infer", None, Err(failure));
    }
    let mut admitted = match state.admit() {
        Ok(admitted) => admitted,
        Err(failure) => {
            drain(request.into_body(), state.max_body_bytes).await;
            return state.finish("infer", None, Err(failure));
        }
    };
    let outcome = infer_admitted(&state, request, &mut admitted).await;
    state.finish("infer", Some(&admitted), outcome)
}

async fn infer_version(state: AxumState<State>, Path((name, _)): Path<(String, String)>, request: Request) -> Response {
    infer(state, Path(name), request).await
}

/// A `usize` parameter, or 400 naming it.
fn usize_parameter(parameters: &serde_json::Map<String, Value>, key: &str) -> Result<Option<usize>, Failure> {
    match parameters.get(key) {
        None => Ok(None),
        Some(value) => match value.as_u64() {
            Some(n) if n >= 1 => Ok(Some(n as usize)),
            _ => Err(Failure::bad_request(format!("parameter {key} must be a positive integer, got {value}"))),
        },
    }
}

fn bool_parameter(parameters: &serde_json::Map<String, Value>, key: &str) -> Result<bool, Failure> {
    match parameters.get(key) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(value) => Err(Failure::bad_request(format!("parameter {key} must be true or false, got {value}"))),
    }
}

/// The elements of a serialized BYTES tensor: each a little-endian u32 length, then the bytes.
fn bytes_elements(mut data: &[u8], input: &str) -> Result<Vec<Vec<u8>>, Failure> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let bad = || Failure::bad_request(format!("input {input:?}: malformed BYTES binary data"));
        let len = data.get(..4).ok_or_else(bad)?;
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        let element = data.get(4..4 + len).ok_or_else(bad)?;
        out.push(element.to_vec());
        data = &data[4 + len..];
    }
    Ok(out)
}

async fn infer_admitted(state: &Shared, request: Request, admitted: &mut Admitted) -> Result<Response, Failure> {
    let (parts, body) = request.into_parts();
    if let Some(encoding) = parts.headers.get(header::CONTENT_ENCODING) {
        if encoding.as_bytes() != b"identity" {
            return Err(Failure::bad_request(format!(
                "unsupported Content-Encoding {encoding:?}; send it uncompressed"
            )));
        }
    }
    let body = read_body(state, body).await?;
    let header_length = header_length(&parts.headers, body.len())?;
    let (json_part, binary) = body.split_at(header_length);
    let request: InferRequest = serde_json::from_slice(json_part)
        .map_err(|e| Failure::bad_request(format!("invalid inference request: {e}")))?;
    let [input] = &request.inputs[..] else {
        return Err(Failure::bad_request(format!(
            "expected one input ({INPUT_NAME:?}, BYTES: the encoded images), got {}",
            request.inputs.len()
        )));
    };
    if input.datatype != "BYTES" {
        return Err(Failure::bad_request(format!(
            "input {:?}: datatype must be BYTES (encoded images), got {}",
            input.name, input.datatype
        )));
    }
    let count = input.shape.iter().try_fold(1i64, |acc, &d| if d >= 0 { acc.checked_mul(d) } else { None });
    let count = match (count, input.shape.len()) {
        (Some(n), 1) | (Some(n), 2) if input.shape.len() == 1 || input.shape[1] == 1 => n as usize,
        _ => {
            return Err(Failure::bad_request(format!(
                "input {:?}: shape must be [N] or [N, 1], got {:?}",
                input.name, input.shape
            )))
        }
    };
    if count == 0 || count > state.max_batch {
        return Err(Failure::bad_request(format!(
            "input {:?}: between 1 and {} images per request (--max-batch), got {count}",
            input.name, state.max_batch
        )));
    }
    let images = match (usize_parameter(&input.parameters, "binary_data_size")?, &input.data) {
        (Some(size), _) => {
            if size > binary.len() {
                return Err(Failure::bad_request(format!(
                    "input {:?}: binary_data_size {size} is more than the {} bytes after the JSON header",
                    input.name,
                    binary.len()
                )));
            }
            // The only input: its data is the first `size` bytes after the JSON.
            bytes_elements(&binary[..size], &input.name)?
        }
        (None, Some(_)) => {
            return Err(Failure::bad_request(format!(
                "input {:?}: send the images as binary data (Triton's binary tensor data extension: \
                 parameters.binary_data_size and Inference-Header-Content-Length), not as JSON",
                input.name
            )))
        }
        (None, None) => return Err(Failure::bad_request(format!("input {:?}: no data", input.name))),
    };
    if images.len() != count {
        return Err(Failure::bad_request(format!(
            "input {:?}: shape {:?} says {count} images, the data holds {}",
            input.name,
            input.shape,
            images.len()
        )));
    }
    let top_k = usize_parameter(&request.parameters, "top_k")?.unwrap_or(DEFAULT_TOP_K);
    let binary_default = bool_parameter(&request.parameters, "binary_data_output")?;
    // The outputs to send, each binary or JSON.
    let wanted: Vec<(&str, bool)> = match &request.outputs {
        None => OUTPUTS.iter().map(|(name, _)| (*name, binary_default)).collect(),
        Some(outputs) => {
            let mut wanted = Vec::new();
            for output in outputs {
                let Some((name, _)) = OUTPUTS.iter().find(|(name, _)| *name == output.name) else {
                    return Err(Failure::bad_request(format!(
                        "unknown output {:?}; the outputs are labels, indices, probabilities",
                        output.name
                    )));
                };
                let binary = match output.parameters.get("binary_data") {
                    None => binary_default,
                    Some(_) => bool_parameter(&output.parameters, "binary_data")?,
                };
                wanted.push((*name, binary));
            }
            wanted
        }
    };
    let inputs: Vec<ImageInput> = images
        .into_iter()
        .enumerate()
        .map(|(i, bytes)| ImageInput::Bytes { source: format!("{}[{i}]", input.name), bytes })
        .collect();
    let sources: Vec<String> = inputs.iter().map(ImageInput::source).collect();
    let (rows, errors) = state.preprocess(inputs).await?;
    if let Some((_, error)) = errors.first() {
        // The request fails alone: its images never reach the batcher.
        return Err(Failure::from_error(error));
    }
    let logits = state.run(rows, admitted).await?;
    // As predict: a row holding NaN or infinity is that image's error, not a prediction.
    let (logits, errors) = split_non_finite(logits, errors, 0, sources.len(), |i| sources[i].clone());
    if let Some((_, error)) = errors.first() {
        return Err(Failure::from_error(error));
    }
    let predictions = state.top_k(&logits, top_k);
    Ok(v2_response(state, request.id, &predictions, &wanted))
}

/// `Inference-Header-Content-Length`, or the whole body when absent.
fn header_length(headers: &HeaderMap, body_len: usize) -> Result<usize, Failure> {
    let Some(value) = headers.get(HEADER_LENGTH) else { return Ok(body_len) };
    let length = value.to_str().ok().and_then(|v| v.trim().parse::<usize>().ok());
    match length {
        Some(n) if n <= body_len => Ok(n),
        _ => Err(Failure::bad_request(format!(
            "Inference-Header-Content-Length {value:?} is not a length within the {body_len}-byte body"
        ))),
    }
}

/// The v2 response: a JSON header, then the binary outputs in order.
fn v2_response(
    state: &Shared,
    id: Option<Value>,
    predictions: &[Vec<Prediction>],
    wanted: &[(&str, bool)],
) -> Response {
    let n = predictions.len();
    let k = predictions.first().map_or(0, Vec::len);
    let mut outputs = Vec::new();
    let mut binary: Vec<u8> = Vec::new();
    for &(name, as_binary) in wanted {
        let datatype = OUTPUTS.iter().find(|(o, _)| *o == name).map_or("BYTES", |(_, d)| *d);
        let scores = predictions.iter().flatten();
        let (data, raw): (Value, Vec<u8>) = match name {
            "labels" => (
                json!(scores.clone().map(|p| p.label.as_str()).collect::<Vec<_>>()),
                scores
                    .flat_map(|p| {
                        let mut element = (p.label.len() as u32).to_le_bytes().to_vec();
                        element.extend_from_slice(p.label.as_bytes());
                        element
                    })
                    .collect(),
            ),
            "indices" => (
                json!(scores.clone().map(|p| p.index as i64).collect::<Vec<_>>()),
                scores.flat_map(|p| (p.index as i64).to_le_bytes()).collect(),
            ),
            // As f64 in JSON, so that the number parses back to the same f32.
            _ => (
                json!(scores.clone().map(|p| p.probability as f64).collect::<Vec<_>>()),
                scores.flat_map(|p| p.probability.to_le_bytes()).collect(),
            ),
        };
        let mut output = json!({"name": name, "datatype": datatype, "shape": [n, k]});
        if as_binary {
            output["parameters"] = json!({"binary_data_size": raw.len()});
            binary.extend_from_slice(&raw);
        } else {
            output["data"] = data;
        }
        outputs.push(output);
    }
    let mut document = json!({"model_name": state.name, "model_version": "1", "outputs": outputs});
    if let Some(id) = id {
        document["id"] = id;
    }
    let header = serde_json::to_vec(&document).expect("JSON values serialize");
    if binary.is_empty() && !wanted.iter().any(|(_, b)| *b) {
        return ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], header).into_response();
    }
    let length = header.len();
    let mut body = header;
    body.extend_from_slice(&binary);
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream")),
            (header::HeaderName::from_static(HEADER_LENGTH), HeaderValue::from(length)),
        ],
        body,
    )
        .into_response()
}

// ---- /v1/classify -----------------------------------------------------------------------

#[derive(Deserialize)]
struct ClassifyQuery {
    top_k: Option<usize>,
    /// The name of a raw-body image in the answer and in errors (default "body").
    source: Option<String>,
}

/// One image's answer: the object of `predict --json`, plus `error_class` when it failed.
#[derive(Serialize)]
struct ClassifyLine<'a> {
    source: &'a str,
    label: Option<&'a str>,
    index: Option<usize>,
    probability: Option<f64>,
    top_k: Vec<Score<'a>>,
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_class: Option<&'static str>,
}

#[derive(Serialize)]
struct Score<'a> {
    label: &'a str,
    index: usize,
    /// f64, so that the number parses back to the same f32.
    probability: f64,
}

async fn classify(
    AxumState(state): AxumState<State>,
    Query(query): Query<ClassifyQuery>,
    request: Request,
) -> Response {
    let mut admitted = match state.admit() {
        Ok(admitted) => admitted,
        Err(failure) => {
            drain(request.into_body(), state.max_body_bytes).await;
            return state.finish("classify", None, Err(failure));
        }
    };
    let outcome = classify_admitted(&state, query, request, &mut admitted).await;
    state.finish("classify", Some(&admitted), outcome)
}

async fn classify_admitted(
    state: &Shared,
    query: ClassifyQuery,
    request: Request,
    admitted: &mut Admitted,
) -> Result<Response, Failure> {
    let top_k = match query.top_k {
        Some(0) => return Err(Failure::bad_request("top_k must be at least 1")),
        Some(k) => k,
        None => DEFAULT_TOP_K,
    };
    let multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"));
    let inputs = if multipart {
        within_body_timeout(read_multipart(state, request)).await??
    } else {
        let body = read_body(state, request.into_body()).await?;
        let source = query.source.unwrap_or_else(|| "body".into());
        vec![ImageInput::Bytes { source, bytes: body.to_vec() }]
    };
    let sources: Vec<String> = inputs.iter().map(ImageInput::source).collect();
    let (rows, errors) = state.preprocess(inputs).await?;
    let logits = state.run(rows, admitted).await?;
    // As predict: a row holding NaN or infinity is that image's error, not a prediction.
    let (logits, errors) = split_non_finite(logits, errors, 0, sources.len(), |i| sources[i].clone());
    let predictions = state.top_k(&logits, top_k);
    let mut predictions = predictions.iter();
    let mut errors = errors.into_iter().peekable();
    let mut status = StatusCode::OK;
    let mut body = String::new();
    for (index, source) in sources.iter().enumerate() {
        let line = match errors.next_if(|(i, _)| *i == index) {
            Some((_, error)) => {
                let failure = Failure::from_error(&error);
                state.metrics.count_error(failure.class);
                if status == StatusCode::OK {
                    status = failure.status;
                }
                ClassifyLine {
                    source,
                    label: None,
                    index: None,
                    probability: None,
                    top_k: Vec::new(),
                    error: Some(failure.message),
                    error_class: Some(failure.class),
                }
            }
            None => {
                let top = predictions.next().expect("one row per decoded image");
                let scores: Vec<Score<'_>> = top
                    .iter()
                    .map(|p| Score { label: &p.label, index: p.index, probability: p.probability as f64 })
                    .collect();
                ClassifyLine {
                    source,
                    label: top.first().map(|p| p.label.as_str()),
                    index: top.first().map(|p| p.index),
                    probability: top.first().map(|p| p.probability as f64),
                    top_k: scores,
                    error: None,
                    error_class: None,
                }
            }
        };
        body.push_str(&serde_json::to_string(&line).expect("serializable"));
        body.push('\n');
    }
    let content_type = if sources.len() == 1 { "application/json" } else { "application/x-ndjson" };
    Ok((status, [(header::CONTENT_TYPE, content_type)], body).into_response())
}

/// The images of a `multipart/form-data` body, each named by its file name (or field name).
async fn read_multipart(state: &Shared, request: Request) -> Result<Vec<ImageInput>, Failure> {
    let mut inputs = Vec::new();
    let mut form = Multipart::from_request(request, &())
        .await
        .map_err(|e| Failure::bad_request(format!("invalid multipart body: {e}")))?;
    loop {
        let field = match form.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => return Err(multipart_failure(state, &e.body_text(), e.status())),
        };
        let source =
            field.file_name().or(field.name()).map_or_else(|| format!("part[{}]", inputs.len()), str::to_string);
        let bytes = field.bytes().await.map_err(|e| multipart_failure(state, &e.body_text(), e.status()))?;
        if inputs.len() == state.max_batch {
            return Err(Failure::bad_request(format!("at most {} images per request (--max-batch)", state.max_batch)));
        }
        inputs.push(ImageInput::Bytes { source, bytes: bytes.to_vec() });
    }
    if inputs.is_empty() {
        return Err(Failure::bad_request("the multipart body holds no image"));
    }
    Ok(inputs)
}

fn multipart_failure(state: &Shared, text: &str, status: StatusCode) -> Failure {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return Failure::new(
            status,
            ErrorKind::InvalidArgument.python_class(),
            format!("the request body is larger than the limit of {} bytes", state.max_body_bytes),
        );
    }
    Failure::bad_request(format!("invalid multipart body: {text}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_tensors_are_length_prefixed_elements() {
        let mut data = Vec::new();
        for element in [&b"abc"[..], b"", b"\xff\xd8"] {
            data.extend_from_slice(&(element.len() as u32).to_le_bytes());
            data.extend_from_slice(element);
        }
        assert_eq!(bytes_elements(&data, "image").ok().unwrap(), vec![b"abc".to_vec(), vec![], vec![0xff, 0xd8]]);
        // A length past the end, or a cut length prefix: a 400 naming the input.
        for bad in [&data[..data.len() - 1], &data[..2]] {
            let failure = bytes_elements(bad, "image").err().unwrap();
            assert_eq!(failure.status, StatusCode::BAD_REQUEST);
            assert!(failure.message.contains("\"image\": malformed BYTES"), "{}", failure.message);
        }
    }

    #[test]
    fn the_header_length_must_lie_within_the_body() {
        let mut headers = HeaderMap::new();
        assert_eq!(header_length(&headers, 10).ok(), Some(10));
        headers.insert(HEADER_LENGTH, HeaderValue::from_static("4"));
        assert_eq!(header_length(&headers, 10).ok(), Some(4));
        for bad in ["11", "-1", "x"] {
            headers.insert(HEADER_LENGTH, HeaderValue::from_static(bad));
            assert_eq!(header_length(&headers, 10).err().unwrap().status, StatusCode::BAD_REQUEST);
        }
    }
}
