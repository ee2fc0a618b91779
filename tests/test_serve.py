"""``butterfly-onnx serve`` (rust/butterfly-onnx/src/serve/, python/butterfly_onnx/serving.py).

Every test starts a real server process on 127.0.0.1 on a free port (``--port 0``; the port
is read from the line it prints) and talks to it over HTTP: the v2 endpoints through
``tritonclient[http]`` (the Open Inference Protocol client users have, with Triton's binary
tensor data extension on by default), the convenience route and ``/metrics`` through
``http.client``.  Every answer is compared with :meth:`Classifier.predict` on the same file
(rust backend, the same decoder and runtime) exactly: labels, indices and the float32
probabilities bit for bit, whatever batch the server ran them in.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from contract_models import require_backend

pytestmark = pytest.mark.timeout(300)

TOP_K = 3
CLIENTS = 16
#: Left out (decoding dominates; test_classifier covers them).
SLOW = ("jpeg_6000x4000", "jpeg_tall_257x26000")
LISTENING = re.compile(r"listening on http://([\d.]+):(\d+) \(model (.+)\)")


class Server:
    """A ``butterfly-onnx serve`` process (Python CLI by default, or the Rust CLI)."""

    def __init__(self, model: Path, *args: str, rust_cli: Path | None = None) -> None:
        from butterfly_onnx._backends.rust import find_onnxruntime_library

        env = {**os.environ, "BUTTERFLY_ONNX_ORT_LIB": str(find_onnxruntime_library())}
        command = [str(rust_cli)] if rust_cli else [sys.executable, "-m", "butterfly_onnx"]
        command += ["serve", str(model), "--host", "127.0.0.1", "--port", "0", "--threads", "2", *args]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # the server prints it once listening
        match = LISTENING.search(line)
        if match is None:
            self.process.kill()
            raise AssertionError(f"no listening line: {line!r} {self.process.stderr.read()!r}")  # type: ignore[union-attr]
        self.host, self.port, self.name = match[1], int(match[2]), match[3]

    @property
    def url(self) -> str:
        return f"{self.host}:{self.port}"

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        connection = http.client.HTTPConnection(self.host, self.port, timeout=120)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.headers, response.read()  # case-insensitive headers
        finally:
            connection.close()

    def metric(self, name: str) -> float:
        _, _, text = self.request("GET", "/metrics")
        match = re.search(rf"^{re.escape(name)} (\S+)$", text.decode(), re.MULTILINE)
        assert match, f"{name} not in /metrics"
        return float(match[1])

    def rss_peak_kib(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", status)[1])  # type: ignore[index]

    def stop(self, timeout: float = 15) -> tuple[int, float]:
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise
        finally:
            for stream in (self.process.stdout, self.process.stderr):
                if stream:
                    stream.close()
        return code, time.monotonic() - started


@pytest.fixture(scope="module")
def model(contract_model) -> Path:
    require_backend("rust")
    return contract_model.path


@pytest.fixture(scope="module")
def images(corpus) -> list[Path]:
    return [path for name, path in sorted(corpus.items()) if name not in SLOW]


@pytest.fixture(scope="module")
def expected(model, images) -> dict[Path, list[tuple[str, int, float]]]:
    """Classifier.predict on every image: the reference every answer must equal."""
    from butterfly_onnx import Classifier

    classifier = Classifier(model, backend="rust", threads=2)
    predictions = classifier.predict(images, top_k=TOP_K, on_error="skip")
    return {
        path: [(s.label, s.index, s.probability) for s in p.top_k]
        for path, p in zip(images, predictions, strict=True)
        if p.ok
    }


@pytest.fixture(scope="module")
def server(model):
    running = Server(model)
    yield running
    running.stop()


def v2_body(datas: list[bytes], binary_output: bool = True, top_k: int = TOP_K) -> tuple[bytes, dict]:
    """A v2 infer request as tritonclient encodes it (its own request builder)."""
    import tritonclient.http as triton

    inp = triton.InferInput("image", [len(datas)], "BYTES")
    inp.set_data_from_numpy(np.array(datas, dtype=np.object_))
    outputs = [
        triton.InferRequestedOutput(n, binary_data=binary_output) for n in ("labels", "indices", "probabilities")
    ]
    body, json_size = triton.InferenceServerClient.generate_request_body(
        [inp], outputs=outputs, parameters={"top_k": top_k}
    )
    headers = {"Content-Type": "application/octet-stream"}
    if json_size is not None:
        headers["Inference-Header-Content-Length"] = str(json_size)
    return body, headers


def v2_result(status: int, headers: dict, body: bytes) -> list[list[tuple[str, int, float]]]:
    import tritonclient.http as triton

    assert status == 200, body[:300]
    length = headers.get("Inference-Header-Content-Length")
    result = triton.InferenceServerClient.parse_response_body(
        body, header_length=int(length) if length is not None else None
    )
    return rows(result)


def rows(result) -> list[list[tuple[str, int, float]]]:
    labels, indices, probs = (result.as_numpy(n) for n in ("labels", "indices", "probabilities"))
    assert probs.dtype == np.float32 and indices.dtype == np.int64
    text = np.vectorize(lambda v: v.decode() if isinstance(v, bytes) else v, otypes=[object])(labels)
    return [
        [(text[i, j], int(indices[i, j]), float(probs[i, j])) for j in range(labels.shape[1])]
        for i in range(labels.shape[0])
    ]


def test_v2_endpoints_with_tritonclient(server, images, expected, model):
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    from butterfly_onnx import Classifier

    client = triton.InferenceServerClient(server.url)
    assert server.name == model.stem
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(server.name)
    assert not client.is_model_ready("no_such_model")
    meta = client.get_model_metadata(server.name)
    assert meta["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]}]
    assert [(o["name"], o["datatype"]) for o in meta["outputs"]] == [
        ("labels", "BYTES"),
        ("indices", "INT64"),
        ("probabilities", "FP32"),
    ]
    assert meta["parameters"]["contract"] == Classifier(model, backend="rust").contract.to_dict()

    good = [p for p in images if p in expected][:6]
    data = np.array([p.read_bytes() for p in good], dtype=np.object_)
    inp = triton.InferInput("image", [len(good)], "BYTES")
    inp.set_data_from_numpy(data)  # binary by default
    # No outputs named: tritonclient asks for every output in binary.
    result = client.infer(server.name, [inp], parameters={"top_k": TOP_K})
    assert rows(result) == [expected[p] for p in good]
    # Outputs as JSON, top_k 1 (the probabilities travel as float64 text and parse back exactly).
    outputs = [triton.InferRequestedOutput(n, binary_data=False) for n in ("labels", "probabilities", "indices")]
    result = client.infer(server.name, [inp], outputs=outputs, parameters={"top_k": 1})
    assert result.get_response()["outputs"][0]["data"] == [expected[p][0][0] for p in good]
    assert rows(result) == [expected[p][:1] for p in good]
    with pytest.raises(InferenceServerException, match="unknown model"):
        client.infer("no_such_model", [inp])
    bad = triton.InferInput("image", [1], "FP32")
    bad.set_data_from_numpy(np.zeros(1, dtype=np.float32))
    with pytest.raises(InferenceServerException, match="datatype must be BYTES"):
        client.infer(server.name, [bad])
    client.close()


def test_classify_route_answers_like_predict_json(server, images, expected, model):
    from butterfly_onnx import Classifier

    path = next(p for p in images if p in expected)
    want = Classifier(model, backend="rust").predict(path, top_k=TOP_K)[0].to_dict()
    status, headers, body = server.request("POST", f"/v1/classify?top_k={TOP_K}&source={path.name}", path.read_bytes())
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {**want, "source": path.name}
    # Multipart: one JSON line per part, a bad part failing alone.
    boundary = "butterfly-boundary"
    parts = b""
    for filename, data in ((path.name, path.read_bytes()), ("text.jpg", b"not an image")):
        parts += (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
                f"Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            + data
            + b"\r\n"
        )
    parts += f"--{boundary}--\r\n".encode()
    status, _, body = server.request(
        "POST", f"/v1/classify?top_k={TOP_K}", parts, {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    lines = [json.loads(line) for line in body.splitlines()]
    assert status == 400
    assert lines[0] == {**want, "source": path.name}
    assert lines[1]["error_class"] == "ImageDecodeError" and lines[1]["error"].startswith("text.jpg: cannot decode")
    assert lines[1]["label"] is None and lines[1]["top_k"] == []


def test_concurrent_load_is_exact_and_batched(server, images, expected):
    """Hundreds of requests from 16 concurrent clients: none lost or failed, every answer
    equal to predict's, and the batcher really ran several requests per model run."""
    good = [p for p in images if p in expected]
    batches_before = server.metric("butterfly_batch_size_count")
    images_before = server.metric("butterfly_images_total")
    work = [good[i % len(good)] for i in range(320)]

    def one(i: int):
        path = work[i]
        if i % 2:
            body, headers = v2_body([path.read_bytes()])
            return path, v2_result(*server.request("POST", f"/v2/models/{server.name}/infer", body, headers))[0]
        status, _, body = server.request("POST", f"/v1/classify?top_k={TOP_K}", path.read_bytes())
        assert status == 200, body
        answer = json.loads(body)
        return path, [(s["label"], s["index"], s["probability"]) for s in answer["top_k"]]

    with ThreadPoolExecutor(CLIENTS) as pool:
        answers = list(pool.map(one, range(len(work))))
    assert len(answers) == len(work)
    for path, got in answers:
        assert got == expected[path], path
    batches = server.metric("butterfly_batch_size_count") - batches_before
    assert server.metric("butterfly_images_total") - images_before == len(work)
    assert batches < len(work), "no model run held more than one request"
    assert server.metric("butterfly_queue_depth") == 0


