"""What ``export_onnx`` measured: the verification, each variant, the whole export (saved as JSON)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write

__all__ = [
    "ExportReport",
    "NearTieFallback",
    "SpeedRow",
    "VariantReport",
    "VerificationReport",
    "report_path_for",
    "wilson_interval",
]

#: the normal quantile of a two-sided 95 % interval
_Z95 = 1.959963984540054


def wilson_interval(successes: int, n: int, z: float = _Z95) -> tuple[float, float]:
    """The Wilson score interval (95 % by default) of a proportion ``successes / n``; (0, 1)
    when ``n`` is 0.  Unlike the normal approximation it stays inside [0, 1] and is not
    degenerate at 0 or n successes, where agreement figures usually are."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # at 0 or n successes the bound is exactly 0 or 1 (rounding would put it a hair inside)
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


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
class SpeedRow:
    """ms/image end to end (``Classifier.logits``) of a variant and of fp32 on one backend at
    ``threads``, measured side by side (best of interleaved rounds)."""

    backend: str
    threads: int
    ms_per_image: float
    fp32_ms_per_image: float

    @property
    def speedup(self) -> float:
        return self.fp32_ms_per_image / self.ms_per_image if self.ms_per_image > 0 else math.nan


@dataclass
class NearTieFallback:
    """A variant run with its fp32 model answering the near-ties
    (``Classifier(variant, fallback_model=fp32)``), on the same images as its report."""

    #: the variant's ``fallback_margin``: its largest error spread on the calibration images
    margin: float
    #: share of images whose two best scores are less than ``margin`` apart: run twice
    share: float
    #: top-1 agreement with fp32 of the answers given that way, with its 95 % Wilson interval
    top1_agreement: float
    agreement_interval: tuple[float, float]

    def summary(self, num_images: int) -> str:
        low, high = self.agreement_interval
        return (
            f"with fp32 answering its near-ties (margin {self.margin:.3g}, {self.share:.1%} of images run twice): "
            f"top-1 agreement {self.top1_agreement:.2%} ({round(self.top1_agreement * num_images)}/{num_images}, "
            f"95% interval {low:.2%}-{high:.2%})"
        )


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
    #: 95 % Wilson interval of ``top1_agreement``
    agreement_interval: tuple[float, float] = (0.0, 1.0)
    #: share of images whose fp32 top-1 class is among the variant's top 5
    fp32_top1_in_top5: float | None = None
    #: end-to-end speed against fp32 per backend and thread count
    speed: list[SpeedRow] = field(default_factory=list)
    #: the same images answered with fp32 on the near-ties (variants with a ``fallback_margin``)
    fallback: NearTieFallback | None = None

    @property
    def speedup(self) -> float:
        return self.fp32_ms_per_batch / self.ms_per_batch if self.ms_per_batch > 0 else math.nan

    def agreement_text(self) -> str:
        low, high = self.agreement_interval
        agreed = round(self.top1_agreement * self.num_images)
        return (
            f"top-1 agreement with fp32 {self.top1_agreement:.2%} ({agreed}/{self.num_images}, "
            f"95% interval {low:.2%}-{high:.2%})"
        )

    def summary(self) -> str:
        text = f"{self.name}: {self.agreement_text()}"
        if self.fp32_top1_in_top5 is not None:
            text += f", fp32 top-1 in its top-5 {self.fp32_top1_in_top5:.2%}"
        text += f", max logit diff {self.max_abs_diff:.3g}"
        if self.accuracy is not None:
            text += f", accuracy {self.accuracy:.2%} (fp32 {self.fp32_accuracy:.2%})"
        text += (
            f", {self.size_bytes / 1e6:.1f} MB; ONNX Runtime {self.ms_per_batch:.1f} ms/batch of "
            f"{self.batch_size} vs {self.fp32_ms_per_batch:.1f} ms fp32 (x{self.speedup:.2f})"
        )
        for row in self.speed:
            text += (
                f"; {row.backend} threads={row.threads}: {row.ms_per_image:.2f} vs "
                f"{row.fp32_ms_per_image:.2f} ms/image (x{row.speedup:.2f})"
            )
        if self.fallback is not None:
            text += "; " + self.fallback.summary(self.num_images)
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
        for variant, raw in zip(self.variants, data["variants"], strict=True):
            raw["speedup"] = variant.speedup
            for row, raw_row in zip(variant.speed, raw["speed"], strict=True):
                raw_row["speedup"] = row.speedup
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False, default=_json_default)

    def save(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Write the JSON report (default: :func:`report_path_for` the model), atomically."""
        target = Path(path) if path is not None else report_path_for(self.path)
        with atomic_write(target, encoding="utf-8") as handle:
            handle.write(self.to_json())
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ExportReport:
        """Read a report written by export_onnx (``path`` = the model or the report file)."""
        path = Path(path)
        if path.suffix == ".onnx":
            path = report_path_for(path)
        data = json.loads(path.read_text(encoding="utf-8"))
        verification = data.pop("verification")
        variants = data.pop("variants")
        for raw in variants:
            raw.pop("speedup", None)
            raw["agreement_interval"] = tuple(raw.get("agreement_interval", (0.0, 1.0)))
            raw["speed"] = [
                SpeedRow(**{k: v for k, v in row.items() if k != "speedup"}) for row in raw.get("speed", [])
            ]
            if raw.get("fallback") is not None:
                fallback = raw["fallback"]
                fallback["agreement_interval"] = tuple(fallback["agreement_interval"])
                raw["fallback"] = NearTieFallback(**fallback)
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


def report_path_for(model_path: str | os.PathLike[str]) -> Path:
    """Where export_onnx saves the JSON report of ``model.onnx``: ``model.export.json``."""
    return Path(model_path).with_suffix(".export.json")


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
