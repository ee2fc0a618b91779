"""``butterfly-onnx bench MODEL IMAGES...``: where the time goes, per stage and per contender.

Contenders (each skipped, with the reason, when it cannot run here):

* ``torchvision``: Pillow decoding + torchvision's transforms + the model (the given torch
  module, else ONNX Runtime on torchvision's tensor: then only preprocessing differs);
* ``python`` and ``rust``: :class:`~butterfly_onnx.Classifier` with that backend;
* ``handwritten``: the loop a careful user writes with onnxruntime + Pillow + NumPy (no torch):
  per chunk of ``batch_size`` files, ``Image.open().convert("RGB")``, ``Image.resize`` of the
  shorter side with the contract's filter, center crop, ``/ 255`` and normalize in NumPy, each
  image on a pool of ``threads`` threads; then one ONNX Runtime run (``threads`` intra-op
  threads) on the chunk, one after the other. It gives torchvision's tensors for the usual
  contracts (Resize(int) + CenterCrop on images at least the crop's size);
* the **floor**: Pillow decoding (on ``threads`` threads) plus ONNX Runtime alone on ready
  batches, one after the other: what a careful hand-written loop reaches without
  preprocessing costs.

For every batch size and thread count asked, per image: ``decode`` (Pillow; the rust backend's
decoder is not exposed alone, so its decode and preprocess are one figure), ``preprocess``,
``decode+preprocess``, ``inference`` (the model on a ready batch), ``end to end`` (files to
logits: ``Classifier.logits(paths, batch_size=B)``, or the torchvision loop), images/s, p50 /
p90 of the end-to-end rounds, the throughput ratio to torchvision and to the floor (> 1 is
faster), and top-1 agreement / max |logit difference| with the reference contender
(torchvision, else the first one). Contenders are interleaved within each round and each figure
is the best of the rounds (the machine may be shared: ratios within one run are what count).

Python usage::

    from butterfly_onnx.bench import run_bench
    result = run_bench("model.onnx", ["photos/"], batch_sizes=[1, 32], threads=[1, 2])
    print(result.format_table())
    result.write_json("bench.json"); result.plot("bench.png")
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ._backends.providers import add_provider_arguments, provider_arguments

__all__ = ["COLUMNS", "CONTENDERS", "BenchRow", "BenchResult", "run_bench", "add_arguments", "run"]

CONTENDERS = ("torchvision", "handwritten", "python", "rust")


#: What each column of :meth:`BenchResult.format_table` means (printed under the table).
COLUMNS = {
    "decode": "ms/image to decode the files (Pillow or the crate's decoder), alone",
    "preproc": "ms/image to preprocess decoded images (resize, crop, normalize) into a batch, alone",
    "dec+pre": "ms/image of one call that goes from files to the model's input batch (decode and preprocess "
    "together, threaded or fused as the contender does it; so it can be less than decode + preproc)",
    "infer": "ms/image of the model alone on a ready batch",
    "e2e": "ms/image from files to logits (best round); p50/p90: median and 90th percentile of the rounds",
    "img/s": "images per second end to end (1000 / e2e)",
    "x tv": "speed-up over torch + torchvision end to end (> 1: faster)",
    "x floor": "end-to-end speed relative to the floor (Pillow decode + ONNX Runtime alone, no preprocessing; "
    "the best a Pillow-based loop could reach; > 1 beats it)",
    "x hand": "speed-up over the hand-written onnxruntime + Pillow + NumPy loop",
    "top-1": "share of images whose top-1 class equals the reference's (torchvision)",
    "max dlogit": "largest absolute logit difference to the reference",
}


@dataclass
class BenchRow:
    """One contender at one (batch size, threads): milliseconds per image (None: not
    measurable separately for this contender)."""

    contender: str
    batch_size: int
    threads: int
    decode_ms: float | None
    preprocess_ms: float | None
    decode_preprocess_ms: float
    inference_ms: float
    end_to_end_ms: float
    p50_ms: float
    p90_ms: float
    images_per_s: float
    vs_torchvision: float | None
    vs_floor: float
    #: Throughput ratio to the ``handwritten`` contender (None when it did not run).
    vs_handwritten: float | None
    top1_agreement: float | None
    max_logit_diff: float | None
    #: The execution providers the model ran on (``Classifier.providers`` joined by "+";
    #: torchvision and handwritten: ONNX Runtime's CPU provider, or torch).
    providers: str = "CPUExecutionProvider"


@dataclass
class BenchResult:
    model: str
    images: int
    rounds: int
    reference: str
    machine: dict[str, Any]
    floor_ms: dict[str, float]
    rows: list[BenchRow] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    #: The python and rust contenders ran in JPEG draft mode (torchvision stays exact: the
    #: reference, so "x tv" and "top-1" compare draft mode with torchvision's exact path).
    jpeg_draft: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write_json(self, path: str | os.PathLike[str]) -> None:
        from .atomic import atomic_write
        from .results import dumps

        with atomic_write(path, encoding="utf-8") as handle:
            handle.write(dumps(self.to_dict(), indent=2) + "\n")

    def format_table(self) -> str:
        def cell(value: float | None, fmt: str = ".3f") -> str:
            return "-" if value is None else format(value, fmt)

        header = (
            "contender",
            "batch",
            "thr",
            "decode",
            "preproc",
            "dec+pre",
            "infer",
            "e2e",
            "p50",
            "p90",
            "img/s",
            "x tv",
            "x floor",
            "x hand",
            "top-1",
            "max dlogit",
            "providers",
        )
        lines = [
            f"{self.model}: {self.images} image(s), best of {self.rounds} interleaved rounds, ms per image "
            f"({self.machine.get('cpus')} CPUs, {self.machine.get('processor') or self.machine.get('machine')})"
            + (", python/rust in JPEG draft mode" if self.jpeg_draft else ""),
            "  ".join(f"{h:>10}" for h in header),
        ]
        for r in self.rows:
            values = (
                r.contender,
                str(r.batch_size),
                str(r.threads),
                cell(r.decode_ms),
                cell(r.preprocess_ms),
                cell(r.decode_preprocess_ms),
                cell(r.inference_ms),
                cell(r.end_to_end_ms),
                cell(r.p50_ms),
                cell(r.p90_ms),
                cell(r.images_per_s, ".1f"),
                cell(r.vs_torchvision, ".2f"),
                cell(r.vs_floor, ".2f"),
                cell(r.vs_handwritten, ".2f"),
                "-" if r.top1_agreement is None else f"{r.top1_agreement:.0%}",
                cell(r.max_logit_diff, ".3g"),
                r.providers.replace("ExecutionProvider", ""),
            )
            lines.append("  ".join(f"{v:>10}" for v in values))
        for key, value in self.floor_ms.items():
            lines.append(f"floor {key}: {value:.3f} ms per image (Pillow decode + ONNX Runtime alone)")
        lines += ["columns:"] + [f"  {name:>10}: {meaning}" for name, meaning in COLUMNS.items()]
        for name, why in self.skipped.items():
            lines.append(f"{name}: skipped ({why})")
        return "\n".join(lines)

    def plot(self, path: str | os.PathLike[str]) -> None:
        """A bar chart of images/s per contender and configuration (matplotlib, Agg)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        configs = sorted({(r.batch_size, r.threads) for r in self.rows})
        contenders = list(dict.fromkeys(r.contender for r in self.rows))
        fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(configs) * max(1, len(contenders)) / 2), 4))
        width = 0.8 / max(1, len(contenders) + 1)
        for i, name in enumerate([*contenders, "floor"]):
            xs, ys = [], []
            for j, (batch, threads) in enumerate(configs):
                if name == "floor":
                    value = self.floor_ms.get(f"batch {batch}, threads {threads}")
                    rate = 1000.0 / value if value else None
                else:
                    match = [r for r in self.rows if (r.contender, r.batch_size, r.threads) == (name, batch, threads)]
                    rate = match[0].images_per_s if match else None
                if rate is not None:
                    xs.append(j + i * width)
                    ys.append(rate)
            ax.bar(xs, ys, width, label=name)
        ax.set_xticks([j + width * len(contenders) / 2 for j in range(len(configs))])
        ax.set_xticklabels([f"batch {b}\n{t} thread(s)" for b, t in configs])
        ax.set_ylabel("images / s (end to end)")
        ax.set_title(f"{Path(self.model).name}: {self.images} image(s), best of {self.rounds}")
        ax.legend()
        fig.tight_layout()
        from .atomic import atomic_write

        with atomic_write(path, "wb") as handle:
            fig.savefig(handle, dpi=100, format="png")
        plt.close(fig)