def test_a_bad_image_is_rejected_alone(server, images, expected):
    good = [p for p in images if p in expected][:8]
    truncated = good[0].read_bytes()[:300]

    def one(i: int):
        if i == 5:
            return server.request("POST", "/v1/classify?source=broken.jpg", truncated)
        body, headers = v2_body([good[i % len(good)].read_bytes()])
        return server.request("POST", f"/v2/models/{server.name}/infer", body, headers)

    with ThreadPoolExecutor(CLIENTS) as pool:
        answers = list(pool.map(one, range(CLIENTS)))
    for i, (status, headers, body) in enumerate(answers):
        if i == 5:
            assert status == 400
            error = json.loads(body)
            assert error["error_class"] == "ImageDecodeError" and error["error"].startswith("broken.jpg: cannot decode")
        else:
            assert v2_result(status, headers, body)[0] == expected[good[i % len(good)]]
    # In a multi-image v2 request the bad image fails the request, naming its element.
    body, headers = v2_body([good[0].read_bytes(), b"junk"])
    status, _, answer = server.request("POST", f"/v2/models/{server.name}/infer", body, headers)
    assert status == 400 and json.loads(answer)["error"].startswith("image[1]: cannot decode image")
    errors = server.metric('butterfly_errors_total{class="ImageDecodeError"}')
    assert errors >= 2


