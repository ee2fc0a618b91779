"""The knobs of ``finetune`` and ``export_onnx``, each defined once with its default and help.

:class:`FinetuneSettings` and :class:`ExportSettings` are the one definition: ``finetune`` and
``export_onnx`` take them (or the same names as keyword overrides), their signatures are built
from them, and the CLI's ``finetune`` / ``export`` options are generated from their fields
(:func:`cli_fields`).  Torch-free, so ``butterfly-onnx --help`` needs no torch.

``FinetuneSettings`` is validated, frozen, saved in every checkpoint (``to_dict()``) and compared
on resume (:meth:`FinetuneSettings.resume_changes`): settings that only shape what is still to
come (epochs, learning rates, ...) are applied to the resumed run, settings that would make the
finished epochs a different run are refused.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .contract import PreprocessSpec
from .errors import ExportError, TrainingError

__all__ = [
    "FinetuneSettings",
    "ExportSettings",
    "APPLIED_ON_RESUME",
    "CLASS_BALANCE",
    "PRECISIONS",
    "settings_with",
    "signature_with",
    "cli_fields",
]

#: Settings a resumed run may change: they are applied from the next optimizer step on.
APPLIED_ON_RESUME = frozenset(
    {
        "epochs",
        "lr",
        "finetune_lr",
        "weight_decay",
        "warmup",
        "patience",
        # where and how it runs, not what it computes
        "num_workers",
        "device",
        "precision",
        "channels_last",
        "threads",
        "dist_timeout_s",
    }
)

#: ``class_balance`` choices: "none", or "loss" (cross-entropy weighted by n / (C * n_class)).
CLASS_BALANCE = ("none", "loss")

#: ``precision`` choices (train/hardware.py resolves "auto" for the device).
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def knob(default: Any, help: str, **extra: Any) -> Any:
    """A dataclass field with its help text (shown by ``--help``, with the default)."""
    return field(default=default, metadata={"help": help, **extra})


def _number(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    integer: bool = False,
    open_min: bool = False,
    error: type[Exception] = TrainingError,
) -> None:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or (not integer and not math.isfinite(value)):
        raise error(f"{name} must be {'an integer' if integer else 'a finite number'}, got {value!r}")
    if minimum is not None and (value <= minimum if open_min else value < minimum):
        raise error(f"{name} must be {'>' if open_min else '>='} {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise error(f"{name} must be <= {maximum}, got {value!r}")


def _optional(name: str, value: Any, **limits: Any) -> None:
    if value is not None:
        _number(name, value, **limits)


def _flags(obj: Any, names: tuple[str, ...], error: type[Exception], optional: bool = False) -> None:
    for name in names:
        value = getattr(obj, name)
        if not (isinstance(value, bool) or (optional and value is None)):
            allowed = "None, True or False" if optional else "True or False"
            raise error(f"{name} must be {allowed}, got {value!r}")


@dataclass(frozen=True)
class FinetuneSettings:
    """Everything that decides what :func:`finetune` computes and how fast (not where the data
    or outputs are).  The defaults were chosen by the measurements in docs/training.md.

    ``head_epochs`` larger than ``epochs`` is clamped to ``epochs`` (``notes`` says so)."""

    model: str = knob("efficientnet_lite0", "architecture: any name 'butterfly-onnx models' lists")
    weights: Any = knob("DEFAULT", "pretrained weights: DEFAULT, a torchvision weights name, a local file, or none")
    epochs: int = knob(10, "epochs in all (head epochs included)")
    head_epochs: int = knob(1, "first epochs training only the head, on the frozen backbone's cached features")
    unfreeze: str | float = knob("all", "backbone part trained after the head epochs: all, none, or a fraction")
    batch_size: int = knob(32, "images per optimizer step")
    lr: float = knob(1e-3, "head-phase learning rate (AdamW)")
    finetune_lr: float | None = knob(None, "fine-tuning phase learning rate (none: lr / 10)")
    weight_decay: float = knob(0.01, "AdamW weight decay")
    warmup: float = knob(0.1, "linear warm-up, as a fraction of each phase's steps (then cosine decay)")
    label_smoothing: float = knob(0.1, "cross-entropy label smoothing")
    val_fraction: float = knob(0.2, "validation split (stratified, seeded) when no val_data is given")
    seed: int = knob(0, "seed of the split, the initial head, the augmentation and the batch order")
    num_workers: int | None = knob(None, "DataLoader workers (none: 0 on a CPU, the usable cores on a GPU)")
    device: str = knob("auto", "auto (cuda, mps, else cpu), cpu, cuda, cuda:N, mps")
    precision: str = knob(
        "auto",
        "fp32, bf16 or fp16 autocast (auto: bf16 on a CPU with native bf16 or a bf16 GPU, fp16 on other GPUs)",
        choices=PRECISIONS,
    )
    channels_last: bool | None = knob(None, "channels_last memory format (none: where measured faster, per family)")
    threads: int | None = knob(None, "torch threads (none: the cores this process may use, affinity/cgroup-aware)")
    patience: int | None = knob(5, "stop after this many epochs without a better val top-1 (none: never)")
    preprocess: PreprocessSpec | None = knob(
        None, "override the weights' eval preprocessing (JSON: resize_size, crop_size, mean, std[, interpolation])"
    )
    max_steps_per_epoch: int | None = knob(None, "cap on optimizer steps per uncached epoch (quick trials)")
    filename_column: str = knob("filename", "CSV column holding the image file names")
    label_column: str = knob("label", "CSV column holding the labels")
    dist_timeout_s: float = knob(600.0, "seconds a DDP process waits for the others")
    cache_features: bool = knob(True, "compute the frozen backbone's features once for the head phase and probe")
    head_steps: int = knob(300, "at least this many optimizer steps over the cached features in the head phase")
    head_views: int = knob(0, "extra augmented views of each training image in the feature cache")
    class_balance: str = knob(
        "none", "none, or loss: cross-entropy weighted by inverse class frequency", choices=CLASS_BALANCE
    )
    probe_fallback: bool = knob(True, "when no epoch beats the linear probe, keep the probe's head")
    freeze_norm_stats: bool = knob(True, "BatchNorm layers keep their pretrained running statistics")
    notes: tuple[str, ...] = field(default=(), compare=False, metadata={"cli": False})

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise TrainingError(f"model must be an architecture name, got {self.model!r}")
        _number("epochs", self.epochs, minimum=1, integer=True)
        _number("head_epochs", self.head_epochs, minimum=0, integer=True)
        notes = list(self.notes)
        if self.head_epochs > self.epochs:
            notes.append(f"head_epochs={self.head_epochs} clamped to epochs={self.epochs}")
            object.__setattr__(self, "head_epochs", self.epochs)
        if not (
            self.unfreeze in ("all", "none")
            or (
                isinstance(self.unfreeze, (int, float))
                and not isinstance(self.unfreeze, bool)
                and 0 < float(self.unfreeze) <= 1
            )
        ):
            raise TrainingError(f"unfreeze must be 'all', 'none' or a fraction in (0, 1], got {self.unfreeze!r}")
        _number("batch_size", self.batch_size, minimum=1, integer=True)
        _number("lr", self.lr, minimum=0)
        _optional("finetune_lr", self.finetune_lr, minimum=0)
        _number("weight_decay", self.weight_decay, minimum=0)
        _number("warmup", self.warmup, minimum=0, maximum=1)
        _number("label_smoothing", self.label_smoothing, minimum=0, maximum=1)
        _number("val_fraction", self.val_fraction, minimum=0, maximum=1, open_min=True)
        _number("seed", self.seed, minimum=0, integer=True)
        _optional("num_workers", self.num_workers, minimum=0, integer=True)
        _optional("threads", self.threads, minimum=1, integer=True)
        _optional("patience", self.patience, minimum=1, integer=True)
        _optional("max_steps_per_epoch", self.max_steps_per_epoch, minimum=1, integer=True)
        if self.preprocess is not None and not isinstance(self.preprocess, PreprocessSpec):
            try:
                object.__setattr__(self, "preprocess", PreprocessSpec.coerce(self.preprocess))
            except Exception as exc:  # noqa: BLE001 - any failure is a bad argument
                raise TrainingError(f"preprocess must be a PreprocessSpec, got {self.preprocess!r}: {exc}") from None
        _number("dist_timeout_s", self.dist_timeout_s, minimum=0, open_min=True)
        _number("head_steps", self.head_steps, minimum=0, integer=True)
        _number("head_views", self.head_views, minimum=0, integer=True)
        if self.class_balance not in CLASS_BALANCE:
            raise TrainingError(f"class_balance must be one of {CLASS_BALANCE}, got {self.class_balance!r}")
        if self.precision not in PRECISIONS:
            raise TrainingError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        _flags(self, ("cache_features", "probe_fallback", "freeze_norm_stats"), TrainingError)
        _flags(self, ("channels_last",), TrainingError, optional=True)
        if self.lr == 0 and self.head_epochs > 0:
            notes.append("lr=0: the head phase does not change the head")
        if self.backbone_lr == 0 and self.full_epochs > 0:
            notes.append("finetune_lr=0: the fine-tuning epochs do not change the model")
        object.__setattr__(self, "notes", tuple(notes))

    # --- derived values -------------------------------------------------------------------
    @property
    def backbone_lr(self) -> float:
        """The full phase's learning rate: ``finetune_lr``, default ``lr / 10``."""
        return self.lr / 10 if self.finetune_lr is None else self.finetune_lr

    @property
    def full_epochs(self) -> int:
        return self.epochs - self.head_epochs

    # --- persistence ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable: what the checkpoint stores (``preprocess`` as its dict, ``weights``
        as a string when it is a path)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "notes":
                continue
            value = getattr(self, f.name)
            if isinstance(value, PreprocessSpec):
                value = value.to_dict()
            elif f.name == "weights" and value is not None and not isinstance(value, str):
                value = str(value)
            out[f.name] = value
        return out

    def replace(self, **changes: Any) -> FinetuneSettings:
        return dataclasses.replace(self, **changes)

    def resume_changes(self, saved: Mapping[str, Any]) -> tuple[dict[str, tuple[Any, Any]], dict[str, tuple[Any, Any]]]:
        """Compare with the settings a checkpoint was written with: ``(applied, refused)``,
        each ``{name: (saved value, this value)}``.  Keys the checkpoint lacks count as equal
        when this value is the default (settings added after it was written)."""
        current = json.loads(json.dumps(self.to_dict()))  # as the checkpoint stores it (tuples -> lists)
        defaults = json.loads(json.dumps(FinetuneSettings().to_dict()))
        applied: dict[str, tuple[Any, Any]] = {}
        refused: dict[str, tuple[Any, Any]] = {}
        for name, value in current.items():
            old = saved.get(name, defaults[name])
            if old == value:
                continue
            (applied if name in APPLIED_ON_RESUME else refused)[name] = (old, value)
        return applied, refused


