"""How ``threads=N`` is shared out (docs/inference.md, "Threads"; the Rust core's
``classifier::pipeline::thread_split``): decoding on N threads, ``min(N, max runs, memory
budget / model size)`` ONNX Runtime runs at once with ``max(1, N // runs)`` intra-op threads
each; the constants are ``data/thread_rule.json``, read by both backends.

Checked here: the rule against that file, the rust backend's split against the python one's
over a grid of threads and model sizes, that the python backend really runs its pieces
concurrently (one shared session for one-thread runs, a session each otherwise; one at a time
with one thread), that a failing run is the rust backend's error on both, and that on both
backends the split changes nothing in the results, one-shot or streamed, in order, failures
in place."""

from __future__ import annotations

import json
import re
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest

import butterfly_onnx
from butterfly_onnx import Classifier, ImageSkippedWarning
from butterfly_onnx._backends import (
    MAX_CONCURRENT_RUNS,
    MAX_MODEL_BATCH,
    RUN_TARGET,
    SESSION_MEMORY_BUDGET,
    piece_rows,
    thread_split,
)
from butterfly_onnx.contract import ModelContract, PreprocessSpec, write_contract
from butterfly_onnx.errors import ButterflyError, ImageDecodeError
from contract_models import require_backend

#: How long a run waits for the others of its wave before the test fails (not a timing
#: assumption: the runs meet at a barrier; this only turns a missing run into a failure).
BARRIER_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def photos() -> list:
    from reference_images import real_photos

    return sorted(real_photos().values())[:7]


def _tiny_model(path: Path, size: int | None = None, *, failing: bool = False) -> Path:
    """A contract model of two nodes (global average pool, flatten: 3 classes), padded to
    ``size`` bytes (the split counts the file's size) by a field of zeros that protobuf skips
    (a sparse file; ONNX Runtime loads it about 3x faster than as a doc string).
    ``failing``: a Reshape to a fixed (2, 3) after them, which fails in ONNX Runtime's run for
    any batch but 2."""
    onnx = pytest.importorskip("onnx")
    helper = onnx.helper
    nodes = [helper.make_node("GlobalAveragePool", ["input"], ["pooled"])]
    initializers = []
    if failing:
        nodes.append(helper.make_node("Flatten", ["pooled"], ["flat"]))
        nodes.append(helper.make_node("Reshape", ["flat", "shape"], ["logits"]))
        initializers.append(helper.make_tensor("shape", onnx.TensorProto.INT64, [2], [2, 3]))
    else:
        nodes.append(helper.make_node("Flatten", ["pooled"], ["logits"]))
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["batch", 3, "height", "width"])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", 3])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    write_contract(model, ModelContract(labels=("a", "b", "c"), preprocess=PreprocessSpec(40, 32)), path)
    if size is not None:
        # An unknown ModelProto field (99, length-delimited) appended: tag, length, zeros.
        tag = bytes([(99 << 3 | 2) & 0x7F | 0x80, (99 << 3 | 2) >> 7])
        length = size - path.stat().st_size - len(tag) - 4
        assert 1 << 21 <= length < 1 << 28, "a 4-byte length: sizes of 2 to 256 MiB"
        varint = bytes([length & 0x7F | 0x80, length >> 7 & 0x7F | 0x80, length >> 14 & 0x7F | 0x80, length >> 21])
        with path.open("r+b") as file:
            file.seek(0, 2)
            file.write(tag + varint)
            file.truncate(size)
        assert path.stat().st_size == size
    return path


