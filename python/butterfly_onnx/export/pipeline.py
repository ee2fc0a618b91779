"""``export_onnx`` as named steps: check the arguments, resolve the source, trace, verify, write
the contract, build the variants, publish (atomic renames), save the report."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import importlib
import os
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._backends.providers import check_available, resolve_providers
from .._version import __version__
from ..contract import ModelContract, write_contract
from ..errors import ContractError, ExportError, ExportVerificationError
from ..settings import ExportSettings, settings_with, signature_with
from .calibration import INT8_FORMATS, calibration_draw
from .inputs import Sample, normalise_samples, require_onnx, require_torch
from .reports import ExportReport, VariantReport, VerificationReport
from .source import Source, resolve_source
from .variants import (
    INT8_METHODS,
    RUNTIME_PRECISIONS,
    VARIANTS,
    build_variant,
    measure_runtime_precision,
    measure_variants,
    require_openvino,
)
from .verify import verify_onnx

__all__ = ["export_onnx"]


def _check(settings: ExportSettings, target: Path) -> None:
    """What ExportSettings cannot check alone: the path and the variant names."""
    if target.suffix != ".onnx":
        raise ExportError(f"the export path must end with .onnx, got {target}")
    if not target.parent.is_dir():
        raise ExportError(f"the directory of the export path does not exist: {target.parent}")
    unknown = [v for v in settings.variants if v not in VARIANTS + RUNTIME_PRECISIONS]
    if unknown:
        raise ExportError(f"unknown variants {unknown}; choose from {VARIANTS + RUNTIME_PRECISIONS}")
    if "bf16" in settings.variants:
        require_openvino()
    if "int8" in settings.variants and settings.int8_method not in INT8_METHODS:
        raise ExportError(f"int8_method must be one of {INT8_METHODS}, got {settings.int8_method!r}")
    if "int8" in settings.variants and settings.int8_format not in INT8_FORMATS:
        raise ExportError(f"int8_format must be one of {INT8_FORMATS}, got {settings.int8_format!r}")
    if settings.providers is not None or settings.device is not None:
        # a provider this ONNX Runtime lacks is refused now, before anything is traced
        import onnxruntime as ort

        check_available(resolve_providers(settings.providers, settings.device), ort.get_available_providers())


# --------------------------------------------------------------------------- before tracing
def _check_size(model: Any) -> None:
    n_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    if n_bytes >= 2**31 - 2**24:  # protobuf's 2 GB limit, minus room for the graph itself
        raise ExportError(
            f"the model has {n_bytes / 2**30:.2f} GiB of parameters: one self-contained .onnx file is "
            "limited to 2 GB (protobuf); models that large are not supported"
        )


def _sample(samples: list[Sample], size: int | None, rng: np.random.Generator) -> list[Sample]:
    """A seeded sample of at most ``size`` (None/0 = all), in the original order."""
    if size and len(samples) > size:
        pick = np.sort(rng.choice(len(samples), size=size, replace=False))
        return [samples[i] for i in pick]
    return samples


def _verification_samples(
    verify_images: Any, src: Source, settings: ExportSettings, rng: np.random.Generator
) -> list[Sample]:
    if verify_images is not None:
        samples = normalise_samples(verify_images, "verify_images")
    else:
        samples = src.val_samples
    if settings.max_verify_images is not None:
        samples = _sample(samples, settings.max_verify_images, rng)
    if (settings.verify or settings.variants) and not samples:
        raise ExportError(
            "verification needs real images and none are known for this source: pass "
            "verify_images= (paths or (path, class index) pairs)" + ("" if settings.variants else ", or verify=False")
        )
    return samples


def _calibration_samples(calibration_images: Any, src: Source, size: int, rng: np.random.Generator) -> list[Path]:
    if calibration_images is not None:
        samples = normalise_samples(calibration_images, "calibration_images")
    else:
        samples = src.train_samples
    if not samples:
        raise ExportError(
            "the int8 variant needs calibration images (training images, preprocessed like the "
            "model's input): pass calibration_images=, or export from a FinetuneResult"
        )
    return [p for p, _ in calibration_draw(samples, size, rng)]


# --------------------------------------------------------------------------- files
class _Staging:
    """Temporary files beside the target; ``publish`` renames them into place, and whatever was
    not published is removed on exit (a failed export leaves nothing behind)."""

    def __init__(self, target: Path):
        self.target = target
        fd, name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".onnx.tmp", dir=target.parent)
        os.close(fd)
        self.model = Path(name)
        _chmod_like_a_new_file(self.model)  # mkstemp makes it 0600; the model gets the usual umask mode
        self.variants: list[tuple[str, Path, Path]] = []  # (name, temporary file, final path)

    def variant(self, name: str) -> tuple[Path, Path]:
        """(temporary file, final path) for variant ``name``: ``<stem>.<name>.onnx``."""
        final = self.target.with_name(f"{self.target.stem}.{name}.onnx")
        tmp = self.target.with_name(f".{self.target.stem}.{name}.onnx.tmp")
        self.variants.append((name, tmp, final))
        return tmp, final

    def publish(self) -> None:
        for _, tmp, final in self.variants:
            os.replace(tmp, final)
        os.replace(self.model, self.target)

    def __enter__(self) -> _Staging:
        return self

    def __exit__(self, *exc: object) -> None:
        for leftover in [self.model, *(tmp for _, tmp, _ in self.variants)]:
            leftover.unlink(missing_ok=True)


def _chmod_like_a_new_file(path: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


# --------------------------------------------------------------------------- trace
@contextlib.contextmanager
def _quiet_torchscript_exporter() -> Iterator[None]:
    # torch >= 2.9 deprecates the TorchScript exporter; we pin it on purpose (dynamo=False):
    # it handles every torchvision classifier with dynamic batch and needs no onnxscript.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=r".*The feature will be removed.*", category=DeprecationWarning)
        yield


def _trace(src: Source, settings: ExportSettings, out: Path) -> tuple[Any, list[Any]]:
    """The ONNX graph of ``src.model`` written to ``out``, checked; (ModelProto, input shape)."""
    torch, onnx = require_torch(), require_onnx()
    model, spec, n_labels = src.model, src.preprocess, len(src.labels)
    dummy = torch.zeros(2 if settings.dynamic_batch else 1, 3, spec.crop_size, spec.crop_size)
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
    if probe.shape[1] != n_labels:
        raise ContractError(f"{n_labels} labels given but the model outputs {probe.shape[1]} classes")
    # eval() on the wrapper too: the TorchScript exporter restores the wrapper's own mode
    # afterwards, and a fresh Sequential is in training mode (it would put the model there)
    module = torch.nn.Sequential(model, torch.nn.Softmax(dim=1)).eval() if settings.probabilities else model
    input_name, output_name = settings.input_name, settings.output_name
    axes = {input_name: {0: "batch"}, output_name: {0: "batch"}} if settings.dynamic_batch else None
    try:
        with _quiet_torchscript_exporter(), torch.inference_mode(False), torch.no_grad():
            torch.onnx.export(
                module,
                (dummy,),
                str(out),
                input_names=[input_name],
                output_names=[output_name],
                dynamic_axes=axes,
                opset_version=settings.opset,
                do_constant_folding=True,
                dynamo=False,
            )
    except Exception as exc:  # torch raises many kinds here; name the model and opset
        raise ExportError(
            f"torch.onnx.export failed for {src.provenance.get('arch')} at opset {settings.opset}: {exc}"
        ) from exc

    proto = onnx.load(str(out))
    onnx.checker.check_model(proto)
    out_shape = [d.dim_value or d.dim_param for d in proto.graph.output[0].type.tensor_type.shape.dim]
    in_shape = [d.dim_value or d.dim_param for d in proto.graph.input[0].type.tensor_type.shape.dim]
    if len(out_shape) != 2:
        raise ExportError(f"the model's output must be (batch, classes), got shape {out_shape}")
    if isinstance(out_shape[1], int) and out_shape[1] != n_labels:
        raise ContractError(f"{n_labels} labels given but the model outputs {out_shape[1]} classes")
    return proto, in_shape


# --------------------------------------------------------------------------- the contract
def _versions() -> dict[str, str]:
    """Versions of what produced the file (module ``__version__``: keeps torch's build tag)."""
    versions = {"butterfly_onnx": __version__}
    for name, module in (
        ("torch", "torch"),
        ("torchvision", "torchvision"),
        ("onnx", "onnx"),
        ("onnxruntime", "onnxruntime"),
        ("pillow", "PIL"),
    ):
        try:
            versions[name] = str(importlib.import_module(module).__version__)
        except ImportError:  # pragma: no cover
            pass
    return versions


def _contract(src: Source, settings: ExportSettings, verification: VerificationReport | None) -> ModelContract:
    """The fp32 model's contract: labels, preprocessing, I/O names and provenance."""
    prov: dict[str, Any] = {
        **{k: v for k, v in src.provenance.items() if v is not None},
        "exporter": "butterfly_onnx.export_onnx (torch.onnx TorchScript exporter)",
        "opset": settings.opset,
        "variant": "fp32",
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
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
    if settings.provenance:
        prov.update(settings.provenance)
    return ModelContract(
        labels=tuple(src.labels),
        preprocess=src.preprocess,
        input_name=settings.input_name,
        output_name=settings.output_name,
        output_kind=settings.output_name,
        provenance=prov,
    )


# --------------------------------------------------------------------------- variants
def _build_variants(
    staging: _Staging,
    contract: ModelContract,
    settings: ExportSettings,
    samples: list[Sample],
    calibration: list[Path] | None,
) -> list[VariantReport]:
    """Each requested variant beside the staged fp32 model, with its own contract, measured."""
    if not settings.variants:
        return []
    spec, target = contract.preprocess, staging.target
    built = []
    for name in settings.variants:
        if name in RUNTIME_PRECISIONS:  # measured on the fp32 file below; no file of its own
            continue
        tmp, final = staging.variant(name)
        entries = build_variant(
            name,
            staging.model,
            tmp,
            spec=spec,
            calibration=calibration if name == "int8" else None,
            batch_size=settings.batch_size,
            int8_method=settings.int8_method,
            int8_format=settings.int8_format,
            min_agreement=settings.min_agreement,
        )
        provenance = dict(contract.provenance, variant=name, variant_of=target.name, **entries)
        write_contract(tmp, dataclasses.replace(contract, provenance=provenance), tmp)
        built.append((name, tmp, final, entries))
    reports = (
        measure_variants(
            staging.model,
            built,
            samples,
            spec=spec,
            batch_size=settings.batch_size,
            threads=settings.benchmark_threads,
            rounds=settings.benchmark_rounds,
        )
        if built
        else []
    )
    # the gate: a variant that changes the answers is not written (the point estimate decides)
    below = [r for r in reports if r.top1_agreement < settings.min_agreement]
    if below:
        error = ExportVerificationError(
            f"{target}: variant {', '.join(r.name for r in below)} below min_agreement="
            f"{settings.min_agreement:g}; nothing written: "
            + "; ".join(r.summary() for r in below)
            + " (a lower min_agreement, --min-agreement on the command line, accepts it; 0 turns the gate off)"
        )
        error.reports = below  # type: ignore[attr-defined]
        raise error
    for name in settings.variants:  # reported, not gated: they write no file
        if name in RUNTIME_PRECISIONS:
            reports.append(
                measure_runtime_precision(
                    staging.model,
                    target,
                    samples,
                    spec=spec,
                    precision=name,
                    batch_size=settings.batch_size,
                    rounds=settings.benchmark_rounds,
                )
            )
    return reports


# --------------------------------------------------------------------------- export_onnx
def export_onnx(
    source: Any,
    path: str | os.PathLike[str],
    settings: ExportSettings | None = None,
    *,
    labels: Sequence[str] | None = None,
    preprocess: Any = None,
    verify_images: Any = None,
    calibration_images: Any = None,
    **overrides: Any,
) -> Path:
    """Export a classifier to one self-describing ONNX file and verify it; returns its path.

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
    ``calibration_size`` training images of the FinetuneResult, every class represented) with
    ``int8_method`` ("minmax", "percentile" or "entropy") and ``int8_format`` ("s8s8" or
    "u8s8").  A variant whose top-1 agreement with fp32 on the verification images is below
    ``min_agreement`` (0 turns the gate off) is not written: ExportVerificationError with the
    figures; for int8 the most sensitive nodes are first kept in float (up to 4) to reach it on
    the calibration images.

    The report is saved as JSON beside the model (:func:`report_path_for`); read it with
    ``ExportReport.load(path)``.

    The knobs (``opset``, ``verify``, ``variants``, ...) are the fields of
    :class:`~butterfly_onnx.settings.ExportSettings`, given as ``settings`` and/or keyword
    ``overrides``: their one definition (``inspect.signature(export_onnx)`` lists them).
    """
    started = time.perf_counter()
    settings = settings_with(ExportSettings, settings, overrides, ExportError)
    target = Path(path)
    require_torch()
    require_onnx()
    _check(settings, target)
    src = resolve_source(source, labels, preprocess)
    _check_size(src.model)
    rng = np.random.default_rng(settings.seed)
    verify_samples = _verification_samples(verify_images, src, settings, rng)
    calibration = None
    if "int8" in settings.variants:
        calibration = _calibration_samples(calibration_images, src, settings.calibration_size, rng)

    src.model.eval()
    try:
        with _Staging(target) as staging:
            proto, input_shape = _trace(src, settings, staging.model)
            verification = None
            if settings.verify:
                verification = verify_onnx(
                    staging.model,
                    src.model,
                    verify_samples,
                    preprocess=src.preprocess,
                    probabilities=settings.probabilities,
                    max_abs_diff=settings.max_abs_diff,
                    min_top1_agreement=settings.min_top1_agreement,
                    batch_size=settings.batch_size,
                    providers=settings.providers,
                    device=settings.device,
                )
            contract = _contract(src, settings, verification)
            write_contract(proto, contract, staging.model)
            # variants are measured on the whole validation split (ONNX Runtime only, no torch)
            variant_samples = src.val_samples if verify_images is None and src.val_samples else verify_samples
            variant_reports = _build_variants(staging, contract, settings, variant_samples, calibration)
            staging.publish()
    finally:
        src.model.train(src.was_training)

    report = ExportReport(
        path=str(target),
        opset=settings.opset,
        input_name=settings.input_name,
        output_name=settings.output_name,
        output_kind=settings.output_name,
        input_shape=input_shape,
        num_classes=len(src.labels),
        contract=contract.to_dict(),
        verification=verification,
        variants=variant_reports,
        seconds=time.perf_counter() - started,
    )
    report.save()
    return target


export_onnx.__signature__ = signature_with(export_onnx, ExportSettings)  # type: ignore[attr-defined]