@dataclass(frozen=True)
class ExportSettings:
    """Everything that decides what :func:`export_onnx` writes and how it checks it (not the
    source, the path or the images)."""

    opset: int = knob(17, "ONNX opset")
    dynamic_batch: bool = knob(True, "a dynamic batch dimension (else batch 1)")
    probabilities: bool = knob(False, "append a Softmax: the output is probabilities, not logits")
    input_name: str = knob("input", "the graph's input name")
    verify: bool = knob(True, "verify torch against ONNX Runtime on real images")
    max_verify_images: int | None = knob(256, "verify on a seeded sample of at most this many images (none: all)")
    max_abs_diff: float = knob(1e-4, "largest output difference verification accepts")
    min_top1_agreement: float = knob(1.0, "smallest top-1 agreement verification accepts")
    variants: tuple[str, ...] = knob((), "optional variants beside the model: optimized, fp16, int8, bf16", cli=False)
    # calibration_size and int8_format defaults: export/calibration.py's DEFAULT_* (pinned by
    # tests/test_settings.py; importing it here would make settings depend on the export package)
    calibration_size: int = knob(300, "training images the int8 variant calibrates on (every class represented)")
    int8_method: str = knob("minmax", "int8 calibration: minmax, percentile or entropy")
    int8_format: str = knob("u8s8", "int8 activation/weight types: s8s8 or u8s8")
    min_agreement: float = knob(
        0.99, "a variant whose top-1 agreement with fp32 is below this is not written (0: no gate)"
    )
    benchmark_threads: int | None = knob(None, "threads when timing the variants (none: ONNX Runtime's default)")
    benchmark_rounds: int = knob(7, "timing rounds per variant (the best counts)")
    provenance: Mapping[str, Any] | None = knob(None, "extra provenance entries (JSON object)")
    batch_size: int = knob(16, "images per verification/benchmark batch")
    seed: int = knob(0, "seed of the verification and calibration samples")
    # where the verification's ONNX Runtime runs, as Classifier takes them (the CLI's --device /
    # --provider); None: the CPU provider.  Variants are measured on the CPU provider.
    providers: Any = knob(None, "execution providers of the verification (names or (name, options))", cli=False)
    device: str | None = knob(None, "the verification's device shorthand (cpu, cuda:0, openvino, ...)", cli=False)

    def __post_init__(self) -> None:
        if isinstance(self.opset, bool) or not isinstance(self.opset, int) or self.opset < 11:
            raise ExportError(f"opset must be an int >= 11, got {self.opset!r}")
        _flags(self, ("dynamic_batch", "probabilities", "verify"), ExportError)
        if not isinstance(self.input_name, str) or not self.input_name:
            raise ExportError(f"input_name must be a non-empty string, got {self.input_name!r}")
        _optional("max_verify_images", self.max_verify_images, minimum=0, integer=True, error=ExportError)
        _number("max_abs_diff", self.max_abs_diff, minimum=0, error=ExportError)
        _number("min_top1_agreement", self.min_top1_agreement, minimum=0, maximum=1, error=ExportError)
        if isinstance(self.variants, str):
            raise ExportError(f"variants must be a sequence of names, got the string {self.variants!r}")
        object.__setattr__(self, "variants", tuple(self.variants))
        _number("calibration_size", self.calibration_size, minimum=1, integer=True, error=ExportError)
        _number("min_agreement", self.min_agreement, minimum=0, maximum=1, error=ExportError)
        _optional("benchmark_threads", self.benchmark_threads, minimum=1, integer=True, error=ExportError)
        _number("benchmark_rounds", self.benchmark_rounds, minimum=1, integer=True, error=ExportError)
        _number("batch_size", self.batch_size, minimum=1, integer=True, error=ExportError)
        _number("seed", self.seed, minimum=0, integer=True, error=ExportError)

    @property
    def output_name(self) -> str:
        return "probabilities" if self.probabilities else "logits"


