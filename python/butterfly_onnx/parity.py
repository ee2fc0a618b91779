"""``butterfly-onnx parity MODEL IMAGES...``: where, if anywhere, the backends leave torchvision.

For each image, the maximum absolute difference between torchvision (the reference: Pillow's
``Image.open(f).convert("RGB")``, then the model's ``Resize`` / ``CenterCrop`` / ``ToTensor`` /
``Normalize``) and each backend at every stage:

* ``decoded``: the RGB pixels (0-255 units);
* ``resized``: after ``Resize`` (0-255 units);
* ``cropped``: after ``CenterCrop`` (0-255 units);
* ``tensor``: the float32 model input;
* ``logits``: the model output (the reference logits come from a torch module when one is
  given, else from ONNX Runtime on torchvision's tensor: the same model, so any difference is
  preprocessing);

and the top-1 agreement with the reference.  With ``providers``/``device`` (``--device``,
``--provider``) the backends run the model on those execution providers while the reference
logits stay ONNX Runtime's CPU provider's (or torch's): the ``logits`` row and the top-1
agreement are then the provider's difference (preprocessing stays on the CPU, exact), and
``providers`` names what each backend ran on.

With ``jpeg_draft=True`` (``--jpeg-draft``) the backends run in JPEG draft mode and the
reference is torchvision on Pillow's drafted image (``im.draft("RGB", request)`` before
``convert("RGB")``, ``request`` from :func:`butterfly_onnx.images.jpeg_draft_request`), which
draft mode matches bit for bit; the ``decoded`` stage is then not compared for JPEGs (its
derived contract would ask for another draft scale), the later stages are.

The backends' intermediate pixels are read through their real pipelines: each stage is the
backend's own preprocessing with a derived contract whose normalization is the identity
(``mean = 0``, ``std = 1``, so the tensor is ``p / 255`` and gives back the 8-bit pixels exactly)
and whose crop keeps the whole image at that stage (a crop larger than the image pads it, at
torchvision's offsets). Python usage::

    from butterfly_onnx.parity import run_parity
    result = run_parity("model.onnx", ["a.jpg", "b.png"])
    print(result.format_table())
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ._backends.providers import add_provider_arguments, provider_arguments

__all__ = ["STAGES", "ParityResult", "run_parity", "add_arguments", "run"]

#: The stages compared, in pipeline order.
STAGES = ("decoded", "resized", "cropped", "tensor", "logits")
#: Pixel stages whose values are 8-bit levels.
PIXEL_STAGES = ("decoded", "resized", "cropped")
#: Backends compared against torchvision by default.
BACKENDS = ("python", "rust")
#: A derived crop larger than this (the contract's MAX_SIZE) cannot be expressed: the stage is
#: reported as not compared (None) for that image.
_MAX_CROP = 8192


@dataclass
class ParityResult:
    """``max_diff[stage][backend]``: the largest absolute difference from torchvision over all
    images (None where not compared); ``top1_agreement[backend]``: the fraction of images with
    the reference's top-1 class; ``per_image``: the same figures per image."""

    model: str
    images: list[str]
    backends: list[str]
    reference: str
    max_diff: dict[str, dict[str, float | None]]
    top1_agreement: dict[str, float]
    per_image: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    #: Backends in JPEG draft mode, against torchvision on Pillow's drafted JPEGs.
    jpeg_draft: bool = False
    #: ``variants[label][backend]``: a variant file (``model.int8.onnx`` -> ``int8``) against the
    #: same backend on the model: ``top1_agreement``, ``max_logit_diff``, ``ms_per_image`` and
    #: ``fp32_ms_per_image`` (logits of all images in one call each, side by side).
    variants: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    #: The execution providers each backend ran the model on (``Classifier.providers``).
    providers: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format_table(self) -> str:
        width = max(len(s) for s in STAGES + ("top-1 agreement",))
        draft = " (JPEG draft mode)" if self.jpeg_draft else ""
        lines = [f"parity against {self.reference}{draft} on {len(self.images)} image(s): max |difference|"]
        lines.append(f"{'stage':<{width}}  " + "  ".join(f"{b:>10}" for b in self.backends))
        for stage in STAGES:
            cells = []
            for backend in self.backends:
                value = self.max_diff[stage].get(backend)
                cells.append(f"{'-':>10}" if value is None else f"{value:>10.4g}")
            unit = " (0-255)" if stage in PIXEL_STAGES else ""
            lines.append(f"{stage + unit:<{width}}  " + "  ".join(cells))
        agreement = [f"{self.top1_agreement.get(b, float('nan')):>10.2%}" for b in self.backends]
        lines.append(f"{'top-1 agreement':<{width}}  " + "  ".join(agreement))
        for backend, names in self.providers.items():
            lines.append(f"{backend}: model on {'+'.join(names)}")
        for backend, why in self.skipped.items():
            lines.append(f"{backend}: not compared ({why})")
        if self.variants:
            lines.append("variants against the model on the same backend (not bit-exact by design):")
            lines.append(f"{'variant':<12}{'backend':>10}{'top-1':>10}{'max dlogit':>12}{'ms/img':>10}{'fp32 ms':>10}")
            for label, by_backend in self.variants.items():
                for backend, f in by_backend.items():
                    lines.append(
                        f"{label:<12}{backend:>10}{f['top1_agreement']:>10.2%}{f['max_logit_diff']:>12.4g}"
                        f"{f['ms_per_image']:>10.2f}{f['fp32_ms_per_image']:>10.2f}"
                    )
        return "\n".join(lines)