def test_past_the_queue_503_with_retry_after_and_bounded_memory(model, images, expected):
    server = Server(model, "--max-queue", "4", "--max-wait-ms", "20")
    try:
        good = [p for p in images if p in expected]
        server.request("POST", "/v1/classify", good[0].read_bytes())  # warm
        before = server.rss_peak_kib()

        def one(i: int):
            return good[i % len(good)], server.request(
                "POST", f"/v1/classify?top_k={TOP_K}", good[i % len(good)].read_bytes()
            )

        with ThreadPoolExecutor(48) as pool:
            answers = list(pool.map(one, range(480)))
        codes = [status for _, (status, _, _) in answers]
        assert codes.count(503) > 0 and codes.count(200) > 0 and set(codes) == {200, 503}
        for path, (status, headers, body) in answers:
            if status == 503:
                assert headers["Retry-After"] == "1" and json.loads(body)["error_class"] == "QueueFull"
            else:
                assert [(s["label"], s["index"], s["probability"]) for s in json.loads(body)["top_k"]] == expected[path]
        # 480 requests, at most 4 admitted at once: the peak stays within a few requests' worth.
        assert server.rss_peak_kib() - before < 200 * 1024
        assert server.metric('butterfly_errors_total{class="QueueFull"}') == codes.count(503)
    finally:
        server.stop()