# --- one definition, several readers ---------------------------------------------------------
def settings_with(kind: type[Any], settings: Any, overrides: Mapping[str, Any], error: type[Exception]) -> Any:
    """``settings`` (an instance of ``kind``, or None for the defaults) with ``overrides`` applied;
    an unknown name is an ``error`` naming it and the valid ones."""
    if settings is not None and not isinstance(settings, kind):
        raise error(f"settings must be a {kind.__name__}, got {type(settings).__name__}")
    names = [f.name for f in dataclasses.fields(kind) if f.name != "notes"]
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        raise error(f"unknown {kind.__name__} settings {unknown}; the settings are {names}")
    if settings is None:
        return kind(**overrides)
    return dataclasses.replace(settings, **overrides) if overrides else settings


def signature_with(function: Callable[..., Any], kind: type[Any]) -> inspect.Signature:
    """``function``'s signature with its ``**overrides`` spelled out as ``kind``'s fields and
    defaults (what ``help()`` and IDEs show)."""
    signature = inspect.signature(function)
    params = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    for f in dataclasses.fields(kind):
        if f.name == "notes":
            continue
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=f.type))
    return signature.replace(parameters=params)


def cli_fields(kind: type[Any]) -> list[dataclasses.Field[Any]]:
    """The fields the CLI exposes as ``--name`` options (all but internal ones)."""
    return [f for f in dataclasses.fields(kind) if f.metadata.get("cli", True) and "help" in f.metadata]