# --- torchvision (the reference) ---------------------------------------------------------
def _torchvision_stages(path: str, spec: Any, jpeg_draft: bool = False) -> dict[str, Any]:
    import numpy as np
    import torchvision.transforms as T
    from PIL import Image, JpegImagePlugin

    from .images import jpeg_draft_request

    mode = getattr(T.InterpolationMode, spec.interpolation.upper())
    with Image.open(path) as img:
        drafted = jpeg_draft and isinstance(img, JpegImagePlugin.JpegImageFile)
        request = jpeg_draft_request(img.width, img.height, spec) if drafted else None
        if request is not None:
            img.draft("RGB", request)
        rgb = img.convert("RGB")
    resized = T.Resize(spec.resize_size, interpolation=mode, max_size=spec.max_size)(rgb)
    cropped = T.CenterCrop(spec.crop_size)(resized)
    tensor = T.Normalize(spec.mean, spec.std)(T.ToTensor()(cropped))
    return {
        "decoded": np.asarray(rgb),
        "resized": np.asarray(resized),
        "cropped": np.asarray(cropped),
        "tensor": tensor.numpy()[None],
        "drafted": drafted,
    }


def _padded(pixels: Any, crop: int) -> Any:
    """``pixels`` (HxWx3) center-padded with zeros to crop x crop, as CenterCrop pads."""
    import numpy as np

    h, w = pixels.shape[:2]
    canvas = np.zeros((crop, crop, 3), dtype=np.uint8)
    top, left = (crop - h) // 2, (crop - w) // 2
    canvas[top : top + h, left : left + w] = pixels
    return canvas


# --- the backends, stage by stage ----------------------------------------------------------
#: A 165-byte ONNX model, ``ReduceMean(input (N, 3, H, W), axes=[2, 3]) -> (N, 3)`` with dynamic
#: N, H and W (built with ``onnx.helper``, opset 17): the stage readers run each backend's real
#: decode + preprocess pipeline through it, at any derived crop size, whatever the model's
#: own input shape.
_PROBE_MODEL = base64.b64decode(
    "CAgSFWJ1dHRlcmZseV9vbm54LnBhcml0eTqDAQo7CgVpbnB1dBIGbG9naXRzIgpSZWR1Y2VNZWFuKg0KBGF4ZXNAAkADoAEHKg8KCGtl"
    "ZXBkaW1zGACgAQISBXByb2JlWiIKBWlucHV0EhkKFwgBEhMKAxIBbgoCCAMKAxIBaAoDEgF3YhkKBmxvZ2l0cxIPCg0IARIJCgMSAW4K"
    "AggDQgQKABAR"
)


class _StageReader:
    """Classifiers of one backend on the probe model with derived identity-normalizing
    contracts, cached by spec."""

    def __init__(self, backend: str, threads: int | None, jpeg_draft: bool = False) -> None:
        self.model, self.backend, self.threads, self.jpeg_draft = _PROBE_MODEL, backend, threads, jpeg_draft
        self._cache: dict[Any, Any] = {}

    def classifier(self, spec: Any) -> Any:
        from . import Classifier

        key = json.dumps(spec.to_dict(), sort_keys=True)
        if key not in self._cache:
            self._cache[key] = Classifier(
                self.model,
                backend=self.backend,
                threads=self.threads,
                labels=["r", "g", "b"],
                preprocess=spec,
                max_image_pixels=None,
                jpeg_draft=self.jpeg_draft,
            )
        return self._cache[key]

    def pixels(self, path: str, spec: Any) -> Any:
        """The 8-bit crop x crop x 3 pixels that ``spec`` (mean 0, std 1) gives for ``path``."""
        import numpy as np

        tensor = self.classifier(spec).preprocess(path)[0]
        return np.rint(tensor.transpose(1, 2, 0).astype(np.float64) * 255.0).astype(np.uint8)


