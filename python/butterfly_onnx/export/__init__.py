"""``export_onnx``: a PyTorch classifier -> one verified, self-describing ONNX file.

The exported file carries the model contract (labels, preprocessing, provenance; see
``docs/contract.md``) written by :func:`butterfly_onnx.contract.write_contract`, the only
writer.  Before the file appears at its final path it is verified on real images: the
project's own preprocessing feeds both torch eager and ONNX Runtime, and the maximum absolute
output difference and the top-1 agreement must stay within thresholds, otherwise
:class:`~butterfly_onnx.errors.ExportVerificationError` is raised and nothing is written.

One module per step: ``inputs`` (arguments, images, preprocessing), ``source`` (what is
exported), ``session`` (ONNX Runtime runs and comparisons), ``verify`` (``verify_onnx``),
``variants`` (optimized / fp16 / int8), ``reports`` (the JSON report), ``pipeline``
(``export_onnx``, the steps in order).

Needs the ``train`` extra (torch, torchvision, onnx) besides onnxruntime.
"""

from __future__ import annotations

from .pipeline import export_onnx
from .reports import ExportReport, NearTieFallback, VariantReport, VerificationReport, report_path_for
from .variants import VARIANTS
from .verify import verify_onnx

__all__ = [
    "export_onnx",
    "verify_onnx",
    "ExportReport",
    "VerificationReport",
    "VariantReport",
    "NearTieFallback",
    "VARIANTS",
    "report_path_for",
]