def test_the_thread_rule_is_the_shared_files():
    rule = json.loads((Path(butterfly_onnx.__file__).parent / "data" / "thread_rule.json").read_text("utf-8"))
    max_runs, budget = rule["max_concurrent_runs"], rule["session_memory_budget_mib"] << 20
    assert (MAX_CONCURRENT_RUNS, SESSION_MEMORY_BUDGET) == (max_runs, budget)
    assert (MAX_MODEL_BATCH, RUN_TARGET) == (rule["max_model_batch"], rule["run_target_seconds"])
    for model_bytes in (0, 1, 18 << 20, budget // 3, budget // 2, budget // 2 + 1, budget, budget + 1, 330 << 20):
        for threads in range(18):
            runs = max(1, min(threads, max_runs, budget // max(model_bytes, 1)))
            assert thread_split(threads, model_bytes) == (runs, max(1, threads // runs)), (threads, model_bytes)
    # A batch is cut into pieces of at most ceil(rows / runs) rows so every run gets work.
    assert [piece_rows(rows, size, runs) for rows, size, runs in [(32, 32, 2), (7, 1, 3), (5, 32, 4), (1, 32, 2)]] == [
        16,
        1,
        2,
        1,
    ]


def test_the_rust_backend_splits_threads_as_the_python_one(tmp_path):
    """Over threads 1..9 and model files on both sides of the memory budget's last step (a
    tiny model: runs capped by the threads and the maximum; half the budget: 2 runs at most,
    one byte more: 1)."""
    require_backend("rust")
    sizes = {"tiny": None, "half": SESSION_MEMORY_BUDGET // 2, "over_half": SESSION_MEMORY_BUDGET // 2 + 1}
    seen = set()
    for name, size in sizes.items():
        path = _tiny_model(tmp_path / f"{name}.onnx", size)
        model_bytes = path.stat().st_size
        for threads in range(1, 10):
            want = thread_split(threads, model_bytes)
            clf = Classifier(path, backend="rust", threads=threads)
            assert tuple(clf._backend._native.thread_split) == want, (name, threads)
            del clf
            seen.add(want[0])
    assert seen == {1, 2, 3, MAX_CONCURRENT_RUNS}  # every step of the rule was crossed


def test_a_failing_run_raises_the_same_error_on_both_backends(backend, photos, tmp_path):
    path = _tiny_model(tmp_path / "failing.onnx", failing=True)
    clf = Classifier(path, backend=backend, threads=1)
    with pytest.raises(ButterflyError, match=re.escape(f"{path}: inference failed")) as info:
        clf.logits(photos[:1])
    assert type(info.value) is ButterflyError


class _Recording:
    """A session stand-in that records how many runs are in flight at once and on which
    session, then runs the real session.  The first ``wave`` runs wait at a barrier until all
    ``wave`` of them are in flight, so concurrency is proven, not hoped for from timing."""

    def __init__(self, session, log):
        self.session, self.log = session, log

    def run(self, names, feed):
        log = self.log
        with log["lock"]:
            log["active"] += 1
            log["max"] = max(log["max"], log["active"])
            log["sessions"].add(id(self.session))
            log["started"] += 1
            in_wave = log["started"] <= log["barrier"].parties
        try:
            if in_wave:
                log["barrier"].wait()  # BrokenBarrierError after BARRIER_TIMEOUT: too few at once
            return self.session.run(names, feed)
        finally:
            with log["lock"]:
                log["active"] -= 1


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
def test_python_backend_runs_pieces_concurrently(contract_model, photos, threads):
    clf = Classifier(contract_model.path, backend="python", threads=threads)
    backend = clf._backend
    batch = clf.preprocess(photos[:6])
    want = Classifier(contract_model.path, backend="python", threads=1)._backend.run(batch, 1)
    runs, intra = thread_split(threads, contract_model.path.stat().st_size)
    wave = min(runs, len(batch))
    log = {
        "lock": threading.Lock(),
        "active": 0,
        "max": 0,
        "sessions": set(),
        "started": 0,
        "barrier": threading.Barrier(wave, timeout=BARRIER_TIMEOUT),
    }
    slots = [backend._free.get() for _ in range(runs)]
    assert backend._free.empty()
    # One-thread runs share one session (one copy of the model); others have one each.
    assert len({id(s) for s in slots}) == (1 if intra == 1 else runs)
    for session in slots:
        assert session.get_session_options().intra_op_num_threads == intra
        backend._free.put(_Recording(session, log))
    got = backend.run(batch, 1)
    assert np.abs(got - want).max() <= 1e-6
    # At least ``wave`` at once (they met at the barrier), at most ``runs`` (the free slots).
    assert log["max"] == wave and log["active"] == 0 and log["started"] == len(batch)
    assert len(log["sessions"]) == (1 if intra == 1 else wave)


def test_a_failing_run_is_an_error_of_the_whole_call(contract_model, photos):
    clf = Classifier(contract_model.path, backend="python", threads=2)
    backend = clf._backend
    batch = clf.preprocess(photos[:4])
    want = backend.run(batch, 1)

    class Broken:
        def run(self, names, feed):
            raise RuntimeError("broken session")

    taken = backend._free.get()
    backend._free.put(Broken())
    # The rust backend's class and wording (its Error::Inference), naming the model.
    with pytest.raises(ButterflyError, match=re.escape(f"{contract_model.path}: inference failed: broken session")):
        backend.run(batch, 1)
    # Every session went back to the free queue (none lost to the failure).
    back = [backend._free.get() for _ in range(2)]
    assert backend._free.empty() and sum(isinstance(s, Broken) for s in back) == 1
    for session in [taken, *(s for s in back if not isinstance(s, Broken))]:
        backend._free.put(session)
    assert np.array_equal(backend.run(batch, 1), want)


def test_the_split_changes_no_result_on_either_backend(backend, contract_model, photos, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    inputs = [photos[0], broken, *photos[1:]]
    reference = Classifier(contract_model.path, backend=backend, threads=1)
    want = reference.logits(photos)
    want_top = [p.top_k for p in reference.predict(photos)]
    for threads in (2, 3, 5):
        clf = Classifier(contract_model.path, backend=backend, threads=threads)
        if backend == "rust":  # the core's split, by the same rule
            assert tuple(clf._backend._native.thread_split) == thread_split(threads, contract_model.path.stat().st_size)
        assert np.abs(clf.logits(photos) - want).max() <= 1e-5
        for batch_size in (1, 3, 32):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ImageSkippedWarning)
                got = list(clf.iter_predict(inputs, batch_size=batch_size, on_error="skip"))
            assert [p.source for p in got] == [str(p) for p in inputs]
            assert isinstance(got[1].error, ImageDecodeError)
            assert [p.top_k for i, p in enumerate(got) if i != 1] == want_top