def _identity(spec: Any, resize: int, crop: int, max_size: int | None) -> Any:
    from .contract import PreprocessSpec

    return PreprocessSpec(
        resize,
        crop,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        interpolation=spec.interpolation,
        max_size=max_size,
        resample_order=spec.resample_order,
    )


def _max_abs(a: Any, b: Any) -> float:
    import numpy as np

    if a.shape != b.shape:
        return float("inf")
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0


def _reference_logits(model: str, tensor: Any, torch_module: Any, threads: int | None) -> Any:
    import numpy as np

    if torch_module is not None:
        import torch

        with torch.inference_mode():
            return torch_module(torch.from_numpy(np.ascontiguousarray(tensor))).float().numpy()
    session = _ort_session(model, threads)
    return session.run(None, {session.get_inputs()[0].name: tensor})[0]


_SESSIONS: dict[tuple[str, int | None], Any] = {}


def _ort_session(model: str, threads: int | None) -> Any:
    import onnxruntime as ort

    key = (model, threads)
    if key not in _SESSIONS:
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        _SESSIONS[key] = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    return _SESSIONS[key]


def run_parity(
    model: str | os.PathLike[str],
    images: Sequence[str | os.PathLike[str]],
    *,
    backends: Sequence[str] = BACKENDS,
    torch_module: Any = None,
    threads: int | None = 1,
    jpeg_draft: bool = False,
    variants: Sequence[str | os.PathLike[str]] = (),
    providers: Any = None,
    device: str | None = None,
) -> ParityResult:
    """Compare each backend with torchvision at every stage on ``images`` (file paths or
    folders, expanded as ``predict`` does). ``torch_module``: the torch model the ONNX file was
    exported from, for reference logits from torch itself; else the reference logits are ONNX
    Runtime's on torchvision's tensor. A backend that cannot be loaded (e.g. the rust backend
    not built) is reported in ``skipped``. ``jpeg_draft``: compare the backends' JPEG draft
    mode with torchvision on Pillow's drafted JPEGs (module docstring).  ``variants``: files of
    the same model in reduced precision (``model.int8.onnx``), compared with ``model`` on each
    backend (``ParityResult.variants``)."""
    # Long on purpose: each image is decoded once and every stage is compared for every backend in
    # that one pass, so the per-stage loops share their state.
    import numpy as np

    from . import Classifier
    from .errors import BackendUnavailableError
    from .images import expand_images

    model = str(model)
    paths = [str(source) for source, _ in expand_images(list(map(str, images)))]
    if not paths:
        from .errors import InvalidArgumentError

        raise InvalidArgumentError("parity: no images given")
    from .images import decode_rgb

    for path in paths:  # an undecodable input is an ImageError naming it, before any timing
        decode_rgb((path, Path(path)), None)
    readers: dict[str, _StageReader] = {}
    full: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for backend in backends:
        try:
            full[backend] = Classifier(
                model,
                backend=backend,
                threads=threads,
                max_image_pixels=None,
                jpeg_draft=jpeg_draft,
                providers=providers,
                device=device,
            )
        except BackendUnavailableError as exc:
            if "execution provider" in str(exc):
                raise  # the providers asked for are missing: nothing to compare them on
            skipped[backend] = f"{type(exc).__name__}: {exc}"
            continue
        except Exception as exc:  # reported, not fatal: parity of the other backends still holds
            skipped[backend] = f"{type(exc).__name__}: {exc}"
            continue
        readers[backend] = _StageReader(backend, threads, jpeg_draft)
    spec = next(iter(full.values())).contract.preprocess if full else None
    if spec is None:
        raise BackendUnavailableError("parity: no backend could load the model: " + "; ".join(skipped.values()))
    compared = list(full)
    max_diff: dict[str, dict[str, float | None]] = {stage: {b: None for b in compared} for stage in STAGES}
    agree = {b: 0 for b in compared}
    per_image = []
    from .preprocess import resized_size

    for path in paths:
        ref = _torchvision_stages(path, spec, jpeg_draft)
        ref_logits = _reference_logits(model, ref["tensor"], torch_module, threads)
        h, w = ref["decoded"].shape[:2]
        new_w, new_h = resized_size(w, h, spec)
        stage_specs = {
            "decoded": (_identity(spec, min(w, h), max(w, h), None), max(w, h)),
            "resized": (_identity(spec, spec.resize_size, max(new_w, new_h), spec.max_size), max(new_w, new_h)),
            "cropped": (_identity(spec, spec.resize_size, spec.crop_size, spec.max_size), None),
        }
        row: dict[str, Any] = {"image": path, "size": [w, h]}
        for backend in compared:
            diffs: dict[str, float | None] = {}
            for stage, (stage_spec, canvas) in stage_specs.items():
                # A drafted JPEG's identity-resize contract would ask Pillow for another scale.
                if stage_spec.crop_size > _MAX_CROP or (stage == "decoded" and ref["drafted"]):
                    diffs[stage] = None
                    continue
                got = readers[backend].pixels(path, stage_spec)
                want = _padded(ref[stage], canvas) if canvas is not None else ref[stage]
                diffs[stage] = _max_abs(got, want)
            tensor = full[backend].preprocess(path)
            diffs["tensor"] = _max_abs(tensor, ref["tensor"])
            logits = full[backend].logits(path)
            diffs["logits"] = _max_abs(logits, ref_logits)
            same = int(np.argmax(logits[0]) == np.argmax(ref_logits[0]))
            agree[backend] += same
            for stage, value in diffs.items():
                if value is not None:
                    prev = max_diff[stage][backend]
                    max_diff[stage][backend] = value if prev is None else max(prev, value)
            row[backend] = {**diffs, "top1_agrees": bool(same)}
        per_image.append(row)
    reference = "torchvision + " + ("torch" if torch_module is not None else "onnxruntime")
    compared_variants: dict[str, dict[str, dict[str, float]]] = {}
    for variant in variants:
        label = Path(variant).stem.rpartition(".")[2]
        for backend in compared:
            other = Classifier(
                variant,
                backend=backend,
                threads=threads,
                max_image_pixels=None,
                jpeg_draft=jpeg_draft,
                providers=providers,
                device=device,
            )
            other.logits(paths[:1])  # warm-up: the first run sets up ONNX Runtime's arena
            timed = {}
            for name, clf in (("fp32", full[backend]), ("variant", other)):
                start = time.perf_counter()
                timed[name] = (clf.logits(paths), (time.perf_counter() - start) * 1e3 / len(paths))
            (base, base_ms), (got, got_ms) = timed["fp32"], timed["variant"]
            compared_variants.setdefault(label, {})[backend] = {
                "top1_agreement": float(np.mean(base.argmax(1) == got.argmax(1))),
                "max_logit_diff": _max_abs(got, base),
                "ms_per_image": got_ms,
                "fp32_ms_per_image": base_ms,
            }
    return ParityResult(
        model=model,
        images=paths,
        backends=compared,
        reference=reference,
        max_diff=max_diff,
        top1_agreement={b: agree[b] / len(paths) for b in compared},
        per_image=per_image,
        skipped=skipped,
        jpeg_draft=jpeg_draft,
        variants=compared_variants,
        providers={b: list(full[b].providers) for b in compared},
    )


