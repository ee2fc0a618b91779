"""How to spend two threads on ONNX Runtime: one run of 1 or 2 intra-op threads, two
concurrent runs of one thread (on one session or two), batch 1 and 32, with a control in the
same process (``zlib.compress`` on two threads against one: ~2x with a free second core, ~1x
with none). Interleaved in a shuffled order per round; prints best and median ms per image.

    .venv/bin/python benchmarks/ort_thread_split.py MODEL.onnx [--rounds 10]

The data behind the thread rule (docs/inference.md, "Threads"; docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
import zlib
from concurrent.futures import ThreadPoolExecutor


def main() -> None:
    import numpy as np
    import onnxruntime as ort

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--runs", type=int, default=32, help="images per measurement")
    args = parser.parse_args()

    def session(intra: int):
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = intra, 1
        options.log_severity_level = 3
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])

    one, one_b, two = session(1), session(1), session(2)
    meta = one.get_inputs()[0]
    crop = meta.shape[2] if isinstance(meta.shape[2], int) else 224
    x1 = np.zeros((1, 3, crop, crop), np.float32)
    x32 = np.zeros((32, 3, crop, crop), np.float32)
    n = args.runs
    pool = ThreadPoolExecutor(2)
    data = os.urandom(1 << 19)

    def sequential(s):
        for _ in range(n):
            s.run(None, {meta.name: x1})

    def concurrent(a, b):
        def work(s):
            for _ in range(n // 2):
                s.run(None, {meta.name: x1})

        list(pool.map(work, [a, b]))

    def zlib_two():
        list(pool.map(lambda _: [zlib.compress(data, 6) for _ in range(4)], [0, 1]))

    cases = {
        "zlib 1 thread (8 calls)": (lambda: [zlib.compress(data, 6) for _ in range(8)], 8),
        "zlib 2 threads (8 calls)": (zlib_two, 8),
        "batch 1, 1 run x 1 thread": (lambda: sequential(one), n),
        "batch 1, 1 run x 2 threads": (lambda: sequential(two), n),
        "batch 1, 2 runs x 1 thread, one session": (lambda: concurrent(one, one), n),
        "batch 1, 2 runs x 1 thread, two sessions": (lambda: concurrent(one, one_b), n),
        "batch 32, 1 run x 2 threads": (lambda: two.run(None, {meta.name: x32}), 32),
    }
    for fn, _ in cases.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for r in range(args.rounds):
        order = list(cases.items())
        random.Random(r).shuffle(order)
        for name, (fn, units) in order:
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) / units * 1e3)
    print(os.popen("uptime").read().strip())
    for name, ts in times.items():
        print(f"{name:42s} best {min(ts):8.3f}  median {statistics.median(ts):8.3f} ms per unit")


if __name__ == "__main__":
    main()
