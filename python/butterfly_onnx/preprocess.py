"""torchvision's eval preprocessing, reproduced bit for bit without torch.

What ``Compose([Resize(r), CenterCrop(c), ToTensor(), Normalize(mean, std)])`` (and the
``ImageClassification`` preset behind ``weights.transforms()``) computes on a PIL RGB image,
written straight into a preallocated float32 batch.  The formulas are those of
``/shared/spec/preprocessing.md`` (``docs/inference.md`` explains them):

* Resize: torchvision's ``_compute_resized_output_size`` (shorter side, ``int()`` truncation,
  ``max_size``), then Pillow's ``Image.resize`` with no box and no ``reducing_gap``.
* Resampling: Pillow's ``libImaging/Resample.c``: a separable filter applied one axis at a
  time, coefficients in double precision turned into 22-bit fixed point, an 8-bit image
  between the two passes, and a pass order that depends on the Pillow version
  (:data:`~butterfly_onnx.contract.RESAMPLE_ORDERS`).
* CenterCrop: zero padding when the image is smaller than the crop, offsets rounded half to
  even (Python's ``round``, as torchvision's ``center_crop`` uses it).
* ToTensor + Normalize: ``(p / 255 - mean) / std`` in float32 with true divisions, exactly the
  operations torch performs; precomputed as a 256-entry table per channel.

Two resampling implementations give the same bytes:

* Pillow's own C resize, used whenever it gives the spec's pixels: when the installed Pillow's
  rule picks the same first pass as the spec's ``resample_order`` for the image's sizes (or
  only one axis changes), decided per image by :func:`pillow_resize_is_exact` (exact by
  definition, and fast, under any Pillow or Pillow-SIMD);
* a vectorised NumPy port of ``Resample.c`` (:func:`resize_numpy`), used for the other rules
  and as the reference the Rust port is checked against.

This module imports neither torch nor torchvision.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Literal

import numpy as np
from PIL import Image

from .contract import PreprocessSpec, current_resample_order
from .errors import ContractError, InvalidArgumentError

__all__ = [
    "resized_size",
    "crop_offsets",
    "vertical_pass_first",
    "resample_coefficients",
    "resize_numpy",
    "resize_pillow",
    "pillow_resize_is_exact",
    "normalization_table",
    "preprocess_image",
    "preprocess_batch",
]

#: Pillow's ``PRECISION_BITS`` for 8-bit images: 32 - 8 (pixel) - 2 (filter overshoot).
PRECISION_BITS = 22

Method = Literal["auto", "pillow", "numpy"]

_PIL_FILTERS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


# --- geometry (torchvision) -----------------------------------------------------------
def resized_size(width: int, height: int, spec: PreprocessSpec) -> tuple[int, int]:
    """``(new_width, new_height)`` of ``Resize(spec.resize_size, max_size=spec.max_size)``.

    torchvision's ``_compute_resized_output_size``: the shorter side becomes ``resize_size``,
    the longer ``int(resize_size * long / short)`` (float64 division, truncation); with
    ``max_size`` a longer side above it is clamped and the shorter one scaled down.
    """
    short, long = (width, height) if width <= height else (height, width)
    new_short = spec.resize_size
    new_long = int(new_short * long / short)
    if spec.max_size is not None and new_long > spec.max_size:
        new_short, new_long = int(spec.max_size * new_short / new_long), spec.max_size
    return (new_short, new_long) if width <= height else (new_long, new_short)


def crop_offsets(size: int, crop: int) -> tuple[int, int]:
    """For one axis of length ``size``: ``(pad_before, offset)`` of torchvision's CenterCrop.

    Smaller than the crop: zero padding ``(crop - size) // 2`` before (and the rest after),
    offset 0.  Otherwise no padding and ``offset = int(round((size - crop) / 2.0))``, where
    Python's ``round`` ties to even (85 / 2 -> 42).
    """
    if size < crop:
        return (crop - size) // 2, 0
    return 0, int(round((size - crop) / 2.0))


# --- Pillow's resampling, ported ------------------------------------------------------
def vertical_pass_first(order: str, in_w: int, in_h: int, out_w: int, out_h: int) -> bool:
    """Whether Pillow's rule ``order`` resamples the vertical axis before the horizontal one
    (only meaningful when both axes change size)."""
    if order == "pillow_12_1":  # Pillow <= 12.1: ImagingResampleInner, horizontal first
        return False
    if order == "pillow_12_2":  # Pillow 12.2-12.3: very tall images that shrink go vertical first
        return in_h > 100 * in_w and out_h < in_h
    if order == "pillow_13":  # Pillow 13: the axis that sheds more pixels goes first
        return (in_h - out_h) > 0 and (in_h - out_h) > 2 * (in_w - out_w)
    raise ContractError(f"unknown resample_order {order!r}")


def _bilinear(x: np.ndarray) -> np.ndarray:
    # Resample.c bilinear_filter (triangle), support 1.
    ax = np.abs(x)
    return np.where(ax < 1.0, 1.0 - ax, 0.0)


def _bicubic(x: np.ndarray) -> np.ndarray:
    # Resample.c bicubic_filter (Keys cubic, a = -0.5), support 2; same operation order as C.
    a = -0.5
    ax = np.abs(x)
    inner = ((a + 2.0) * ax - (a + 3.0)) * ax * ax + 1
    outer = (((ax - 5) * ax + 8) * ax - 4) * a
    return np.where(ax < 1.0, inner, np.where(ax < 2.0, outer, 0.0))


_FILTERS = {"bilinear": (_bilinear, 1.0), "bicubic": (_bicubic, 2.0)}


def resample_coefficients(
    in_size: int, out_size: int, interpolation: str, outputs: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's ``precompute_coeffs`` + ``normalize_coeffs_8bpc`` for one axis.

    Returns ``(first, weights)``: for each requested output index (default: all), the first
    input index it reads (int64, shape (M,)) and its fixed-point weights (int32, shape
    (M, ksize), zero past the window).  Every double operation happens in Pillow's order:
    ``center = (o + 0.5) * scale``; window ``[trunc(center - support + 0.5),
    trunc(center + support + 0.5))`` clipped to the input; ``w = filter((i - center + 0.5) *
    (1 / filterscale))``; normalised by dividing by their sequential sum; then
    ``trunc(w * 2**22 +- 0.5)``.
    """
    filter_fn, filter_support = _FILTERS[interpolation]
    if outputs is None:
        outputs = np.arange(out_size)
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = filter_support * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    inv_filterscale = 1.0 / filterscale  # Pillow multiplies by this ("ss"), never divides

    center = (outputs.astype(np.float64) + 0.5) * scale
    first = np.maximum(np.trunc(center - support + 0.5), 0).astype(np.int64)
    last = np.minimum(np.trunc(center + support + 0.5), in_size).astype(np.int64)
    count = last - first
    taps = np.arange(ksize)
    position = (taps[None, :] + first[:, None]) - center[:, None] + 0.5
    weights = np.where(taps[None, :] < count[:, None], filter_fn(position * inv_filterscale), 0.0)
    total = np.zeros(len(outputs))
    for k in range(ksize):  # sequential, as in C (NumPy's sum is pairwise)
        total = total + weights[:, k]
    safe_total = np.where(total != 0.0, total, 1.0)
    weights = np.where(total[:, None] != 0.0, weights / safe_total[:, None], weights)
    scaled = weights * (1 << PRECISION_BITS)
    fixed = np.where(weights < 0, np.trunc(-0.5 + scaled), np.trunc(0.5 + scaled))
    return first, fixed.astype(np.int32)