# --- command line ----------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="the .onnx model (with its contract)")
    parser.add_argument("images", nargs="+", help="image files or folders")
    parser.add_argument(
        "--backends", default=",".join(BACKENDS), help="comma-separated backends to compare (default: python,rust)"
    )
    parser.add_argument("--threads", type=int, default=1, help="threads per backend (default 1)")
    parser.add_argument(
        "--jpeg-draft",
        action="store_true",
        help="backends in JPEG draft mode, against torchvision on Pillow's drafted JPEGs",
    )
    parser.add_argument(
        "--json", dest="json_path", metavar="FILE", help="also write the result (per image too) as JSON"
    )
    parser.add_argument(
        "--variant",
        dest="variants",
        action="append",
        default=[],
        metavar="FILE",
        help="a variant of the model (e.g. model.int8.onnx) to compare with it on each backend (repeatable)",
    )
    add_provider_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Print the parity table; exit 0 when every compared stage is exact (0.0 up to the
    tensor) and top-1 agrees everywhere, 1 otherwise."""
    result = run_parity(
        args.model,
        args.images,
        backends=[b for b in args.backends.split(",") if b],
        threads=args.threads,
        jpeg_draft=args.jpeg_draft,
        variants=args.variants,
        **provider_arguments(args),
    )
    print(result.format_table())
    if args.json_path:
        from .atomic import atomic_write
        from .results import dumps

        with atomic_write(args.json_path, encoding="utf-8") as handle:
            handle.write(dumps(result.to_dict(), indent=2) + "\n")
    exact = all(value == 0.0 for stage in STAGES[:-1] for value in result.max_diff[stage].values() if value is not None)
    agrees = all(value == 1.0 for value in result.top1_agreement.values())
    return 0 if exact and agrees else 1
