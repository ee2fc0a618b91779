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

__all__ = ["ExportReport", "VariantReport", "VerificationReport", "report_path_for"]


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
        for variant, raw in zip(self.variants, data["variants"], strict=True):
            raw["speedup"] = variant.speedup
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False, default=_json_default)

    def save(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Write the JSON report (default: :func:`report_path_for` the model), atomically."""
        target = Path(path) if path is not None else report_path_for(self.path)
        tmp = target.with_name("." + target.name + ".tmp")
        tmp.write_text(self.to_json(), encoding="utf-8")
        os.replace(tmp, target)
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
