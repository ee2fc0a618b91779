"""Load test of ``butterfly-onnx serve`` on loopback: throughput and p50/p90/p99 latency at
several client concurrencies, against in-process ``Classifier.predict(folder)`` throughput,
on the same cores (the load generator shares them), in interleaved rounds, best round kept.

    .venv/bin/python benchmarks/serve_load.py MODEL.onnx [--rounds 3] [--requests 192]
        [--concurrency 1,4,16] [--route classify|v2] [--server rust|python]
        [--max-batch 16] [--max-wait-ms 2] [--json OUT.json]

Images: 224x224 JPEGs (quality 90) made from the real photos of tests/reference_images.py
(scikit-image, scikit-learn, matplotlib), one image per request.  Bounded: ``--requests``
per measurement, a 120 s timeout per request, 127.0.0.1 only.  Every answer is checked equal
to ``predict``'s top-1 on the same file.  The figures of docs/serving.md come from here.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # reference_images


def make_jpegs(folder: Path) -> list[Path]:
    from PIL import Image

    from reference_images import real_photos

    paths = []
    for name, source in sorted(real_photos().items()):
        with Image.open(source) as image:
            rgb = image.convert("RGB").resize((224, 224), Image.Resampling.BILINEAR)
        path = folder / f"{name}.jpg"
        buffer = io.BytesIO()
        rgb.save(buffer, "JPEG", quality=90)
        path.write_bytes(buffer.getvalue())
        paths.append(path)
    return paths


class Server:
    def __init__(self, model: str, kind: str, extra: list[str]) -> None:
        from butterfly_onnx._backends.rust import find_onnxruntime_library

        env = {**os.environ, "BUTTERFLY_ONNX_ORT_LIB": str(find_onnxruntime_library())}
        cli = (
            [str(ROOT / "target/release/butterfly-onnx")]
            if kind == "rust"
            else [sys.executable, "-m", "butterfly_onnx"]
        )
        self.process = subprocess.Popen(
            [*cli, "serve", model, "--port", "0", "--threads", "2", *extra],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        line = self.process.stdout.readline()  # type: ignore[union-attr]
        match = re.search(r"http://([\d.]+):(\d+) \(model (.+)\)", line)
        if not match:
            self.process.kill()
            raise SystemExit(f"the server did not start: {line!r}")
        self.host, self.port, self.name = match[1], int(match[2]), match[3]

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)


def v2_request(data: bytes) -> tuple[bytes, dict]:
    import numpy as np
    import tritonclient.http as triton

    inp = triton.InferInput("image", [1], "BYTES")
    inp.set_data_from_numpy(np.array([data], dtype=np.object_))
    outputs = [triton.InferRequestedOutput(n, binary_data=False) for n in ("labels",)]
    body, size = triton.InferenceServerClient.generate_request_body([inp], outputs=outputs, parameters={"top_k": 1})
    return body, {"Inference-Header-Content-Length": str(size)}


def load(server: Server, files: list[Path], want: dict[Path, str], requests: int, clients: int, route: str):
    """`requests` requests from `clients` threads, each on its own keep-alive connection."""
    payloads = {p: p.read_bytes() for p in files}
    bodies = {p: v2_request(d) for p, d in payloads.items()} if route == "v2" else None
    latencies: list[float] = []
    counter = iter(range(requests))

    def client(_: int) -> int:
        connection = http.client.HTTPConnection(server.host, server.port, timeout=120)
        done = 0
        for i in counter:  # shared iterator: each request taken once (the GIL guards next())
            path = files[i % len(files)]
            started = time.perf_counter()
            if bodies is not None:
                body, headers = bodies[path]
                connection.request("POST", f"/v2/models/{server.name}/infer", body=body, headers=headers)
            else:
                connection.request("POST", "/v1/classify?top_k=1", body=payloads[path])
            response = connection.getresponse()
            answer = json.loads(response.read())
            latencies.append(time.perf_counter() - started)
            assert response.status == 200, answer
            label = answer["outputs"][0]["data"][0] if bodies is not None else answer["label"]
            assert label == want[path], (path, label, want[path])
            done += 1
        connection.close()
        return done

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        assert sum(pool.map(client, range(clients))) == requests
    wall = time.perf_counter() - started
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"images_per_s": requests / wall, "p50_ms": q[49] * 1e3, "p90_ms": q[89] * 1e3, "p99_ms": q[98] * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=192)
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--route", choices=("classify", "v2"), default="classify")
    parser.add_argument("--server", choices=("rust", "python"), default="rust")
    parser.add_argument("--max-batch", type=int)
    parser.add_argument("--max-wait-ms", type=int)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from butterfly_onnx import Classifier

    concurrencies = [int(c) for c in args.concurrency.split(",")]
    extra = []
    if args.max_batch is not None:
        extra += ["--max-batch", str(args.max_batch)]
    if args.max_wait_ms is not None:
        extra += ["--max-wait-ms", str(args.max_wait_ms)]
    with tempfile.TemporaryDirectory() as tmp:
        files = make_jpegs(Path(tmp))
        folder = [files[i % len(files)] for i in range(args.requests)]
        classifier = Classifier(args.model, backend="rust", threads=2)
        want = {p: pred.label for p, pred in zip(files, classifier.predict(files, top_k=1), strict=True)}
        server = Server(args.model, args.server, extra)
        best: dict[str, dict] = {}
        try:
            load(server, files, want, 32, 4, args.route)  # warm-up
            for round_ in range(args.rounds):
                started = time.perf_counter()
                classifier.predict(folder, top_k=1)
                rate = len(folder) / (time.perf_counter() - started)
                results = {"predict(folder)": {"images_per_s": rate}}
                for clients in concurrencies:
                    results[f"serve c={clients}"] = load(server, files, want, args.requests, clients, args.route)
                for key, value in results.items():
                    if key not in best or value["images_per_s"] > best[key]["images_per_s"]:
                        best[key] = value
                print(f"round {round_ + 1}: " + ", ".join(f"{k} {v['images_per_s']:.1f}/s" for k, v in results.items()))
        finally:
            server.stop()
    base = best["predict(folder)"]["images_per_s"]
    print(f"\nbest of {args.rounds} rounds, {args.requests} images each, route {args.route}, server {args.server}")
    print(f"{'':18} {'images/s':>9} {'x predict':>9} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7}")
    for key, value in best.items():
        cells = [f"{value.get(k, float('nan')):7.1f}" for k in ("p50_ms", "p90_ms", "p99_ms")]
        print(f"{key:18} {value['images_per_s']:9.1f} {value['images_per_s'] / base:9.2f} " + " ".join(cells))
    if args.json:
        args.json.write_text(json.dumps({"settings": vars(args) | {"json": str(args.json)}, "best": best}, indent=2))


if __name__ == "__main__":
    main()
