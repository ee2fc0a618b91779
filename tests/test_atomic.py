"""butterfly_onnx.atomic and every output of ``predict -o`` (both command lines, every format):
a kill (SIGKILL, SIGINT) in the middle of writing, or a full disk (a small tmpfs when one can be
mounted, else RLIMIT_FSIZE), leaves the previous file byte-identical and no temporary file."""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from butterfly_onnx.atomic import AtomicFile, atomic_write
from butterfly_onnx.results import write_predictions

ROOT = Path(__file__).resolve().parents[1]
PREVIOUS = b"previous,file\r\nkept,byte for byte\r\n"
IMAGES = 240  # enough that writing the output takes a while (the kill lands mid-write)


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "out.txt"
    target.write_bytes(PREVIOUS)
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(target) as handle:
            handle.write("half")
            raise KeyboardInterrupt
    assert target.read_bytes() == PREVIOUS and os.listdir(tmp_path) == ["out.txt"]
    with atomic_write(target, "wb") as handle:
        handle.write(b"new")
    assert target.read_bytes() == b"new" and os.listdir(tmp_path) == ["out.txt"]
    mode = target.stat().st_mode & 0o777
    fresh = tmp_path / "plain.txt"
    fresh.write_text("x")
    assert mode == fresh.stat().st_mode & 0o777  # the permissions a plain open() gives
    other = AtomicFile(target)
    os.write(other.fd, b"partial rows")
    other.commit(tmp_path / "out.partial.txt")
    os.close(other.fd)
    assert (tmp_path / "out.partial.txt").read_bytes() == b"partial rows"
    with pytest.raises(ValueError, match="mode"):
        with atomic_write(target, "a"):
            pass


def test_write_predictions_keeps_the_previous_file_on_error(classifiers, tmp_path, corpus):
    photo = next(p for n, p in sorted(corpus.items()) if n.startswith("skimage_"))
    predictions = classifiers("python").predict([photo, photo])
    target = tmp_path / "p.csv"
    target.write_bytes(PREVIOUS)

    def failing():
        yield predictions[0]
        raise RuntimeError("the producer broke")

    with pytest.raises(RuntimeError, match="producer"):
        write_predictions(failing(), target, top_k=2)
    assert target.read_bytes() == PREVIOUS and os.listdir(tmp_path) == ["p.csv"]


def _rust_cli() -> Path | None:
    candidate = Path(os.environ.get("BUTTERFLY_ONNX_RUST_CLI", ROOT / "target/release/butterfly-onnx"))
    return candidate if candidate.is_file() and os.access(candidate, os.X_OK) else None


@pytest.fixture(scope="module")
def many_images(tmp_path_factory, corpus):
    """IMAGES photos (hard links of a few real ones) in ``images/``, the same listed by a
    Kaggle ``Testing_set.csv`` whose images are in ``test/``."""
    root = tmp_path_factory.mktemp("many")
    photos = [p for n, p in sorted(corpus.items()) if n.startswith(("skimage_", "sklearn_"))][:4]
    (root / "images").mkdir()
    (root / "test").mkdir()
    sources = []
    for i, photo in enumerate(photos):
        image = Image.open(photo).convert("RGB")
        image.thumbnail((480, 480))
        path = root / f"src{i}.jpg"
        image.save(path, quality=90)
        sources.append(path)
    names = []
    for i in range(IMAGES):
        name = f"Image_{i:04d}.jpg"
        os.link(sources[i % len(sources)], root / "images" / name)
        os.link(sources[i % len(sources)], root / "test" / name)
        names.append(name)
    (root / "Testing_set.csv").write_text("filename\n" + "".join(f"{n}\n" for n in names))
    return root


