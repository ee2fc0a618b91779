"""How ``threads=N`` is shared out (docs/inference.md, "Threads"; the Rust core's
``classifier::pipeline::thread_split``): decoding on N threads, ``min(N, 4, 256 MiB / model
size)`` ONNX Runtime runs at once with ``max(1, N // runs)`` intra-op threads each.

Checked here: the rule's table (the same as the Rust test's), that the python backend really
runs its pieces concurrently (one shared session for one-thread runs, a session each
otherwise; one at a time with one thread), that the rust backend reports the same split, and
that on both backends the split changes nothing in the results, one-shot or streamed, in
order, failures in place."""

from __future__ import annotations

import threading
import time
import warnings

import numpy as np
import pytest

from butterfly_onnx import Classifier, ImageSkippedWarning
from butterfly_onnx._backends import MAX_CONCURRENT_RUNS, SESSION_MEMORY_BUDGET, piece_rows, thread_split
from butterfly_onnx.errors import ImageDecodeError


@pytest.fixture(scope="module")
def photos() -> list:
    from reference_images import real_photos

    return sorted(real_photos().values())[:7]


def test_the_thread_rule():
    assert (MAX_CONCURRENT_RUNS, SESSION_MEMORY_BUDGET) == (4, 256 << 20)
    table = {0: (1, 1), 1: (1, 1), 2: (2, 1), 3: (3, 1), 4: (4, 1), 5: (4, 1), 8: (4, 2), 16: (4, 4)}
    assert {n: thread_split(n, 18 << 20) for n in table} == table
    # Large models get fewer copies: ResNet-50 (98 MB) two runs, a 330 MB ViT-B one.
    assert [thread_split(8, 98 << 20), thread_split(8, 330 << 20), thread_split(2, 0)] == [(2, 4), (1, 8), (2, 1)]
    # A batch is cut into pieces of at most ceil(rows / runs) rows so every run gets work.
    assert [piece_rows(rows, size, runs) for rows, size, runs in [(32, 32, 2), (7, 1, 3), (5, 32, 4), (1, 32, 2)]] == [
        16,
        1,
        2,
        1,
    ]


class _Recording:
    """A session stand-in that records how many runs are in flight at once and on which
    session, then runs the real session."""

    def __init__(self, session, log):
        self.session, self.log = session, log

    def run(self, names, feed):
        log = self.log
        with log["lock"]:
            log["active"] += 1
            log["max"] = max(log["max"], log["active"])
            log["sessions"].add(id(self.session))
        time.sleep(0.05)  # long enough for a concurrent run to start
        try:
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
    log = {"lock": threading.Lock(), "active": 0, "max": 0, "sessions": set()}
    slots = [backend._free.get() for _ in range(runs)]
    assert backend._free.empty()
    # One-thread runs share one session (one copy of the model); others have one each.
    assert len({id(s) for s in slots}) == (1 if intra == 1 else runs)
    for session in slots:
        assert session.get_session_options().intra_op_num_threads == intra
        backend._free.put(_Recording(session, log))
    got = backend.run(batch, 1)
    assert np.abs(got - want).max() <= 1e-6
    assert log["max"] == min(runs, len(batch)) and log["active"] == 0
    assert len(log["sessions"]) == (1 if intra == 1 else min(runs, len(batch)))


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
    with pytest.raises(RuntimeError, match="broken session"):
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