def test_limits_body_size_and_pixels(model, images, expected):
    server = Server(model, "--max-body-bytes", "100000", "--max-image-pixels", "70000")
    try:
        big = max(images, key=lambda p: p.stat().st_size)
        assert big.stat().st_size > 100_000
        status, _, body = server.request("POST", "/v1/classify", big.read_bytes())
        assert status == 413 and "larger than the limit of 100000 bytes" in json.loads(body)["error"]
        import io

        from PIL import Image

        buffer = io.BytesIO()
        Image.new("RGB", (300, 300), (10, 200, 30)).save(buffer, "PNG")
        status, _, body = server.request("POST", "/v1/classify?source=huge.png", buffer.getvalue())
        error = json.loads(body)
        assert status == 400 and error["error_class"] == "ImageTooLargeError" and "huge.png" in error["error"]
    finally:
        server.stop()


def test_sigterm_answers_the_16_in_flight_then_exits(model, images, expected):
    # A long batching wait keeps the requests in the server when the signal comes.
    server = Server(model, "--max-wait-ms", "1500", "--max-batch", "32")
    good = [p for p in images if p in expected]
    results: list = [None] * CLIENTS

    def one(i: int) -> None:
        path = good[i % len(good)]
        results[i] = (path, server.request("POST", f"/v1/classify?top_k={TOP_K}", path.read_bytes()))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    while server.metric("butterfly_requests_in_flight") < CLIENTS:
        assert time.monotonic() < deadline, "the 16 requests never got in"
        time.sleep(0.01)
    code, took = server.stop(timeout=15)
    for thread in threads:
        thread.join(timeout=15)
    assert code == 0 and took < 15
    for path, (status, _, body) in results:
        assert status == 200, body
        assert [(s["label"], s["index"], s["probability"]) for s in json.loads(body)["top_k"]] == expected[path]


def _rust_cli() -> Path | None:
    candidate = Path(
        os.environ.get("BUTTERFLY_ONNX_RUST_CLI", Path(__file__).parents[1] / "target/release/butterfly-onnx")
    )
    return candidate if candidate.is_file() and os.access(candidate, os.X_OK) else None


@pytest.mark.skipif(_rust_cli() is None, reason="the Rust CLI is not built (target/release/butterfly-onnx)")
def test_the_rust_cli_serves_the_same(model, images, expected):
    server = Server(model, "--name", "butterflies", rust_cli=_rust_cli())
    try:
        assert server.name == "butterflies"
        good = [p for p in images if p in expected][:4]
        body, headers = v2_body([p.read_bytes() for p in good])
        assert v2_result(*server.request("POST", "/v2/models/butterflies/infer", body, headers)) == [
            expected[p] for p in good
        ]
    finally:
        code, took = server.stop()
    assert code == 0 and took < 15


@pytest.mark.parametrize("which", ["python", "rust"])
def test_an_int8_model_served_with_its_fallback_answers_as_the_classifier(which, model, int8_variant, images):
    """``serve --fallback-model``: the batcher answers the near-ties with the fp32 model, as
    ``Classifier(int8, fallback_model=fp32).predict`` does (and not as int8 alone)."""
    from butterfly_onnx import Classifier

    rust_cli = _rust_cli() if which == "rust" else None
    if which == "rust" and rust_cli is None:
        pytest.skip("the Rust CLI is not built (target/release/butterfly-onnx)")
    good = [p for p in images if p.suffix in (".jpg", ".png")][:12]

    def predictions(**kwargs):
        found = Classifier(int8_variant, backend="rust", **kwargs).predict(good, top_k=TOP_K)
        return [[(s.label, s.index, s.probability) for s in p.top_k] for p in found]

    expected = predictions(fallback_model=model)
    assert expected != predictions()  # some of these images are near-ties int8 alone answers otherwise
    server = Server(int8_variant, "--fallback-model", str(model), rust_cli=rust_cli)
    try:
        body, headers = v2_body([p.read_bytes() for p in good])
        assert v2_result(*server.request("POST", f"/v2/models/{server.name}/infer", body, headers)) == expected
    finally:
        code, _ = server.stop()
    assert code == 0