def _resample_axis(src: np.ndarray, axis: int, first: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """One Pillow pass (``ImagingResampleHorizontal_8bpc`` / ``Vertical``) along ``axis`` of an
    HxWx3 uint8 array: int32 accumulation from ``2**21`` (rounding), ``>> 22``, clip to 8 bits."""
    in_len = src.shape[axis]
    out_shape = list(src.shape)
    out_shape[axis] = len(first)
    acc = np.full(out_shape, 1 << (PRECISION_BITS - 1), dtype=np.int32)
    bshape = [1, 1, 1]
    bshape[axis] = len(first)
    for k in range(weights.shape[1]):
        column = weights[:, k]
        if not column.any():
            continue
        index = np.minimum(first + k, in_len - 1)  # weight 0 where clipped
        acc += np.take(src, index, axis=axis) * column.reshape(bshape)
    np.right_shift(acc, PRECISION_BITS, out=acc)  # arithmetic shift = Pillow's clip8 lookup
    return np.clip(acc, 0, 255).astype(np.uint8)


def resize_numpy(
    rgb: np.ndarray,
    size: tuple[int, int],
    interpolation: str,
    resample_order: str,
    *,
    window: tuple[int, int, int, int] | None = None,
) -> np.ndarray:
    """Pillow's ``Image.resize(size, filter)`` of an HxWx3 uint8 array, as the Pillow version of
    ``resample_order`` computes it.

    ``window = (left, top, width, height)`` asks for only that part of the output (the part a
    center crop keeps); the values equal the same pixels of the full resize, because every
    output pixel depends only on its own index.
    """
    in_h, in_w = rgb.shape[:2]
    out_w, out_h = size
    left, top, win_w, win_h = window if window is not None else (0, 0, out_w, out_h)
    need_h, need_v = out_w != in_w, out_h != in_h
    if not need_h and not need_v:  # Image.resize returns a copy
        return rgb[top : top + win_h, left : left + win_w]

    cols = np.arange(left, left + win_w)
    rows = np.arange(top, top + win_h)
    if not need_v:
        h_first, h_weights = resample_coefficients(in_w, out_w, interpolation, cols)
        return _resample_axis(rgb[top : top + win_h], 1, h_first, h_weights)
    v_first, v_weights = resample_coefficients(in_h, out_h, interpolation, rows)
    if not need_h:
        return _resample_axis(rgb[:, left : left + win_w], 0, v_first, v_weights)
    h_first, h_weights = resample_coefficients(in_w, out_w, interpolation, cols)

    if vertical_pass_first(resample_order, in_w, in_h, out_w, out_h):
        # The vertical pass only needs the input columns the horizontal windows read.
        lo = int(h_first.min())
        hi = min(int(h_first.max()) + h_weights.shape[1], in_w)
        middle = _resample_axis(rgb[:, lo:hi], 0, v_first, v_weights)
        return _resample_axis(middle, 1, h_first - lo, h_weights)
    # Horizontal first (Pillow shifts the vertical bounds by the first used row the same way).
    lo = int(v_first.min())
    hi = min(int(v_first.max()) + v_weights.shape[1], in_h)
    middle = _resample_axis(rgb[lo:hi], 1, h_first, h_weights)
    return _resample_axis(middle, 0, v_first - lo, v_weights)


def resize_pillow(img: Image.Image, size: tuple[int, int], interpolation: str) -> Image.Image:
    """torchvision's ``_functional_pil.resize``: ``img.resize(size, filter)``, no box, no
    ``reducing_gap``; the image itself when the size does not change."""
    if img.size == tuple(size):
        return img
    return img.resize(size, _PIL_FILTERS[interpolation])


# --- ToTensor + Normalize -------------------------------------------------------------
@lru_cache(maxsize=64)
def _table(mean: tuple[float, float, float], std: tuple[float, float, float]) -> np.ndarray:
    levels = np.arange(256, dtype=np.float32)
    mean32 = np.asarray(mean, dtype=np.float32)
    std32 = np.asarray(std, dtype=np.float32)
    # ToTensor: float32 p / 255; Normalize: (x - mean) / std, true divisions (as torch).
    table = (levels[None, :] / np.float32(255.0) - mean32[:, None]) / std32[:, None]
    table.setflags(write=False)
    return table


def normalization_table(spec: PreprocessSpec) -> np.ndarray:
    """float32 (3, 256): the normalised value of each 8-bit level per channel."""
    return _table(tuple(spec.mean), tuple(spec.std))


# --- the whole pipeline ---------------------------------------------------------------
def pillow_resize_is_exact(
    spec: PreprocessSpec, in_size: tuple[int, int], out_size: tuple[int, int], installed: str | None = None
) -> bool:
    """Whether the installed Pillow's own ``Image.resize`` gives the pixels of
    ``spec.resample_order`` for this resize: the rules differ only in which pass runs first, so
    Pillow is exact whenever at most one axis changes or both rules pick the same first pass
    for these sizes (most images: the rules only disagree on tall images that shrink a lot).
    ``installed`` defaults to the installed Pillow's rule (Pillow-SIMD and older Pillow report
    their base version, hence their rule)."""
    (in_w, in_h), (out_w, out_h) = in_size, out_size
    if in_w == out_w or in_h == out_h:
        return True
    rule = installed if installed is not None else current_resample_order()
    if rule == spec.resample_order:
        return True
    return vertical_pass_first(rule, in_w, in_h, out_w, out_h) == vertical_pass_first(
        spec.resample_order, in_w, in_h, out_w, out_h
    )


def _select_method(spec: PreprocessSpec, method: Method, in_size: tuple[int, int], out_size: tuple[int, int]) -> str:
    if method == "auto":
        if not pillow_resize_is_exact(spec, in_size, out_size):
            return "numpy"
        # A large upscale of which the crop keeps a sliver (e.g. 3x500 -> 256x42666): Pillow
        # would compute every output pixel, the port computes only the crop's.
        in_pixels, out_pixels = in_size[0] * in_size[1], out_size[0] * out_size[1]
        if out_pixels > 16 * spec.crop_size**2 and in_pixels < out_pixels // 4:
            return "numpy"
        return "pillow"
    if method not in ("pillow", "numpy"):
        raise InvalidArgumentError(f"method must be 'auto', 'pillow' or 'numpy', got {method!r}")
    return method


def preprocess_image(
    image: Image.Image | np.ndarray,
    spec: PreprocessSpec,
    out: np.ndarray | None = None,
    *,
    method: Method = "auto",
) -> np.ndarray:
    """Resize, center-crop and normalise one RGB image into ``out`` (float32 (3, crop, crop)).

    ``image`` is a PIL image in mode RGB (decoded with ``Image.open(f).convert("RGB")``) or an
    HxWx3 uint8 array.  ``method`` picks the resampler: ``"pillow"`` (Pillow's C code, exact
    only where :func:`pillow_resize_is_exact`), ``"numpy"`` (the port, exact for every rule)
    or ``"auto"`` (Pillow wherever it is exact for this image, except for large upscales that
    the crop mostly discards).
    """
    crop = spec.crop_size
    if out is None:
        out = np.empty((3, crop, crop), dtype=np.float32)
    elif out.shape != (3, crop, crop) or out.dtype != np.float32:
        raise InvalidArgumentError(f"out must be float32 (3, {crop}, {crop}), got {out.dtype} {out.shape}")
    if isinstance(image, Image.Image):
        if image.mode != "RGB":
            raise InvalidArgumentError(f"expected an RGB image, got mode {image.mode!r}")
        width, height = image.size
    else:
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise InvalidArgumentError(f"expected an HxWx3 uint8 array, got {image.dtype} {image.shape}")
        height, width = image.shape[:2]
    new_w, new_h = resized_size(width, height, spec)
    pad_x, left = crop_offsets(new_w, crop)
    pad_y, top = crop_offsets(new_h, crop)
    win_w, win_h = min(crop, new_w), min(crop, new_h)

    if _select_method(spec, method, (width, height), (new_w, new_h)) == "pillow":
        pil = image if isinstance(image, Image.Image) else Image.fromarray(image)
        resized = resize_pillow(pil, (new_w, new_h), spec.interpolation)
        region = np.asarray(resized)[top : top + win_h, left : left + win_w]
    else:
        rgb = np.asarray(image) if isinstance(image, Image.Image) else image
        region = resize_numpy(
            rgb, (new_w, new_h), spec.interpolation, spec.resample_order, window=(left, top, win_w, win_h)
        )

    table = normalization_table(spec)
    if win_w != crop or win_h != crop:  # CenterCrop pads with black (level 0) first
        canvas = np.zeros((crop, crop, 3), dtype=np.uint8)
        canvas[pad_y : pad_y + win_h, pad_x : pad_x + win_w] = region
        region = canvas
    for channel in range(3):
        np.take(table[channel], region[:, :, channel], out=out[channel])
    return out


def preprocess_batch(
    images: list[Image.Image | np.ndarray],
    spec: PreprocessSpec,
    out: np.ndarray | None = None,
    *,
    method: Method = "auto",
) -> np.ndarray:
    """:func:`preprocess_image` for each image, into one float32 (N, 3, crop, crop) batch."""
    crop = spec.crop_size
    if out is None:
        out = np.empty((len(images), 3, crop, crop), dtype=np.float32)
    for row, image in enumerate(images):
        preprocess_image(image, spec, out[row], method=method)
    return out