def _command(which: str, model: Path, inputs: Path, output: Path, *extra: str) -> tuple[list[str], dict[str, str]]:
    from butterfly_onnx._backends.rust import find_onnxruntime_library

    args = ["predict", str(model), str(inputs), "-o", str(output), "--no-progress", *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "python")}
    if which == "python":
        return [sys.executable, "-m", "butterfly_onnx", *args, "--backend", "python"], env
    rust = _rust_cli()
    if rust is None:
        pytest.skip("the Rust CLI is not built (target/release/butterfly-onnx)")
    env["BUTTERFLY_ONNX_ORT_LIB"] = str(find_onnxruntime_library())
    return [str(rust), *args], env


def _writing_temp(pid: int, folder: Path) -> bool:
    """Whether process ``pid`` holds an anonymous (O_TMPFILE) or temporary file in ``folder``."""
    try:
        links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    except OSError:
        return False
    return any(link.startswith(f"{folder}/#") or link.startswith(f"{folder}/.") for link in links)


FORMATS = {"csv": ("images", "out.csv"), "jsonl": ("images", "out.jsonl"), "submission": ("Testing_set.csv", "sub.csv")}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to kill mid-write")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("which", ["python", "rust"])
def test_a_kill_mid_write_leaves_the_previous_file(which, fmt, sig, contract_model, many_images, tmp_path):
    source, name = FORMATS[fmt]
    out = tmp_path / "out"
    out.mkdir()
    target = out / name
    target.write_bytes(PREVIOUS)
    command, env = _command(which, contract_model.path, many_images / source, target, "--batch-size", "1")
    # A shell that starts a job in the background without job control has it ignore SIGINT, and a
    # child inherits that: the command would rightly go on.  Start it as a terminal would.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        deadline = time.monotonic() + 120
        while not _writing_temp(process.pid, out):
            assert process.poll() is None, f"finished before it could be killed: {process.stderr.read()!r}"
            assert time.monotonic() < deadline
            time.sleep(0.002)
        time.sleep(0.05)  # some rows written
        process.send_signal(sig)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stderr.close()  # type: ignore[union-attr]
    assert process.returncode != 0
    assert target.read_bytes() == PREVIOUS
    assert os.listdir(out) == [name]  # no temporary file, no partial file


def _tmpfs(folder: Path, size_kb: int) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(folder)], capture_output=True)
    return done.returncode == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="tmpfs / RLIMIT_FSIZE")
@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("which", ["python", "rust"])
def test_a_full_disk_leaves_the_previous_file(which, fmt, contract_model, many_images, tmp_path):
    """A 64 KiB tmpfs left with 4 KiB free where one can be mounted (root), else a 2 KiB
    RLIMIT_FSIZE (writes fail with EFBIG instead of ENOSPC: the same path in the code)."""
    source, name = FORMATS[fmt]
    out = tmp_path / "out"
    out.mkdir()
    preexec = None
    disk = "tmpfs" if _tmpfs(out, 64) else "rlimit"
    if disk == "tmpfs":
        fd = os.open(out / ".filler", os.O_WRONLY | os.O_CREAT)
        try:  # fill the disk, then leave 4 KiB free: the output needs ~20 KiB
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError:
            os.ftruncate(fd, max(0, os.fstat(fd).st_size - 4096))
        finally:
            os.close(fd)
    else:
        limit = 2048

        def preexec():  # the file size limit stands for a full disk; EFBIG, not a signal
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    try:
        target = out / name
        target.write_bytes(PREVIOUS)
        before = sorted(os.listdir(out))
        command, env = _command(which, contract_model.path, many_images / source, target)
        done = subprocess.run(command, env=env, capture_output=True, text=True, preexec_fn=preexec, timeout=300)
        assert done.returncode == 2, done.stderr
        lines = done.stderr.splitlines()
        assert lines and all(line.startswith("butterfly-onnx: error:") for line in lines), done.stderr
        assert name in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert target.read_bytes() == PREVIOUS
        assert sorted(os.listdir(out)) == before
    finally:
        if disk == "tmpfs":
            subprocess.run(["umount", str(out)], check=False)