def test_model_rows_do_not_depend_on_the_batch(model, images):
    """What exactness rests on: ONNX Runtime gives an image the same output alone or in any
    batch (so the batcher may put requests together)."""
    from butterfly_onnx import _native
    from butterfly_onnx._backends.rust import find_onnxruntime_library

    classifier = _native.Classifier(str(model), threads=1, ort_library=str(find_onnxruntime_library()))
    batch, _ = classifier.preprocess([(str(p), str(p)) for p in images[:12]])
    alone = np.concatenate([classifier.run(batch[i : i + 1]) for i in range(len(batch))])
    for n in (2, 3, 5, 8, len(batch)):
        assert np.array_equal(classifier.run(batch[:n]), alone[:n]), n


def test_python_api_checks_its_arguments_before_serving(model):
    import butterfly_onnx
    from butterfly_onnx.errors import InvalidArgumentError, InvalidArgumentTypeError, ModelNotFoundError
    from butterfly_onnx.serving import serve

    assert butterfly_onnx.serve is serve
    with pytest.raises(InvalidArgumentError, match="port"):
        serve(model, port=70000)
    with pytest.raises(InvalidArgumentError, match="max_batch must be at least 1"):
        serve(model, max_batch=0)
    with pytest.raises(InvalidArgumentTypeError, match="max_queue"):
        serve(model, max_queue="8")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="max_wait_ms"):
        serve(model, max_wait_ms=-1)
    with pytest.raises(ModelNotFoundError):
        serve(model.parent / "missing.onnx", port=0)
    with pytest.raises(InvalidArgumentError, match="fallback_margin needs fallback_model"):
        serve(model, port=0, fallback_margin=0.5)
    with pytest.raises(InvalidArgumentError, match="records no fallback_margin"):
        serve(model, port=0, fallback_model=model)  # an fp32 file records none
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(InvalidArgumentError, match=f"cannot listen on 127.0.0.1:{port}"):
            serve(model, port=port, threads=1)


_SERVE_TWICE = """
import signal, sys, time
from butterfly_onnx import serve
# Python leaves SIGINT ignored when its parent ignored it (a shell's background job): Ctrl-C as usual
signal.signal(signal.SIGINT, signal.default_int_handler)
serve(sys.argv[1], port=0, threads=1)
print("returned", signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, flush=True)
serve(sys.argv[1], port=0, threads=1)
print("returned again", flush=True)
time.sleep(60)
print("outlived SIGTERM", flush=True)
"""


