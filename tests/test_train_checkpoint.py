"""Checkpoint saving (butterfly_onnx.train.checkpoint): nothing is lost and nothing is left
behind.  A full disk (a real 1 MiB tmpfs when this process may mount one, else a file-size
limit) or an interrupt during a save keeps the previous checkpoint byte-identical and removes
the temporary file; the error names the checkpoint and the operating system's reason; a
temporary file left by a killed process is removed at the next save or resume."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from butterfly_onnx.errors import TrainingError  # noqa: E402
from butterfly_onnx.train.checkpoint import atomic_save, read_checkpoint, remove_stale_temps  # noqa: E402

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "python"


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs (root may mount one), else None."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        yield None
        return
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def _entries(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_a_full_disk_keeps_the_previous_checkpoint_and_names_the_file_and_cause(small_disk, tmp_path):
    """The first, small save fits; the second (4 MB of weights) does not: TrainingError
    "cannot save <path>: No space left on device" (not torch's "unexpected pos ..."), the old
    file unchanged, no temporary file left."""
    if small_disk is not None:
        folder, cause = small_disk, "No space left on device"
    else:
        folder, cause = tmp_path / "limited", "File too large"
        folder.mkdir()
    path = folder / "last.pt"
    atomic_save({"weights": torch.arange(1000, dtype=torch.float32)}, path)
    before = _entries(folder)
    big = {"weights": torch.zeros(1_000_000)}
    if small_disk is not None:
        with pytest.raises(TrainingError) as raised:
            atomic_save(big, path)
    else:  # no tmpfs: a file-size limit makes the write fail the same way (EFBIG)
        previous = resource.getrlimit(resource.RLIMIT_FSIZE)
        handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, previous[1]))
        try:
            with pytest.raises(TrainingError) as raised:
                atomic_save(big, path)
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, previous)
            signal.signal(signal.SIGXFSZ, handler)
    assert str(raised.value) == f"cannot save {path}: {cause}"
    assert _entries(folder) == before
    assert torch.equal(torch.load(path, weights_only=True)["weights"], torch.arange(1000, dtype=torch.float32))


def test_an_interrupt_during_a_save_removes_the_temporary_file(tmp_path, monkeypatch):
    """Ctrl-C (KeyboardInterrupt) in the middle of torch.save: re-raised as it is, the
    previous checkpoint untouched, the temporary file gone."""
    path = tmp_path / "best.pt"
    atomic_save({"epoch": 1}, path)
    before = _entries(tmp_path)
    real_save = torch.save

    def interrupted(obj, handle, *args, **kwargs):
        handle.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"epoch": 2}, path)
    monkeypatch.setattr(torch, "save", real_save)
    assert _entries(tmp_path) == before


def test_a_killed_save_leaves_a_temporary_file_that_the_next_start_removes(tmp_path):
    """A process SIGKILLed in the middle of a save leaves its temporary file (nothing can run
    then); the next save into the folder, or reading a checkpoint there to resume, removes it.
    A save in progress in a live process is left alone."""
    path = tmp_path / "last.pt"
    atomic_save({"epoch": 1}, path)
    before = path.read_bytes()
    script = textwrap.dedent(
        f"""
        import os, signal, torch
        from pathlib import Path
        from butterfly_onnx.train.checkpoint import atomic_save

        def stuck(obj, handle, *a, **k):
            handle.write(b"x" * 4096)
            handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)

        torch.save = stuck
        atomic_save({{"epoch": 2}}, Path({str(path)!r}))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(PACKAGE_ROOT)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr
    leftovers = [p for p in tmp_path.iterdir() if p.name != "last.pt"]
    assert (
        len(leftovers) == 1
        and leftovers[0].name.startswith(".last.pt.")
        and leftovers[0].name.endswith(".butterfly.tmp")
    )
    # Another process's save in progress (this one: alive) is not touched.
    mine = tmp_path / f".best.pt.{os.getpid()}.abcd1234.butterfly.tmp"
    mine.write_bytes(b"in progress")
    assert path.read_bytes() == before
    read_checkpoint_or_fail = pytest.raises(TrainingError)  # {"epoch": 1} is no butterfly checkpoint
    with read_checkpoint_or_fail:
        read_checkpoint(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["last.pt", mine.name])
    # The same at the next save.
    leftovers[0].write_bytes(b"stale")
    atomic_save({"epoch": 3}, tmp_path / "other.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["last.pt", "other.pt", mine.name])
    assert remove_stale_temps(tmp_path) == []
    # Other files are never taken for leftovers, whatever they look like.
    dead = 4_194_305  # above Linux's largest pid_max: no such process
    for name in (f".notes.{dead}.abcd1234.tmp", f"x.{dead}.abcd1234.butterfly.tmp", f".y.{dead}.ab.butterfly.tmp"):
        (tmp_path / name).write_text("mine")
    assert remove_stale_temps(tmp_path) == []
