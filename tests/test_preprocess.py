"""Preprocessing parity: both backends (and both resamplers of the python backend) against
torchvision + Pillow, bit for bit (max abs diff exactly 0.0)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from butterfly_onnx import preprocess as pre
from butterfly_onnx.contract import RESAMPLE_ORDERS, PreprocessSpec, current_resample_order
from corpus import BIG, natural_rgb

torch = pytest.importorskip("torch")
T = pytest.importorskip("torchvision.transforms")
presets = pytest.importorskip("torchvision.transforms._presets")
tvF = pytest.importorskip("torchvision.transforms.functional")

INSTALLED = current_resample_order()
OTHER_ORDERS = [order for order in RESAMPLE_ORDERS if order != INSTALLED]
PIL_FILTER = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}

SPECS = {
    "256-224-bilinear": PreprocessSpec(256, 224),
    "232-224-bicubic": PreprocessSpec(232, 224, interpolation="bicubic"),
    "160-128-bilinear": PreprocessSpec(160, 128),
    "224-224-bilinear": PreprocessSpec(224, 224),
    "256-224-bilinear-max300": PreprocessSpec(256, 224, max_size=300),
    **{
        f"160-128-bicubic-{order}": PreprocessSpec(160, 128, interpolation="bicubic", resample_order=order)
        for order in OTHER_ORDERS
    },
    **{f"256-224-bilinear-{order}": PreprocessSpec(256, 224, resample_order=order) for order in OTHER_ORDERS},
}
#: The preset (``weights.transforms()``) path differs from Compose only in ToTensor's
#: spelling, so it is checked on a representative part of the corpus.
PRESET_NAMES = [
    "jpeg_420",
    "jpeg_444",
    "jpeg_cmyk",
    "png_rgba",
    "png_palette",
    "png_rgb16",
    "png_grey16",
    "size_1x1",
    "size_3x500",
    "size_100x150_small",
    "size_256x256_at_resize",
    "jpeg_portrait_600x1300",
    "sklearn_china.jpg",
    "skimage_coffee.png",
]
#: The 6000x4000 photo costs a second per spec: only these specs take it.
BIG_SPECS = {"256-224-bilinear", f"256-224-bilinear-{OTHER_ORDERS[0]}"}


# --- references --------------------------------------------------------------------
def _interpolation(spec: PreprocessSpec):
    return getattr(T.InterpolationMode, spec.interpolation.upper())


def torchvision_compose(spec: PreprocessSpec):
    return T.Compose(
        [
            T.Resize(spec.resize_size, interpolation=_interpolation(spec), max_size=spec.max_size),
            T.CenterCrop(spec.crop_size),
            T.ToTensor(),
            T.Normalize(spec.mean, spec.std),
        ]
    )


def torchvision_preset(spec: PreprocessSpec):
    """What ``weights.transforms()`` returns for classification weights."""
    return presets.ImageClassification(
        crop_size=spec.crop_size,
        resize_size=spec.resize_size,
        mean=spec.mean,
        std=spec.std,
        interpolation=_interpolation(spec),
    )


def vertical_first_rule(order: str, w: int, h: int, new_w: int, new_h: int) -> bool:
    """The pass-order rules as documented (contract.RESAMPLE_ORDERS), written independently."""
    return {
        "pillow_12_1": False,
        "pillow_12_2": h > 100 * w and new_h < h,
        "pillow_13": (h - new_h) > 0 and (h - new_h) > 2 * (w - new_w),
    }[order]


def pillow_with_order(img: Image.Image, size: tuple[int, int], interpolation: str, order: str) -> Image.Image:
    """Pillow's two-pass resize in the pass order of ``order``, built from two one-axis
    ``Image.resize`` calls (a one-axis resize runs exactly one pass, 8-bit in between)."""
    w, h = img.size
    new_w, new_h = size
    f = PIL_FILTER[interpolation]
    if (new_w, new_h) == (w, h):
        return img
    if vertical_first_rule(order, w, h, new_w, new_h):
        img = img.resize((w, new_h), f) if new_h != h else img
        return img.resize((new_w, new_h), f) if new_w != w else img
    img = img.resize((new_w, h), f) if new_w != w else img
    return img.resize((new_w, new_h), f) if new_h != h else img


def reference(img: Image.Image, spec: PreprocessSpec, kind: str = "compose") -> np.ndarray:
    """torchvision's result on ``img``; for a pass order other than the installed Pillow's,
    torchvision's crop/ToTensor/Normalize after Pillow passes run in that order."""
    if spec.resample_order == INSTALLED:
        transform = torchvision_compose(spec) if kind == "compose" else torchvision_preset(spec)
        return transform(img).numpy()
    size = tvF._compute_resized_output_size(img.size[::-1], [spec.resize_size], spec.max_size)
    resized = pillow_with_order(img, (size[1], size[0]), spec.interpolation, spec.resample_order)
    tail = T.Compose([T.CenterCrop(spec.crop_size), T.ToTensor(), T.Normalize(spec.mean, spec.std)])
    return tail(resized).numpy()