def test_python_serve_returns_on_sigterm_or_ctrl_c_and_leaves_sigterm_as_it_was(model):
    """``butterfly_onnx.serve`` in a process that goes on: SIGTERM stops the first server, Ctrl-C
    (SIGINT) a second one, and SIGTERM then ends the process as it would have before serving
    (tokio's signal handlers, which stay once installed, kept it alive)."""
    import queue

    from butterfly_onnx._backends.rust import find_onnxruntime_library

    env = {**os.environ, "BUTTERFLY_ONNX_ORT_LIB": str(find_onnxruntime_library())}
    process = subprocess.Popen(
        [sys.executable, "-c", _SERVE_TWICE, str(model)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        for stop, after in ((signal.SIGTERM, "returned True"), (signal.SIGINT, "returned again")):
            assert LISTENING.search(lines.get(timeout=60))
            process.send_signal(stop)
            assert lines.get(timeout=30).strip() == after
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == -signal.SIGTERM
    finally:
        process.kill()
        process.wait()
        reader.join(timeout=10)
        err = process.stderr.read()  # type: ignore[union-attr]
        process.stdout.close()  # type: ignore[union-attr]
        process.stderr.close()  # type: ignore[union-attr]
    assert "Traceback" not in err, err


def test_requests_whose_clients_leave_release_their_place(model, images, expected):
    """Clients that send a request and hang up: their places in the queue come back once
    their rows are dropped (never leaked), and the server goes on answering."""
    import socket

    server = Server(model, "--max-queue", "2", "--max-wait-ms", "500")
    try:
        path = next(p for p in images if p in expected)
        data = path.read_bytes()
        for _ in range(2):
            with socket.create_connection((server.host, server.port)) as raw:
                head = f"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n\r\n"
                raw.sendall(head.encode() + data)
                deadline = time.monotonic() + 30
                while server.metric("butterfly_requests_in_flight") < 1:
                    assert time.monotonic() < deadline
                    time.sleep(0.005)
        deadline = time.monotonic() + 30
        # Gone from the handlers (in flight), then from the batcher's queue (dropped unrun).
        while server.metric("butterfly_requests_in_flight") + server.metric("butterfly_queue_depth") > 0:
            assert time.monotonic() < deadline, "an abandoned request kept its place"
            time.sleep(0.01)
        for _ in range(3):  # both places free again: answered, not 503
            status, _, body = server.request("POST", f"/v1/classify?top_k={TOP_K}", data)
            assert status == 200, body
            assert [(s["label"], s["index"], s["probability"]) for s in json.loads(body)["top_k"]] == expected[path]
    finally:
        server.stop()


def test_python_serve_in_a_thread_stops_when_its_event_is_set(model, images, expected):
    """``butterfly_onnx.serve`` in a thread of this process: ``listening`` gives the port taken
    once the server answers (the callback itself probes readiness), requests are answered as
    Classifier.predict answers them, and setting ``stop`` ends it (Python's signals reach the
    main thread only, so before ``stop`` a server in a thread could not be stopped at all)."""
    import queue

    from butterfly_onnx import serve

    bound: queue.Queue[tuple[str, int, int]] = queue.Queue()
    stop = threading.Event()
    failed: list[BaseException] = []

    def ready(host: str, port: int) -> None:
        connection = http.client.HTTPConnection(host, port, timeout=30)
        try:
            connection.request("GET", "/v2/health/ready")
            bound.put((host, port, connection.getresponse().status))
        finally:
            connection.close()

    def run() -> None:
        try:
            serve(model, port=0, threads=1, stop=stop, listening=ready)
        except BaseException as exc:  # the test reads it below
            failed.append(exc)
            bound.put(("", 0, 0))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        host, port, ready_status = bound.get(timeout=60)
        assert failed == [] and ready_status == 200, failed
        path = next(p for p in images if p in expected)
        connection = http.client.HTTPConnection(host, port, timeout=60)
        try:
            connection.request("POST", f"/v1/classify?top_k={TOP_K}", body=path.read_bytes())
            response = connection.getresponse()
            assert response.status == 200
            scores = json.loads(response.read())["top_k"]
            assert [(s["label"], s["index"], s["probability"]) for s in scores] == expected[path]
        finally:
            connection.close()
        assert thread.is_alive()
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive(), "serve went on after stop was set"
    assert failed == []
    with pytest.raises(ConnectionRefusedError):
        http.client.HTTPConnection(host, port, timeout=5).request("GET", "/v2/health/live")


@pytest.mark.timeout(60)
def test_python_serve_raises_what_its_listening_callback_raises(model):
    from butterfly_onnx import serve
    from butterfly_onnx.errors import InvalidArgumentTypeError

    class Refused(Exception):
        pass

    def listening(host: str, port: int) -> None:
        raise Refused(f"{host}:{port}")

    with pytest.raises(Refused, match=r"127\.0\.0\.1:\d+"):
        serve(model, port=0, threads=1, listening=listening)
    with pytest.raises(InvalidArgumentTypeError, match="stop must be a threading.Event"):
        serve(model, port=0, stop=True)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentTypeError, match="listening must be a callable"):
        serve(model, port=0, listening="print")  # type: ignore[arg-type]
