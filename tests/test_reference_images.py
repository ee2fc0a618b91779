"""The reference generator (tests/reference_images.py) checked against the installed Pillow: the
PNG writer's files decode to the written samples, and the pass-order rebuild of a resize equals
Pillow's own resize wherever the installed Pillow's rule picks the same order."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

import reference_images as ri
from butterfly_onnx.contract import current_resample_order


def test_raw_png_16bit_grey_decodes_to_the_written_samples():
    rng = np.random.default_rng(0)
    grey16 = rng.integers(0, 65536, size=(9, 13), dtype=np.uint16)
    data = ri.raw_png(13, 9, 16, 0, [row.astype(">u2").tobytes() for row in grey16])
    with Image.open(io.BytesIO(data)) as im:
        assert im.size == (13, 9) and im.mode.startswith("I")
        np.testing.assert_array_equal(np.asarray(im).astype(np.uint16), grey16)


def test_pillow_decode_reports_pillows_verdict():
    good = ri.encode(Image.fromarray(ri.natural_rgb(20, 30, seed=1)), "PNG")
    decoded = ri.pillow_decode(good)
    assert decoded["mode"] == "RGB" and decoded["rgb"].shape == (20, 30, 3)
    np.testing.assert_array_equal(decoded["rgb"], np.asarray(Image.open(io.BytesIO(good)).convert("RGB")))
    assert ri.pillow_decode(good[: len(good) // 2])["error"].startswith(("OSError", "SyntaxError"))


@pytest.mark.parametrize(
    "src, dst",
    [((640, 480), (333, 250)), ((10, 1500), (5, 700)), ((300, 900), (256, 768)), ((77, 55), (150, 41))],
)
@pytest.mark.parametrize("resample", [Image.Resampling.BILINEAR, Image.Resampling.BICUBIC])
def test_two_pass_rebuild_matches_pillow_for_its_own_order(src, dst, resample):
    image = Image.fromarray(ri.natural_rgb(src[1], src[0], seed=src[0]))
    order = current_resample_order()
    (W, H), (w, h) = src, dst
    if ri.vertical_first(order, src, dst):
        rebuilt = image.resize((W, h), resample).resize(dst, resample)
    else:
        rebuilt = image.resize((w, H), resample).resize(dst, resample)
    np.testing.assert_array_equal(np.asarray(rebuilt), np.asarray(image.resize(dst, resample)))
    np.testing.assert_array_equal(np.asarray(ri.pillow_resize(image, dst, resample, order)), np.asarray(rebuilt))