# --- helpers -----------------------------------------------------------------------------------
def _timed(fn: Callable[..., Any], *args: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _decode_pil(path: str) -> Any:
    from PIL import Image

    with Image.open(path) as img:
        return img.convert("RGB")


def _batches(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _ort_session(model: str, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


class _Contender:
    """Per-stage callables of one contender at one thread count."""

    name: str
    separate_decode = True

    def decode(self, paths: list[str]) -> Any: ...
    def preprocess(self, decoded: Any) -> Any: ...
    def decode_preprocess(self, paths: list[str]) -> Any: ...
    def infer(self, batch: Any) -> Any: ...
    def end_to_end(self, paths: list[str], batch_size: int) -> Any: ...


class _Torchvision(_Contender):
    name = "torchvision"

    def __init__(self, model: str, spec: Any, threads: int, torch_module: Any) -> None:
        import numpy as np
        import torch
        import torchvision.transforms as T

        self.np, self.torch = np, torch
        mode = getattr(T.InterpolationMode, spec.interpolation.upper())
        self.transform = T.Compose(
            [
                T.Resize(spec.resize_size, interpolation=mode, max_size=spec.max_size),
                T.CenterCrop(spec.crop_size),
                T.ToTensor(),
                T.Normalize(spec.mean, spec.std),
            ]
        )
        self.threads = threads
        self.module = torch_module
        self.session = None if torch_module is not None else _ort_session(model, threads)

    def decode(self, paths):
        return [_decode_pil(p) for p in paths]

    def preprocess(self, decoded):
        return self.torch.stack([self.transform(img) for img in decoded]).numpy()

    def decode_preprocess(self, paths):
        return self.preprocess(self.decode(paths))

    def infer(self, batch):
        if self.module is not None:
            with self.torch.inference_mode():
                return self.module(self.torch.from_numpy(batch)).float().numpy()
        assert self.session is not None
        return self.session.run(None, {self.session.get_inputs()[0].name: batch})[0]

    def end_to_end(self, paths, batch_size):
        return self.np.concatenate([self.infer(self.decode_preprocess(chunk)) for chunk in _batches(paths, batch_size)])


class _Handwritten(_Contender):
    """The hand-written onnxruntime + Pillow + NumPy loop (module docstring)."""

    name = "handwritten"

    def __init__(self, model: str, spec: Any, threads: int) -> None:
        from concurrent.futures import ThreadPoolExecutor

        import numpy as np
        from PIL import Image

        self.np, self.spec = np, spec
        self.filter = getattr(Image.Resampling, spec.interpolation.upper())
        self.mean = np.asarray(spec.mean, np.float32).reshape(3, 1, 1)
        self.std = np.asarray(spec.std, np.float32).reshape(3, 1, 1)
        self.session = _ort_session(model, threads)
        self.input = self.session.get_inputs()[0].name
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="bench-handwritten")

    def _prep(self, img: Any) -> Any:
        np, spec = self.np, self.spec
        w, h = img.size
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = spec.resize_size, int(spec.resize_size * long / short)
        if spec.max_size is not None and new_long > spec.max_size:
            new_short, new_long = int(spec.max_size * new_short / new_long), spec.max_size
        size = (new_short, new_long) if w <= h else (new_long, new_short)
        img = img.resize(size, self.filter)
        crop = spec.crop_size
        top, left = int(round((size[1] - crop) / 2.0)), int(round((size[0] - crop) / 2.0))
        img = img.crop((left, top, left + crop, top + crop))
        x = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / np.float32(255)
        return (x - self.mean) / self.std

    def _one(self, path: str) -> Any:
        return self._prep(_decode_pil(path))

    def decode(self, paths):
        return list(self.pool.map(_decode_pil, paths))

    def preprocess(self, decoded):
        return self.np.stack(list(self.pool.map(self._prep, decoded)))

    def decode_preprocess(self, paths):
        return self.np.stack(list(self.pool.map(self._one, paths)))

    def infer(self, batch):
        return self.session.run(None, {self.input: batch})[0]

    def end_to_end(self, paths, batch_size):
        return self.np.concatenate([self.infer(self.decode_preprocess(chunk)) for chunk in _batches(paths, batch_size)])


class _Backend(_Contender):
    def __init__(
        self, model: str, backend: str, threads: int, jpeg_draft: bool = False, providers: dict[str, Any] | None = None
    ) -> None:
        from . import Classifier
        from .images import decode_rgb

        self.name = backend
        self.clf = Classifier(
            model, backend=backend, threads=threads, max_image_pixels=None, jpeg_draft=jpeg_draft, **(providers or {})
        )
        self.providers = "+".join(self.clf.providers)
        self.separate_decode = backend == "python"
        self._decode_rgb = decode_rgb
        self._draft = self.clf.contract.preprocess if jpeg_draft else None

    def decode(self, paths):
        return [self._decode_rgb((p, p), None, jpeg_draft=self._draft) for p in paths]

    def preprocess(self, decoded):
        from .preprocess import preprocess_batch

        return preprocess_batch(decoded, self.clf.contract.preprocess)

    def decode_preprocess(self, paths):
        return self.clf.preprocess(paths)

    def infer(self, batch):
        return self.clf._backend.run(batch)

    def end_to_end(self, paths, batch_size):
        return self.clf.logits(paths, batch_size=batch_size)


def _machine() -> dict[str, Any]:
    return {
        "node": platform.node(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def run_bench(
    model: str | os.PathLike[str],
    images: Sequence[str | os.PathLike[str]],
    *,
    batch_sizes: Sequence[int] = (1,),
    threads: Sequence[int] = (1,),
    contenders: Sequence[str] = CONTENDERS,
    rounds: int = 3,
    torch_module: Any = None,
    limit: int | None = None,
    jpeg_draft: bool = False,
    variants: Sequence[str | os.PathLike[str]] = (),
    providers: Any = None,
    device: str | None = None,
) -> BenchResult:
    """Measure ``contenders`` on ``images`` (files or folders, expanded as ``predict`` does) at
    each batch size and thread count; see the module docstring for the figures.
    ``jpeg_draft``: the python and rust contenders use JPEG draft mode (torchvision, the
    reference, stays exact).  ``providers``/``device``: the execution providers of the python
    and rust contenders (as ``Classifier`` takes them); the reference stays on the CPU, so
    their "top-1" and "max dlogit" are the providers' difference, and each row names its
    providers.  ``variants``: reduced-precision files of the same model (e.g.
    ``model.int8.onnx``), run side by side as ``<backend>:<variant>`` contenders whose top-1
    agreement and max logit difference are against the same backend on ``model``."""
    # Long on purpose: every contender runs inside the same round loop (interleaved, the project's
    # rule for timings on a shared machine), so that loop nest stays whole; setup and rows are helpers.
    import numpy as np

    from . import Classifier
    from .errors import InvalidArgumentError
    from .images import expand_images

    model = str(model)
    paths = [str(source) for source, _ in expand_images(list(map(str, images)))]
    if limit is not None:
        paths = paths[:limit]
    if not paths:
        raise InvalidArgumentError("bench: no images given")
    from .images import decode_rgb

    for path in paths:  # an undecodable input is an ImageError naming it, before any timing
        decode_rgb((path, Path(path)), None)
    if rounds < 1 or any(b < 1 for b in batch_sizes) or any(t < 1 for t in threads):
        raise InvalidArgumentError("bench: rounds, batch sizes and thread counts must be >= 1")
    unknown = set(contenders) - set(CONTENDERS)
    if unknown:
        raise InvalidArgumentError(f"bench: unknown contenders {sorted(unknown)} (known: {', '.join(CONTENDERS)})")
    spec = Classifier(model, backend="python", threads=1).contract.preprocess
    n = len(paths)
    skipped: dict[str, str] = {}
    rows: list[BenchRow] = []
    floor_ms: dict[str, float] = {}
    reference = None

    torch: Any = None
    if "torchvision" in contenders:
        try:
            import torch as _torch
            import torchvision  # noqa: F401

            torch = _torch
        except ImportError as exc:
            skipped["torchvision"] = f"not installed ({exc})"
    for n_threads in threads:
        runtime = {"providers": providers, "device": device}
        made = _make_contenders(
            model, spec, contenders, variants, n_threads, jpeg_draft, runtime, torch_module, skipped
        )
        if not made:
            break
        floor_session = _ort_session(model, n_threads)
        floor_input = floor_session.get_inputs()[0].name
        before = torch.get_num_threads() if torch is not None else None
        if torch is not None:
            torch.set_num_threads(n_threads)
        try:
            for batch_size in batch_sizes:
                stats: dict[str, dict[str, list[float]]] = {
                    name: {"decode": [], "preprocess": [], "dec_pre": [], "infer": [], "e2e": []} for name in made
                }
                logits: dict[str, Any] = {}
                floor_decode: list[float] = []
                floor_infer: list[float] = []
                reps = max(1, -(-batch_size // n))
                batch_paths = (paths * reps)[:batch_size]
                for contender in made.values():  # warm-up, untimed: first-call costs (ORT arena, caches)
                    contender.end_to_end(batch_paths, batch_size)
                for _ in range(rounds):
                    for name, contender in made.items():
                        s = stats[name]
                        if contender.separate_decode:
                            dt, decoded = _timed(contender.decode, paths)
                            s["decode"].append(dt / n)
                            dt, _ = _timed(contender.preprocess, decoded)
                            s["preprocess"].append(dt / n)
                        dt, _ = _timed(contender.decode_preprocess, paths)
                        s["dec_pre"].append(dt / n)
                        batch = np.ascontiguousarray(contender.decode_preprocess(batch_paths), dtype=np.float32)
                        dt, _ = _timed(contender.infer, batch)
                        s["infer"].append(dt / batch_size)
                        dt, out = _timed(contender.end_to_end, paths, batch_size)
                        s["e2e"].append(dt / n)
                        logits[name] = np.asarray(out)
                    # The floor: Pillow decoding on n_threads threads, then ONNX Runtime alone.
                    from concurrent.futures import ThreadPoolExecutor

                    with ThreadPoolExecutor(n_threads) as pool:
                        dt, _ = _timed(lambda: list(pool.map(_decode_pil, paths)))  # noqa: B023 (called at once)
                    floor_decode.append(dt / n)
                    ready = np.zeros((batch_size, 3, spec.crop_size, spec.crop_size), np.float32)
                    dt, _ = _timed(floor_session.run, None, {floor_input: ready})
                    floor_infer.append(dt / batch_size)
                floor = (min(floor_decode) + min(floor_infer)) * 1e3
                floor_ms[f"batch {batch_size}, threads {n_threads}"] = floor
                reference = "torchvision" if "torchvision" in made else next(iter(made))
                rows += _rows(made, stats, logits, reference, floor, batch_size, n_threads)
        finally:
            if torch is not None and before is not None:
                torch.set_num_threads(before)
    return BenchResult(
        model=model,
        images=n,
        rounds=rounds,
        reference=reference or "",
        machine=_machine(),
        floor_ms=floor_ms,
        rows=rows,
        skipped=skipped,
        jpeg_draft=jpeg_draft,
    )


def _make_contenders(
    model: str,
    spec: Any,
    contenders: Sequence[str],
    variants: Sequence[str | os.PathLike[str]],
    n_threads: int,
    jpeg_draft: bool,
    runtime: dict[str, Any],
    torch_module: Any,
    skipped: dict[str, str],
) -> dict[str, _Contender]:
    """The contenders that can run here at ``n_threads`` (the others land in ``skipped``), then
    each variant file beside its backend ("model.int8.onnx" -> "rust:int8")."""
    made: dict[str, _Contender] = {}
    for name in contenders:
        if name in skipped:
            continue
        try:
            if name == "torchvision":
                made[name] = _Torchvision(model, spec, n_threads, torch_module)
            elif name == "handwritten":
                made[name] = _Handwritten(model, spec, n_threads)
            else:
                made[name] = _Backend(model, name, n_threads, jpeg_draft, runtime)
        except Exception as exc:  # a backend that is not built here is reported, not fatal
            if "execution provider" in str(exc):
                raise  # what was asked for cannot run: no figures without it
            skipped[name] = f"{type(exc).__name__}: {exc}"
    for variant in variants:
        label = Path(variant).stem.rpartition(".")[2]
        for name in [c for c in ("python", "rust") if c in made]:
            made[f"{name}:{label}"] = _Backend(str(variant), name, n_threads, jpeg_draft, runtime)
    return made


def _rows(
    made: dict[str, _Contender],
    stats: dict[str, dict[str, list[float]]],
    logits: dict[str, Any],
    reference: str,
    floor: float,
    batch_size: int,
    n_threads: int,
) -> list[BenchRow]:
    """One row per contender from its rounds (best of each figure), compared with the reference."""
    import numpy as np

    tv_e2e = min(stats["torchvision"]["e2e"]) * 1e3 if "torchvision" in made else None
    hand_e2e = min(stats["handwritten"]["e2e"]) * 1e3 if "handwritten" in made else None
    rows = []
    for name, s in stats.items():
        e2e = min(s["e2e"]) * 1e3
        ms = [v * 1e3 for v in s["e2e"]]
        agree = diff = None
        # a variant ("rust:int8") is compared with its backend on the fp32 model
        base = logits[name.partition(":")[0]] if ":" in name else logits[reference]
        if name != reference and logits[name].shape == base.shape:
            agree = float(np.mean(logits[name].argmax(1) == base.argmax(1)))
            diff = float(np.max(np.abs(logits[name].astype(np.float64) - base)))
        rows.append(
            BenchRow(
                contender=name,
                batch_size=batch_size,
                threads=n_threads,
                decode_ms=min(s["decode"]) * 1e3 if s["decode"] else None,
                preprocess_ms=min(s["preprocess"]) * 1e3 if s["preprocess"] else None,
                decode_preprocess_ms=min(s["dec_pre"]) * 1e3,
                inference_ms=min(s["infer"]) * 1e3,
                end_to_end_ms=e2e,
                p50_ms=statistics.median(ms),
                p90_ms=_percentile(ms, 0.9),
                images_per_s=1000.0 / e2e if e2e > 0 else float("inf"),
                vs_torchvision=None if tv_e2e is None else tv_e2e / e2e,
                vs_floor=floor / e2e,
                vs_handwritten=None if hand_e2e is None else hand_e2e / e2e,
                top1_agreement=agree,
                max_logit_diff=diff,
                providers=getattr(made[name], "providers", "CPUExecutionProvider"),
            )
        )
    return rows


# --- command line ------------------------------------------------------------------------------
def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="the .onnx model (with its contract)")
    parser.add_argument("images", nargs="+", help="image files or folders")
    parser.add_argument("--batch-sizes", type=_int_list, default=[1], help="comma-separated batch sizes (default 1)")
    parser.add_argument(
        "--threads", dest="thread_counts", type=_int_list, default=[1], help="comma-separated thread counts (default 1)"
    )
    parser.add_argument(
        "--contenders",
        default=",".join(CONTENDERS),
        help=f"comma-separated: {','.join(CONTENDERS)} (default: all)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; each figure is the best (default 3)")
    parser.add_argument("--limit", type=int, default=None, help="use at most this many images")
    parser.add_argument("--json", dest="json_path", metavar="FILE", help="write the result as JSON")
    parser.add_argument("--plot", dest="plot_path", metavar="FILE.png", help="write a bar chart (matplotlib)")
    parser.add_argument(
        "--jpeg-draft", action="store_true", help="python and rust in JPEG draft mode (torchvision stays exact)"
    )
    parser.add_argument(
        "--variant",
        dest="variants",
        action="append",
        default=[],
        metavar="FILE",
        help="a variant of the model (e.g. model.int8.onnx) to run beside it on each backend (repeatable)",
    )
    add_provider_arguments(parser)


def run(args: argparse.Namespace) -> int:
    result = run_bench(
        args.model,
        args.images,
        batch_sizes=args.batch_sizes,
        threads=args.thread_counts,
        contenders=[c for c in args.contenders.split(",") if c],
        rounds=args.rounds,
        limit=args.limit,
        jpeg_draft=args.jpeg_draft,
        variants=args.variants,
        **provider_arguments(args),
    )
    print(result.format_table())
    if args.json_path:
        result.write_json(args.json_path)
    if args.plot_path:
        result.plot(args.plot_path)
    return 0 if result.rows else 1
