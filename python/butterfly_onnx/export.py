"""``export_onnx``: a PyTorch classifier -> one verified, self-describing ONNX file.

The exported file carries the model contract (labels, preprocessing, provenance; see
``docs/contract.md``) written by :func:`butterfly_onnx.contract.write_contract`, the only
writer.  Before the file appears at its final path it is verified on real images: the
project's own preprocessing feeds both torch eager and ONNX Runtime, and the maximum absolute
output difference and the top-1 agreement must stay within thresholds, otherwise
:class:`~butterfly_onnx.errors.ExportVerificationError` is raised and nothing is written.

Needs the ``train`` extra (torch, torchvision, onnx) besides onnxruntime.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime as _dt
import json
import math
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .contract import ModelContract, PreprocessSpec, current_resample_order, write_contract
from .images import IMAGE_EXTENSIONS
from .variants import INT8_METHODS
from .errors import (
    BackendUnavailableError,
    ContractError,
    ExportError,
    ExportVerificationError,
)

__all__ = [
    "export_onnx",
    "verify_onnx",
    "ExportReport",
    "VerificationReport",
    "VariantReport",
    "VARIANTS",
    "report_path_for",
]

#: The optional variants export_onnx can produce next to the fp32 model.
VARIANTS = ("optimized", "fp16", "int8")




# --------------------------------------------------------------------------- reports
@dataclass
class VerificationReport:
    """torch eager vs ONNX Runtime on the same preprocessed real images."""

    num_images: int
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float
    max_abs_diff_threshold: float
    min_top1_agreement: float
    passed: bool
    #: accuracy of torch and of ONNX Runtime when the images' class indices are known
    torch_accuracy: float | None = None
    onnx_accuracy: float | None = None
    #: images whose top-1 differs (path, torch class, onnx class); at most 20 listed
    disagreements: list[tuple[str, int, int]] = field(default_factory=list)

    def summary(self) -> str:
        text = (
            f"{self.num_images} images: max |torch - onnx| = {self.max_abs_diff:.3g} "
            f"(allowed {self.max_abs_diff_threshold:g}), top-1 agreement = "
            f"{self.top1_agreement:.2%} (required {self.min_top1_agreement:.2%})"
        )
        if self.onnx_accuracy is not None:
            text += f", accuracy torch {self.torch_accuracy:.2%} / onnx {self.onnx_accuracy:.2%}"
        return text


@dataclass
class VariantReport:
    """One optional variant (optimized / fp16 / int8) measured against the fp32 ONNX model."""

    name: str
    path: str
    size_bytes: int
    num_images: int
    #: share of images whose top-1 class equals the fp32 ONNX model's
    top1_agreement: float
    #: max |variant - fp32| over the outputs
    max_abs_diff: float
    #: accuracy of the variant and of fp32 when the images' class indices are known
    accuracy: float | None
    fp32_accuracy: float | None
    #: median CPU latency of one batch of ``batch_size`` images (ONNX Runtime, CPU provider)
    batch_size: int
    ms_per_batch: float
    fp32_ms_per_batch: float
    threads: int | None
    notes: str = ""

    @property
    def speedup(self) -> float:
        return self.fp32_ms_per_batch / self.ms_per_batch if self.ms_per_batch > 0 else math.nan

    def summary(self) -> str:
        text = (
            f"{self.name}: top-1 agreement with fp32 {self.top1_agreement:.2%}, max diff "
            f"{self.max_abs_diff:.3g}, {self.ms_per_batch:.1f} ms/batch of {self.batch_size} vs "
            f"{self.fp32_ms_per_batch:.1f} ms fp32 (x{self.speedup:.2f}), {self.size_bytes / 1e6:.1f} MB"
        )
        if self.accuracy is not None:
            text += f", accuracy {self.accuracy:.2%} (fp32 {self.fp32_accuracy:.2%})"
        return text


@dataclass
class ExportReport:
    """What export_onnx did and measured; saved as JSON next to the model (see report_path_for)."""

    path: str
    opset: int
    input_name: str
    output_name: str
    output_kind: str
    input_shape: list[Any]
    num_classes: int
    contract: dict[str, Any]
    verification: VerificationReport | None
    variants: list[VariantReport] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for variant, raw in zip(self.variants, data["variants"]):
            raw["speedup"] = variant.speedup
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False, default=_json_default)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ExportReport":
        """Read a report written by export_onnx (``path`` = the model or the report file)."""
        path = Path(path)
        if path.suffix == ".onnx":
            path = report_path_for(path)
        data = json.loads(path.read_text(encoding="utf-8"))
        verification = data.pop("verification")
        variants = data.pop("variants")
        for raw in variants:
            raw.pop("speedup", None)
        if verification is not None:
            verification["disagreements"] = [tuple(d) for d in verification["disagreements"]]
            verification = VerificationReport(**verification)
        return cls(verification=verification, variants=[VariantReport(**v) for v in variants], **data)

    def summary(self) -> str:
        lines = [f"exported {self.path} (opset {self.opset}, input {self.input_shape})"]
        if self.verification is not None:
            lines.append("verification: " + self.verification.summary())
        lines += ["variant " + v.summary() for v in self.variants]
        return "\n".join(lines)


def report_path_for(model_path: str | os.PathLike) -> Path:
    """Where export_onnx saves the JSON report of ``model.onnx``: ``model.export.json``."""
    return Path(model_path).with_suffix(".export.json")


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


# --------------------------------------------------------------------------- imports
def _require_torch() -> Any:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - the train extra is installed in CI
        raise BackendUnavailableError(
            "export_onnx needs torch: install butterfly-onnx[train]"
        ) from exc
    return torch


def _require_onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover
        raise BackendUnavailableError("export_onnx needs the onnx package: install butterfly-onnx[train]") from exc
    return onnx


# --------------------------------------------------------------------------- inputs
def coerce_preprocess(value: Any, *, what: str = "preprocess") -> PreprocessSpec:
    """A PreprocessSpec from a spec, a torchvision preset (``weights.transforms()``), a
    ``Compose``, or a dict with resize_size, crop_size, mean, std (and optionally
    interpolation, default "bilinear" like torchvision; max_size; resample_order, default the
    installed Pillow's rule)."""
    if isinstance(value, PreprocessSpec):
        return value
    if isinstance(value, Mapping):
        data = dict(value)
        missing = {"resize_size", "crop_size", "mean", "std"} - set(data)
        if missing:
            raise ContractError(f"{what} is missing {sorted(missing)}")
        data.setdefault("interpolation", "bilinear")
        data.setdefault("max_size", None)
        data.setdefault("resample_order", current_resample_order())
        return PreprocessSpec.from_dict(data)
    return PreprocessSpec.from_transforms(value)


def _coerce_labels(labels: Any, *, what: str = "labels") -> list[str]:
    if isinstance(labels, (str, bytes)) or not isinstance(labels, Iterable):
        raise ContractError(f"{what} must be a sequence of class names, got {type(labels).__name__}")
    labels = list(labels)
    if not all(isinstance(label, str) for label in labels):
        raise ContractError(f"{what} must be strings")
    return labels


def _normalise_samples(images: Any, what: str) -> list[tuple[Path, int | None]]:
    """Paths (or a directory of images) or (path, class index) pairs -> [(Path, idx|None)]."""
    if images is None:
        return []
    if isinstance(images, (str, os.PathLike)):
        root = Path(images)
        if root.is_dir():
            found = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
            if not found:
                raise ExportError(f"{what}: the directory {root} holds no images")
            return [(p, None) for p in found]
        images = [images]
    samples: list[tuple[Path, int | None]] = []
    for item in images:
        if isinstance(item, (tuple, list)) and len(item) == 2:
            path, target = item
            if target is not None and (isinstance(target, bool) or not isinstance(target, (int, np.integer))):
                raise ExportError(f"{what}: the class index of {path} must be an int, got {target!r}")
            samples.append((Path(path), None if target is None else int(target)))
        elif isinstance(item, (str, os.PathLike)):
            samples.append((Path(item), None))
        else:
            raise ExportError(f"{what}: expected image paths or (path, class index) pairs, got {item!r}")
    return samples


@dataclass
class _Source:
    model: Any  # torch.nn.Module, eval mode, on CPU
    labels: list[str]
    preprocess: PreprocessSpec
    provenance: dict[str, Any]
    val_samples: list[tuple[Path, int | None]]
    train_samples: list[tuple[Path, int | None]]
    was_training: bool = False  # the caller's module goes back to this mode afterwards


def _is_finetune_result(source: Any) -> bool:
    return all(hasattr(source, name) for name in ("checkpoint", "labels", "preprocess", "val_samples"))


def _checkpoint_provenance(config: Mapping[str, Any]) -> dict[str, Any]:
    provenance: dict[str, Any] = {"arch": config.get("arch"), "weights": config.get("weights")}
    metrics = config.get("metrics")
    if isinstance(metrics, Mapping):
        # scalar validation metrics only; the history stays in the training output
        provenance["metrics"] = {
            k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
    if "epoch" in config:
        provenance["epoch"] = config["epoch"]
    return provenance


def _resolve_source(source: Any, labels: Any, preprocess: Any) -> _Source:
    torch = _require_torch()
    if _is_finetune_result(source):
        from .train import load_checkpoint

        model, config = load_checkpoint(source.checkpoint)
        provenance = _checkpoint_provenance(config)
        provenance["checkpoint"] = Path(source.checkpoint).name
        if getattr(source, "arch", None):
            provenance["arch"] = source.arch
        return _Source(
            model=model,
            labels=_coerce_labels(labels if labels is not None else source.labels),
            preprocess=coerce_preprocess(preprocess if preprocess is not None else source.preprocess),
            provenance=provenance,
            val_samples=_normalise_samples(source.val_samples, "FinetuneResult.val_samples"),
            train_samples=_normalise_samples(getattr(source, "train_samples", None) or [], "train_samples"),
        )
    if isinstance(source, (str, os.PathLike)):
        from .train import load_checkpoint

        model, config = load_checkpoint(source)
        if labels is None:
            labels = config.get("labels")
        if preprocess is None:
            preprocess = config.get("preprocess")
        if labels is None or preprocess is None:
            raise ContractError(f"the checkpoint {source} carries no labels/preprocess: pass labels= and preprocess=")
        provenance = _checkpoint_provenance(config)
        provenance["checkpoint"] = Path(source).name
        return _Source(
            model=model,
            labels=_coerce_labels(labels),
            preprocess=coerce_preprocess(preprocess, what=f"the preprocess of checkpoint {source}"),
            provenance=provenance,
            val_samples=[],
            train_samples=[],
        )
    if isinstance(source, torch.nn.Module):
        missing = [name for name, value in (("labels", labels), ("preprocess", preprocess)) if value is None]
        if missing:
            raise ContractError(
                f"exporting an nn.Module needs {' and '.join(m + '=' for m in missing)} (the class names in output "
                "order and the eval preprocessing, e.g. weights.transforms()); a FinetuneResult or a "
                "checkpoint path carries both"
            )
        model = source
        if any(p.device.type != "cpu" for p in model.parameters()):
            model = copy.deepcopy(model).cpu()
        return _Source(
            model=model,
            labels=_coerce_labels(labels),
            preprocess=coerce_preprocess(preprocess),
            provenance={"arch": type(source).__name__.lower(), "weights": None},
            val_samples=[],
            train_samples=[],
            was_training=model.training,
        )
    raise ExportError(
        f"cannot export {type(source).__name__}: pass a FinetuneResult, a checkpoint path or a torch.nn.Module"
    )


# --------------------------------------------------------------------------- preprocessing
def _preprocess_fn(spec: PreprocessSpec):
    """Image paths -> float32 NCHW batch through the project's own Python preprocessing
    (torchvision's loader and eval transforms, bit for bit; see preprocess.py), so that
    verification and calibration see exactly what the inference backends feed the model."""
    from .images import decode_rgb, pixel_limit_default
    from .preprocess import preprocess_batch

    limit = pixel_limit_default()

    def run(paths: Sequence[Path]) -> np.ndarray:
        images = [decode_rgb((str(path), Path(path)), limit) for path in paths]
        return preprocess_batch(images, spec)

    return run


def _batches(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --------------------------------------------------------------------------- ONNX Runtime
def _ort_session(path: Path | bytes, threads: int | None = None, **options: Any) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
    so.log_severity_level = 3  # errors only: fp16/int8 graphs log benign warnings
    for key, value in options.items():
        setattr(so, key, value)
    model = str(path) if isinstance(path, Path) else path
    return ort.InferenceSession(model, sess_options=so, providers=["CPUExecutionProvider"])


def _ort_run(session: Any, batches: Iterable[np.ndarray]) -> np.ndarray:
    (inp,) = session.get_inputs()
    fixed = inp.shape[0] if isinstance(inp.shape[0], int) else None  # dynamic_batch=False models
    outs = []
    for batch in batches:
        for part in [batch] if fixed is None else _batches(batch, fixed):
            outs.append(session.run(None, {inp.name: part})[0])
    return np.concatenate(outs).astype(np.float32, copy=False)


# --------------------------------------------------------------------------- verification
def _compare(
    reference: np.ndarray,
    candidate: np.ndarray,
    samples: Sequence[tuple[Path, int | None]],
) -> dict[str, Any]:
    diff = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    ref_top1 = reference.argmax(axis=1)
    cand_top1 = candidate.argmax(axis=1)
    agree = ref_top1 == cand_top1
    result: dict[str, Any] = {
        "max_abs_diff": float(diff.max()) if diff.size else 0.0,
        "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
        "top1_agreement": float(agree.mean()) if agree.size else 1.0,
        "disagreements": [
            (str(samples[i][0]), int(ref_top1[i]), int(cand_top1[i])) for i in np.flatnonzero(~agree)[:20]
        ],
        "reference_accuracy": None,
        "candidate_accuracy": None,
    }
    targets = [t for _, t in samples]
    if targets and all(t is not None for t in targets):
        targets_arr = np.asarray(targets)
        result["reference_accuracy"] = float((ref_top1 == targets_arr).mean())
        result["candidate_accuracy"] = float((cand_top1 == targets_arr).mean())
    return result


def _torch_outputs(model: Any, batches: Iterable[np.ndarray]) -> np.ndarray:
    torch = _require_torch()
    outs = []
    with torch.inference_mode():
        for batch in batches:
            outs.append(model(torch.from_numpy(batch)).float().numpy())
    return np.concatenate(outs)


def verify_onnx(
    onnx_path: str | os.PathLike,
    model: Any,
    images: Any,
    *,
    preprocess: Any = None,
    probabilities: bool | None = None,
    max_abs_diff: float = 1e-4,
    min_top1_agreement: float = 1.0,
    batch_size: int = 16,
    threads: int | None = None,
    enforce: bool = True,
) -> VerificationReport:
    """Compare ``model`` (torch, eager, eval mode) with the ONNX file on real images.

    ``images``: image paths, a directory, or (path, class index) pairs (then accuracies are
    reported too).  Both runtimes get the same batch from the project's preprocessing (the
    spec is ``preprocess`` or the file's contract).  ``probabilities``: apply softmax to the
    torch output first (default: when the contract's output kind says so).  With ``enforce``
    a result beyond the thresholds raises ExportVerificationError with the numbers.
    """
    torch = _require_torch()
    onnx_path = Path(onnx_path)
    samples = _normalise_samples(images, "verify images")
    if not samples:
        raise ExportError(
            "verification needs real images: pass images (paths or (path, class index) pairs)"
        )
    contract = None
    if preprocess is None or probabilities is None:
        import onnx

        meta = {p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False).metadata_props}
        contract = ModelContract.from_metadata(meta, source=str(onnx_path))
    spec = coerce_preprocess(preprocess) if preprocess is not None else contract.preprocess
    if probabilities is None:
        probabilities = contract.output_kind == "probabilities"
    # eval() on the wrapper too: the TorchScript exporter restores the wrapper's own mode
    # afterwards, and a fresh Sequential is in training mode (it would put the model there)
    was_training = model.training
    module = torch.nn.Sequential(model, torch.nn.Softmax(dim=1)).eval() if probabilities else model
    model.eval()
    try:
        preprocess_batch = _preprocess_fn(spec)
        session = _ort_session(onnx_path, threads)
        torch_out, onnx_out = [], []
        for chunk in _batches(samples, batch_size):
            batch = preprocess_batch([p for p, _ in chunk])
            torch_out.append(_torch_outputs(module, [batch]))
            onnx_out.append(_ort_run(session, [batch]))
    finally:
        model.train(was_training)
    result = _compare(np.concatenate(torch_out), np.concatenate(onnx_out), samples)
    passed = result["max_abs_diff"] <= max_abs_diff and result["top1_agreement"] >= min_top1_agreement
    report = VerificationReport(
        num_images=len(samples),
        max_abs_diff=result["max_abs_diff"],
        mean_abs_diff=result["mean_abs_diff"],
        top1_agreement=result["top1_agreement"],
        max_abs_diff_threshold=max_abs_diff,
        min_top1_agreement=min_top1_agreement,
        passed=passed,
        torch_accuracy=result["reference_accuracy"],
        onnx_accuracy=result["candidate_accuracy"],
        disagreements=result["disagreements"],
    )
    if enforce and not passed:
        error = ExportVerificationError(
            f"{onnx_path}: ONNX Runtime disagrees with PyTorch: {report.summary()}"
            + (f"; first disagreements (image, torch, onnx): {report.disagreements[:3]}" if report.disagreements else "")
        )
        error.report = report  # type: ignore[attr-defined]
        raise error
    return report


# --------------------------------------------------------------------------- export
@contextlib.contextmanager
def _quiet_torchscript_exporter():
    # torch >= 2.9 deprecates the TorchScript exporter; we pin it on purpose (dynamo=False):
    # it handles every torchvision classifier with dynamic batch and needs no onnxscript.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=r".*The feature will be removed.*", category=DeprecationWarning)
        yield


def _versions() -> dict[str, str]:
    """Versions of what produced the file (module ``__version__``: keeps torch's build tag)."""
    import importlib

    from . import __version__

    versions = {"butterfly_onnx": __version__}
    for name, module in (("torch", "torch"), ("torchvision", "torchvision"), ("onnx", "onnx"),
                         ("onnxruntime", "onnxruntime"), ("pillow", "PIL")):
        try:
            versions[name] = str(importlib.import_module(module).__version__)
        except ImportError:  # pragma: no cover
            pass
    return versions


def _atomic_replace(tmp: Path, target: Path) -> None:
    os.replace(tmp, target)


def _chmod_like_a_new_file(path: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def export_onnx(
    source: Any,
    path: str | os.PathLike,
    *,
    labels: Sequence[str] | None = None,
    preprocess: Any = None,
    opset: int = 17,
    dynamic_batch: bool = True,
    probabilities: bool = False,
    input_name: str = "input",
    verify: bool = True,
    verify_images: Any = None,
    max_verify_images: int | None = 256,
    max_abs_diff: float = 1e-4,
    min_top1_agreement: float = 1.0,
    variants: Sequence[str] = (),
    calibration_images: Any = None,
    calibration_size: int = 64,
    int8_method: str = "minmax",
    benchmark_threads: int | None = None,
    benchmark_rounds: int = 7,
    provenance: Mapping[str, Any] | None = None,
    batch_size: int = 16,
    seed: int = 0,
    return_report: bool = False,
) -> Path | tuple[Path, ExportReport]:
    """Export a classifier to one self-describing ONNX file and verify it.

    ``source``: a ``FinetuneResult``, a checkpoint path (``save_checkpoint`` format), or a
    ``torch.nn.Module`` (then ``labels`` and ``preprocess`` are required; ``preprocess`` is a
    PreprocessSpec, a torchvision preset such as ``weights.transforms()``, a ``Compose``, or a
    dict with resize_size, crop_size, mean, std, interpolation).  Explicit ``labels`` /
    ``preprocess`` override what a FinetuneResult or checkpoint carries.

    The graph has one float32 input ``input`` of shape (batch, 3, crop, crop), batch dynamic
    unless ``dynamic_batch=False`` (then 1), and one output ``logits`` (or ``probabilities``, a
    Softmax appended, when ``probabilities=True``).

    Verification (``verify=True``) runs on real images: ``verify_images`` (paths, a
    directory, or (path, class index) pairs) or else the FinetuneResult's validation split,
    at most ``max_verify_images`` of them (a seeded sample; None = all).  Beyond
    ``max_abs_diff`` or below ``min_top1_agreement`` it raises ExportVerificationError and
    leaves nothing at ``path``.

    ``variants``: any of "optimized", "fp16", "int8", written beside the model as
    ``<stem>.<variant>.onnx`` with their accuracy and speed against fp32 in the report.
    "int8" calibrates on ``calibration_images`` (default: a seeded sample of
    ``calibration_size`` training images of the FinetuneResult) with ``int8_method``
    ("minmax", "percentile" or "entropy").

    The report is saved as JSON beside the model (:func:`report_path_for`); returns the path,
    or ``(path, ExportReport)`` with ``return_report=True``.
    """
    import time

    torch = _require_torch()
    onnx = _require_onnx()
    started = time.perf_counter()
    target = Path(path)
    if target.suffix != ".onnx":
        raise ExportError(f"the export path must end with .onnx, got {target}")
    if not target.parent.is_dir():
        raise ExportError(f"the directory of the export path does not exist: {target.parent}")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ExportError(f"unknown variants {unknown}; choose from {VARIANTS}")
    if "int8" in variants and int8_method not in INT8_METHODS:
        raise ExportError(f"int8_method must be one of {INT8_METHODS}, got {int8_method!r}")
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < 11:
        raise ExportError(f"opset must be an int >= 11, got {opset!r}")

    src = _resolve_source(source, labels, preprocess)
    spec = src.preprocess
    n_bytes = sum(p.numel() * p.element_size() for p in src.model.parameters())
    if n_bytes >= 2**31 - 2**24:  # protobuf's 2 GB limit, minus room for the graph itself
        raise ExportError(
            f"the model has {n_bytes / 2**30:.2f} GiB of parameters: one self-contained .onnx file is "
            "limited to 2 GB (protobuf); models that large are not supported"
        )
    output_name = "probabilities" if probabilities else "logits"
    rng = np.random.default_rng(seed)

    verify_samples = _normalise_samples(verify_images, "verify_images") if verify_images is not None else src.val_samples
    if max_verify_images is not None and len(verify_samples) > max_verify_images:
        pick = np.sort(rng.choice(len(verify_samples), size=max_verify_images, replace=False))
        verify_samples = [verify_samples[i] for i in pick]
    if (verify or variants) and not verify_samples:
        raise ExportError(
            "verification needs real images and none are known for this source: pass "
            "verify_images= (paths or (path, class index) pairs)"
            + ("" if variants else ", or verify=False")
        )

    calibration = (
        _calibration_samples(calibration_images, src, calibration_size, rng) if "int8" in variants else None
    )

    model = src.model
    # eval() on the wrapper too: the TorchScript exporter restores the wrapper's own mode
    # afterwards, and a fresh Sequential is in training mode (it would put the model there)
    module = torch.nn.Sequential(model, torch.nn.Softmax(dim=1)).eval() if probabilities else model
    model.eval()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".onnx.tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    _chmod_like_a_new_file(tmp)  # mkstemp makes it 0600; the model should get the usual umask mode
    variant_tmps: list[tuple[Path, Path]] = []
    try:
        dummy = torch.zeros(2 if dynamic_batch else 1, 3, spec.crop_size, spec.crop_size)
        # one eager forward first: a wrong label count or crop size fails here, clearly
        try:
            with torch.no_grad():
                probe = model(dummy)
        except Exception as exc:
            raise ExportError(
                f"the model does not run on a {tuple(dummy.shape)} input (crop_size {spec.crop_size}): {exc}"
            ) from exc
        if not isinstance(probe, torch.Tensor) or probe.ndim != 2:
            raise ExportError(
                "the model must return one (batch, classes) tensor, got "
                + (f"shape {tuple(probe.shape)}" if isinstance(probe, torch.Tensor) else type(probe).__name__)
            )
        if probe.shape[1] != len(src.labels):
            raise ContractError(
                f"{len(src.labels)} labels given but the model outputs {probe.shape[1]} classes"
            )
        axes = {input_name: {0: "batch"}, output_name: {0: "batch"}} if dynamic_batch else None
        try:
            with _quiet_torchscript_exporter(), torch.inference_mode(False), torch.no_grad():
                torch.onnx.export(
                    module,
                    (dummy,),
                    str(tmp),
                    input_names=[input_name],
                    output_names=[output_name],
                    dynamic_axes=axes,
                    opset_version=opset,
                    do_constant_folding=True,
                    dynamo=False,
                )
        except Exception as exc:  # torch raises many kinds here; name the model and opset
            raise ExportError(f"torch.onnx.export failed for {src.provenance.get('arch')} at opset {opset}: {exc}") from exc

        proto = onnx.load(str(tmp))
        onnx.checker.check_model(proto)
        out_shape = [d.dim_value or d.dim_param for d in proto.graph.output[0].type.tensor_type.shape.dim]
        in_shape = [d.dim_value or d.dim_param for d in proto.graph.input[0].type.tensor_type.shape.dim]
        if len(out_shape) != 2:
            raise ExportError(f"the model's output must be (batch, classes), got shape {out_shape}")
        if isinstance(out_shape[1], int) and out_shape[1] != len(src.labels):
            raise ContractError(
                f"{len(src.labels)} labels given but the model outputs {out_shape[1]} classes"
            )

        verification = None
        if verify:
            verification = verify_onnx(
                tmp,
                model,
                verify_samples,
                preprocess=spec,
                probabilities=probabilities,
                max_abs_diff=max_abs_diff,
                min_top1_agreement=min_top1_agreement,
                batch_size=batch_size,
            )

        prov: dict[str, Any] = {
            **{k: v for k, v in src.provenance.items() if v is not None},
            "exporter": "butterfly_onnx.export_onnx (torch.onnx TorchScript exporter)",
            "opset": opset,
            "variant": "fp32",
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "versions": _versions(),
        }
        if verification is not None:
            prov["verification"] = {
                "images": verification.num_images,
                "max_abs_diff": verification.max_abs_diff,
                "top1_agreement": verification.top1_agreement,
            }
            if verification.onnx_accuracy is not None:
                prov["verification"]["accuracy"] = verification.onnx_accuracy
        if provenance:
            prov.update(provenance)
        contract = ModelContract(
            labels=tuple(src.labels),
            preprocess=spec,
            input_name=input_name,
            output_name=output_name,
            output_kind=output_name,
            provenance=prov,
        )
        write_contract(proto, contract, tmp)

        variant_reports: list[VariantReport] = []
        if variants:
            from .variants import build_variant, measure_variants

            built = []
            for name in variants:
                vtarget = target.with_name(f"{target.stem}.{name}.onnx")
                vtmp = target.with_name(f".{target.stem}.{name}.onnx.tmp")
                variant_tmps.append((vtmp, vtarget))
                calib = calibration if name == "int8" else None
                notes = build_variant(
                    name, tmp, vtmp, spec=spec, calibration=calib, batch_size=batch_size, int8_method=int8_method
                )
                vprov = dict(prov, variant=name, variant_of=target.name, variant_notes=notes)
                write_contract(vtmp, dataclasses.replace(contract, provenance=vprov), vtmp)
                built.append((name, vtmp, vtarget, notes))
            variant_reports = measure_variants(
                tmp,
                [(name, vtmp, vtarget, notes) for name, vtmp, vtarget, notes in built],
                verify_samples,
                spec=spec,
                batch_size=batch_size,
                threads=benchmark_threads,
                rounds=benchmark_rounds,
            )
        for vtmp, vtarget in variant_tmps:
            _atomic_replace(vtmp, vtarget)
        _atomic_replace(tmp, target)
    finally:
        for leftover in [tmp, *(v for v, _ in variant_tmps)]:
            leftover.unlink(missing_ok=True)
        model.train(src.was_training)

    report = ExportReport(
        path=str(target),
        opset=opset,
        input_name=input_name,
        output_name=output_name,
        output_kind=output_name,
        input_shape=in_shape,
        num_classes=len(src.labels),
        contract=contract.to_dict(),
        verification=verification,
        variants=variant_reports,
        seconds=time.perf_counter() - started,
    )
    report_file = report_path_for(target)
    report_tmp = report_file.with_name("." + report_file.name + ".tmp")
    report_tmp.write_text(report.to_json(), encoding="utf-8")
    os.replace(report_tmp, report_file)
    return (target, report) if return_report else target


def _calibration_samples(
    calibration_images: Any, src: _Source, size: int, rng: np.random.Generator
) -> list[Path]:
    samples = (
        _normalise_samples(calibration_images, "calibration_images")
        if calibration_images is not None
        else src.train_samples
    )
    if not samples:
        raise ExportError(
            "the int8 variant needs calibration images (training images, preprocessed like the "
            "model's input): pass calibration_images=, or export from a FinetuneResult"
        )
    if size and len(samples) > size:
        pick = np.sort(rng.choice(len(samples), size=size, replace=False))
        samples = [samples[i] for i in pick]
    return [p for p, _ in samples]