def load(path) -> Image.Image:
    with Image.open(path) as img:  # torchvision's pil_loader
        return img.convert("RGB")


@pytest.fixture(scope="module")
def references(corpus):
    """``get(spec_name, kind)``: ``{image name: reference}`` over the corpus (kind "compose"),
    or over PRESET_NAMES (kind "preset"), computed once per module."""
    cache: dict[tuple[str, str], dict[str, np.ndarray]] = {}

    def get(spec_name: str, kind: str = "compose") -> dict[str, np.ndarray]:
        key = (spec_name, kind)
        if key not in cache:
            spec = SPECS[spec_name]
            if kind == "preset":
                names = [n for n in PRESET_NAMES if n in corpus]
            else:
                names = [n for n in corpus if n != BIG or spec_name in BIG_SPECS]
            cache[key] = {n: reference(load(corpus[n]), spec, kind) for n in names}
        return cache[key]

    return get


def assert_exact(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.dtype == np.float32 and got.shape == want.shape, (what, got.dtype, got.shape, want.shape)
    diff = float(np.abs(got - want).max()) if got.size else 0.0
    assert diff == 0.0, f"{what}: max abs diff {diff}, {int((got != want).sum())} values differ"


# --- geometry and normalisation ---------------------------------------------------------
@pytest.mark.parametrize("max_size", [None, 300, 1000])
def test_resized_size_matches_torchvision(max_size):
    spec = PreprocessSpec(256, 224, max_size=max_size)
    for w, h in [
        (1, 1),
        (3, 500),
        (500, 3),
        (257, 26000),
        (640, 480),
        (333, 517),
        (256, 256),
        (1920, 1280),
        (255, 257),
    ]:
        want_h, want_w = tvF._compute_resized_output_size((h, w), [256], max_size)
        assert pre.resized_size(w, h, spec) == (want_w, want_h), (w, h)


def test_crop_offsets_round_half_to_even():
    assert pre.crop_offsets(309, 224) == (0, 42)  # (309 - 224) / 2 = 42.5 -> 42
    assert pre.crop_offsets(311, 224) == (0, 44)  # 43.5 -> 44
    assert pre.crop_offsets(100, 224) == (62, 0)
    assert pre.crop_offsets(101, 224) == (61, 0)  # 123 // 2 before, 62 after


def test_normalization_table_matches_torch_for_every_level():
    levels = np.arange(256, dtype=np.uint8)
    img = Image.fromarray(np.stack([levels, levels[::-1], np.roll(levels, 77)], axis=-1)[None])
    for mean, std in [
        ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        ((0.1, 0.9, 0.3), (0.7, 0.11, 1.3)),
    ]:
        spec = PreprocessSpec(1, 1, mean=mean, std=std)
        want = T.Normalize(mean, std)(T.ToTensor()(img)).numpy()[:, 0, :]
        table = pre.normalization_table(spec)
        got = np.stack([table[c][np.asarray(img)[0, :, c]] for c in range(3)])
        assert_exact(got, want, f"table mean={mean} std={std}")


# --- the NumPy port of Pillow's resampling ------------------------------------------------
RESIZES = [
    ((640, 480), (298, 224)),  # downscale both
    ((480, 640), (256, 341)),
    ((600, 1300), (256, 554)),  # Pillow 13 goes vertical first here
    ((1301, 601), (554, 256)),
    ((100, 150), (256, 384)),  # upscale
    ((3, 500), (256, 42666)),
    ((257, 2600), (256, 2590)),  # tall, shrinks a little
    ((90, 9100), (60, 6066)),  # > 100:1, shrinks (Pillow 12.2's vertical-first case)
    ((1, 1), (224, 224)),
    ((7, 2), (1000, 256)),
    ((333, 517), (256, 397)),
    ((256, 300), (256, 224)),  # one axis only
    ((300, 256), (224, 256)),
]


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
@pytest.mark.parametrize("order", RESAMPLE_ORDERS)
def test_numpy_resize_equals_pillow(interpolation, order):
    for (w, h), size in RESIZES:
        rgb = natural_rgb(h, w, seed=w + h)
        want = np.asarray(pillow_with_order(Image.fromarray(rgb), size, interpolation, order))
        if order == INSTALLED:  # and the one-call resize itself
            assert np.array_equal(want, np.asarray(Image.fromarray(rgb).resize(size, PIL_FILTER[interpolation])))
        got = pre.resize_numpy(rgb, size, interpolation, order)
        assert got.shape == want.shape and np.array_equal(got, want), ((w, h), size, int((got != want).sum()))


def test_numpy_resize_window_equals_full_resize():
    rgb = natural_rgb(700, 900, seed=3)
    for order in RESAMPLE_ORDERS:
        full = pre.resize_numpy(rgb, (341, 256), "bicubic", order)
        part = pre.resize_numpy(rgb, (341, 256), "bicubic", order, window=(58, 16, 224, 224))
        assert np.array_equal(part, full[16:240, 58:282])


def test_pass_orders_really_differ():
    """The rules matter: on a portrait image Pillow 13's vertical-first result differs from
    the horizontal-first one (so the order tests above can fail)."""
    rgb = natural_rgb(1300, 600, seed=10)
    h_first = pre.resize_numpy(rgb, (256, 554), "bilinear", "pillow_12_1")
    v_first = pre.resize_numpy(rgb, (256, 554), "bilinear", "pillow_13")
    assert (h_first != v_first).sum() > 100


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
@pytest.mark.parametrize("order", RESAMPLE_ORDERS)
def test_pillow_resize_used_wherever_its_pass_order_gives_the_contracts_pixels(interpolation, order):
    """The python backend keeps Pillow's C resize per image wherever the installed Pillow picks
    the contract rule's first pass (decided by pass order, not by the rule's name): there its
    output is the contract's pixels (the port of that rule), and it is chosen for most images
    even under another Pillow's rule."""
    spec = PreprocessSpec(256, 224, interpolation=interpolation, resample_order=order)
    fast = 0
    for (w, h), size in RESIZES:
        rgb = natural_rgb(h, w, seed=w * 3 + h)
        exact = pre.pillow_resize_is_exact(spec, (w, h), size)
        assert exact == (
            w == size[0]
            or h == size[1]
            or pre.vertical_pass_first(INSTALLED, w, h, *size) == pre.vertical_pass_first(order, w, h, *size)
        )
        if exact:
            fast += 1
            got = np.asarray(Image.fromarray(rgb).resize(size, PIL_FILTER[interpolation]))
            assert np.array_equal(got, pre.resize_numpy(rgb, size, interpolation, order)), ((w, h), size)
    assert fast >= len(RESIZES) - 3, fast  # only the three tall shrinking images can disagree


def test_auto_method_uses_pillow_under_another_rule_when_exact(monkeypatch):
    """A contract recorded under another Pillow's rule still gets Pillow's C resize on a
    landscape photo (both rules go horizontal first) and the port on a tall portrait where
    the rules disagree; the tensors equal the port's either way."""
    calls = []
    real = pre.resize_pillow
    monkeypatch.setattr(pre, "resize_pillow", lambda *a: calls.append(a[1]) or real(*a))
    for order in OTHER_ORDERS:
        spec = PreprocessSpec(256, 224, resample_order=order)
        for w, h in [(640, 480), (600, 1300), (256, 300)]:
            calls.clear()
            img = Image.fromarray(natural_rgb(h, w, seed=w))
            auto = pre.preprocess_image(img, spec)
            assert_exact(auto, pre.preprocess_image(img, spec, method="numpy"), f"{w}x{h} {order}")
            size = pre.resized_size(w, h, spec)
            assert bool(calls) == pre.pillow_resize_is_exact(spec, (w, h), size), (w, h, order)
            if (w, h) == (640, 480):
                assert calls, "Pillow's resize is exact here and should be used"


# --- the whole pipeline, python module level ----------------------------------------------
@pytest.mark.parametrize("spec_name", ["256-224-bilinear", "232-224-bicubic", "160-128-bilinear"])
def test_pillow_fast_path_equals_numpy_path(corpus, spec_name):
    spec = SPECS[spec_name]
    for name, path in corpus.items():
        if name == BIG:
            continue
        img = load(path)
        fast = pre.preprocess_image(img, spec, method="pillow")
        port = pre.preprocess_image(img, spec, method="numpy")
        assert_exact(port, fast, name)


def test_preprocess_batch_writes_into_out():
    spec = SPECS["160-128-bilinear"]
    images = [Image.fromarray(natural_rgb(200 + i, 300 - i, seed=i)) for i in range(3)]
    out = np.full((3, 3, 128, 128), np.nan, dtype=np.float32)
    result = pre.preprocess_batch(images, spec, out=out)
    assert result is out
    for i, img in enumerate(images):
        assert_exact(out[i], reference(img, spec), f"image {i}")


# --- both backends through the Classifier -------------------------------------------------
@pytest.mark.parametrize("spec_name", list(SPECS))
def test_backend_preprocess_equals_torchvision(backend, classifiers, corpus, references, spec_name):
    spec = SPECS[spec_name]
    want = references(spec_name)
    names = list(want)
    clf = classifiers(backend, spec)
    batch = clf.preprocess([corpus[n] for n in names])
    assert batch.shape == (len(names), 3, spec.crop_size, spec.crop_size)
    assert batch.flags.c_contiguous
    failures = []
    for row, name in enumerate(names):
        diff = float(np.abs(batch[row] - want[name]).max())
        if diff != 0.0:
            failures.append(f"{name}: max abs diff {diff}")
    assert not failures, f"{len(failures)}/{len(names)} images differ:\n" + "\n".join(failures)


@pytest.mark.parametrize("spec_name", ["256-224-bilinear", "232-224-bicubic", "160-128-bilinear", "224-224-bilinear"])
def test_backend_preprocess_equals_weights_transforms_preset(backend, classifiers, corpus, references, spec_name):
    want = references(spec_name, "preset")
    batch = classifiers(backend, SPECS[spec_name]).preprocess([corpus[n] for n in want])
    for row, name in enumerate(want):
        assert_exact(batch[row], want[name], name)
