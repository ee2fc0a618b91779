"""The one generator of test images and of their Pillow / torchvision references.

Used by pytest (``tests/corpus.py``, ``tests/conftest.py``'s ``corpus`` fixture) and by the Python
scripts of the Rust tests (``rust/butterfly-onnx/tests/make_pillow_refs.py``,
``rust/butterfly-onnx/tests/support/make_fixture.py``), which put ``tests/`` on ``sys.path``::

    sys.path.insert(0, str(Path(__file__).resolve().parents[N] / "tests"))
    import reference_images as ri

Nothing here holds an expected value: the references are computed by the installed Pillow and
torchvision when a test suite runs, so they follow the installed versions.

- pixels: :func:`natural_rgb` (smooth colour fields, hard edges, sensor-like noise: where
  resampling differences show), :func:`upscaled` (a large one, cheaply), :func:`noise`,
  :func:`stamp_photo` (a real photo, a Debian tuxpaint stamp, on a noisy gradient);
- files: :func:`encode` (Pillow, to bytes), :func:`raw_png` (PNG layouts Pillow cannot write:
  16-bit RGB/RGBA/LA, 2-bit grey), :func:`write_png16_rgb`, :func:`build_corpus` (pytest's corpus);
- real photos: :func:`real_photos` (shipped by installed packages), :func:`tuxpaint_photos`;
- references: :func:`pillow_decode` (``Image.open(f).convert("RGB")`` or Pillow's error),
  :func:`torchvision_tensor` (``Resize + CenterCrop + ToTensor + Normalize``),
  :func:`pillow_resize` (one resize under a given pass order, the older orders rebuilt from
  single-axis resizes).
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = [
    "BIG",
    "TUXPAINT",
    "build_corpus",
    "encode",
    "natural_rgb",
    "noise",
    "pillow_decode",
    "pillow_resize",
    "raw_png",
    "real_photos",
    "stamp_photo",
    "torchvision_tensor",
    "tuxpaint_photos",
    "upscaled",
    "vertical_first",
    "write_png16_rgb",
]

#: The one large photo-sized case of the pytest corpus (decoding it dominates, so specs use it sparingly).
BIG = "jpeg_6000x4000"
#: Debian's tuxpaint-stamps-default: real photographs (PNG, RGBA).
TUXPAINT = Path("/usr/share/tuxpaint/stamps")
#: The stamp :func:`stamp_photo` pastes on its background.
STAMP = TUXPAINT / "plants/flowers/anemone_red.png"


# --------------------------------------------------------------------------- pixels
def natural_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    """An HxWx3 uint8 image with smooth gradients, blobs, sharp edges and sensor-like noise."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    channels = []
    for c in range(3):
        fx, fy, phase = rng.uniform(1.0, 6.0), rng.uniform(1.0, 6.0), rng.uniform(0, 6.28)
        field = 0.5 + 0.35 * np.sin(fx * 6.28 * x + phase) * np.cos(fy * 6.28 * y + c)
        channels.append(np.broadcast_to(field, (height, width)))
    img = np.stack(channels, axis=-1) * 255.0
    # a few hard-edged rectangles (edges are where resampling rounding differs)
    for _ in range(6):
        y0, x0 = rng.integers(0, max(height, 1)), rng.integers(0, max(width, 1))
        y1, x1 = y0 + rng.integers(1, max(height // 3, 2)), x0 + rng.integers(1, max(width // 3, 2))
        img[y0:y1, x0:x1] = rng.uniform(0, 255, size=3)
    img += rng.normal(0.0, 12.0, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def upscaled(height: int, width: int, factor: int, seed: int) -> Image.Image:
    """A large natural-looking image, cheaply: a smaller one upscaled (bicubic) plus noise."""
    small = Image.fromarray(natural_rgb(height // factor, width // factor, seed=seed))
    big = np.asarray(small.resize((width, height), Image.Resampling.BICUBIC))
    grain = np.random.default_rng(seed).integers(-10, 11, size=(height, width, 1), dtype=np.int16)
    return Image.fromarray(np.clip(big + grain, 0, 255).astype(np.uint8))


def noise(size: tuple[int, int], channels: int = 3, *, rng: np.random.Generator) -> np.ndarray:
    """Uniform uint8 noise of ``size`` = (width, height): HxWxC, or HxW for one channel."""
    w, h = size
    shape = (h, w, channels) if channels > 1 else (h, w)
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def stamp_photo(size: tuple[int, int], *, rng: np.random.Generator) -> Image.Image:
    """A real photo (a tuxpaint stamp, when installed) on a noisy gradient, resized (bicubic) to
    ``size`` = (width, height)."""
    w, h = 600, 520
    yy, xx = np.mgrid[0:h, 0:w]
    bg = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 255 // (w + h)], axis=-1)
    bg = np.clip(bg + rng.integers(-40, 40, size=bg.shape), 0, 255).astype(np.uint8)
    canvas = Image.fromarray(bg, "RGB")
    if STAMP.exists():
        stamp = Image.open(STAMP).convert("RGBA")
        canvas.paste(stamp, (0, 0), stamp)
    return canvas.resize(size, Image.Resampling.BICUBIC) if canvas.size != size else canvas


# --------------------------------------------------------------------------- files
def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    """``image`` saved by Pillow as ``fmt`` (``"JPEG"``, ``"PNG"``, ...) with ``options``."""
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def raw_png(width: int, height: int, bit_depth: int, color_type: int, rows: Sequence[bytes]) -> bytes:
    """A minimal PNG (filter 0 rows) for sample layouts Pillow cannot save (16-bit RGB, 2-bit grey)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    raw = b"".join(b"\x00" + r for r in rows)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(raw))
        + _png_chunk(b"IEND", b"")
    )


def write_png16_rgb(path: Path, array: np.ndarray) -> None:
    """A 16-bit RGB PNG (Pillow cannot write one): IHDR bit depth 16, colour type 2."""
    height, width, _ = array.shape
    path.write_bytes(raw_png(width, height, 16, 2, [array[row].astype(">u2").tobytes() for row in range(height)]))


def build_corpus(root: Path, *, big: bool = True) -> dict[str, Path]:
    """Write pytest's synthetic corpus under ``root``: files in every format, mode and awkward
    size the inference backends must handle exactly like ``Image.open(p).convert("RGB")`` +
    torchvision; ``{name: path}``, the names saying what each is."""
    root.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}

    def save(name: str, image: Image.Image, suffix: str, **options: Any) -> None:
        path = root / f"{name}{suffix}"
        image.save(path, **options)
        files[name] = path

    base = Image.fromarray(natural_rgb(480, 640, seed=1))  # landscape 640x480
    # JPEG: chroma subsampling 4:4:4 / 4:2:2 / 4:2:0, progressive, greyscale, CMYK (Adobe, inverted)
    save("jpeg_444", base, ".jpg", quality=92, subsampling=0)
    save("jpeg_422", base, ".jpg", quality=90, subsampling=1)
    save("jpeg_420", base, ".jpg", quality=90, subsampling=2)
    save("jpeg_progressive", base, ".jpg", quality=85, progressive=True)
    save("jpeg_grey", base.convert("L"), ".jpg", quality=90)
    save("jpeg_cmyk", base.convert("CMYK"), ".jpg", quality=90)
    odd = Image.fromarray(natural_rgb(517, 333, seed=2))  # odd sizes, portrait, MCU padding
    save("jpeg_420_odd_333x517", odd, ".jpg", quality=88, subsampling=2)
    save("jpeg_422_odd_333x517", odd, ".jpg", quality=88, subsampling=1)
    # PNG: RGB, RGBA (alpha dropped), palette, greyscale, 16-bit grey (clipped), 16-bit RGB (>> 8)
    save("png_rgb", base, ".png")
    rgba = base.copy()
    rgba.putalpha(Image.fromarray(natural_rgb(480, 640, seed=3)[:, :, 0]))
    save("png_rgba", rgba, ".png")
    save("png_palette", base.quantize(colors=200), ".png")
    save("png_grey", base.convert("L"), ".png")
    grey16 = natural_rgb(300, 400, seed=4)[:, :, 0].astype(np.uint16) * 3  # many values > 255
    save("png_grey16", Image.fromarray(grey16), ".png")
    path = root / "png_rgb16.png"
    write_png16_rgb(path, natural_rgb(300, 400, seed=5).astype(np.uint16) * 257 + 100)
    files["png_rgb16"] = path
    # other containers the backends accept
    save("bmp_rgb", Image.fromarray(natural_rgb(250, 270, seed=6)), ".bmp")
    save("gif_palette", Image.fromarray(natural_rgb(260, 300, seed=7)).quantize(colors=64), ".gif")
    save("webp_lossless", Image.fromarray(natural_rgb(300, 260, seed=8)), ".webp", lossless=True)
    save("tiff_rgb", Image.fromarray(natural_rgb(270, 280, seed=9)), ".tiff")
    # sizes: tiny, smaller than every crop, at the resize size, extreme aspect ratios
    for name, (w, h) in {
        "size_1x1": (1, 1),
        "size_3x500": (3, 500),
        "size_500x3": (500, 3),
        "size_100x150_small": (100, 150),
        "size_256x256_at_resize": (256, 256),
        "size_224x224_at_crop": (224, 224),
        "size_256x341_at_resize": (256, 341),
        "size_2x7": (2, 7),
    }.items():
        save(name, Image.fromarray(natural_rgb(h, w, seed=w * 31 + h)), ".png")
    save("jpeg_portrait_600x1300", Image.fromarray(natural_rgb(1300, 600, seed=10)), ".jpg", quality=90)
    save("jpeg_landscape_1301x601", Image.fromarray(natural_rgb(601, 1301, seed=11)), ".jpg", quality=90)
    # tall > 100:1 that shrinks (Pillow 12.2's vertical-first case) and a very wide strip
    save("jpeg_tall_257x26000", upscaled(26000, 257, factor=4, seed=12), ".jpg", quality=90)
    save("png_wide_3000x20", Image.fromarray(natural_rgb(20, 3000, seed=13)), ".png")
    if big:
        save(BIG, upscaled(4000, 6000, factor=4, seed=14), ".jpg", quality=90, subsampling=2)
    return files


# --------------------------------------------------------------------------- real photos
def real_photos(limit_tuxpaint: int = 4) -> dict[str, Path]:
    """Real photographs shipped by installed packages (skimage, sklearn, matplotlib, tuxpaint)."""
    found: dict[str, Path] = {}
    try:
        import skimage

        data_dir = Path(skimage.__file__).parent / "data"
        for name in (
            "astronaut.png",
            "chelsea.png",
            "coffee.png",
            "rocket.jpg",
            "retina.jpg",
            "hubble_deep_field.jpg",
            "camera.png",
        ):
            if (data_dir / name).is_file():
                found[f"skimage_{name}"] = data_dir / name
    except ImportError:
        pass
    try:
        import sklearn.datasets

        images_dir = Path(sklearn.datasets.__file__).parent / "images"
        for name in ("china.jpg", "flower.jpg"):
            if (images_dir / name).is_file():
                found[f"sklearn_{name}"] = images_dir / name
    except ImportError:
        pass
    try:
        import matplotlib

        sample = Path(matplotlib.get_data_path()) / "sample_data"
        for name in ("grace_hopper.jpg", "logo2.png"):
            if (sample / name).is_file():
                found[f"matplotlib_{name}"] = sample / name
    except ImportError:
        pass
    if TUXPAINT.is_dir():
        pngs = sorted(p for p in TUXPAINT.rglob("*.png") if "thumb" not in p.name)
        step = max(len(pngs) // max(limit_tuxpaint, 1), 1)
        for path in pngs[::step][:limit_tuxpaint]:
            found[f"tuxpaint_{path.parent.name}_{path.name}"] = path
    return found


def tuxpaint_photos(picks: Sequence[str], count: int | None = None) -> list[Path]:
    """The tuxpaint stamps ``picks`` (paths relative to :data:`TUXPAINT`) that are installed,
    topped up with the first other stamps to ``count`` (default ``len(picks)``); [] without tuxpaint."""
    count = len(picks) if count is None else count
    found = [TUXPAINT / p for p in picks if (TUXPAINT / p).is_file()]
    if len(found) < count and TUXPAINT.is_dir():
        found += [p for p in sorted(TUXPAINT.rglob("*.png")) if p not in found][: count - len(found)]
    return found


# --------------------------------------------------------------------------- references
def pillow_decode(data: bytes) -> dict[str, Any]:
    """What Pillow makes of encoded ``data``: ``{"mode", "rgb"}`` (the file's mode and
    ``Image.open(f).convert("RGB")`` as an HxWx3 uint8 array) or ``{"error": "Type: message"}``
    (with ``"mode"`` too when the file opened and only the conversion failed)."""
    mode = None
    try:
        with Image.open(io.BytesIO(data)) as im:
            mode = im.mode
            rgb = im.convert("RGB")
    except Exception as exc:  # any Pillow failure is an expected decode error
        return {"error": f"{type(exc).__name__}: {exc}", **({"mode": mode} if mode is not None else {})}
    return {"mode": mode, "rgb": np.asarray(rgb)}


def _spec_fields(spec: Any) -> Mapping[str, Any]:
    return spec.to_dict() if hasattr(spec, "to_dict") else spec


def torchvision_tensor(image: Image.Image, spec: Any) -> np.ndarray:
    """torchvision's eval transforms on an RGB image: ``Resize(resize_size, interpolation,
    max_size) + CenterCrop(crop_size) + ToTensor() + Normalize(mean, std)``, CHW little-endian
    float32.  ``spec``: a PreprocessSpec or a dict with those fields (max_size optional)."""
    from torchvision import transforms
    from torchvision.transforms import InterpolationMode

    fields = _spec_fields(spec)
    t = transforms.Compose(
        [
            transforms.Resize(
                fields["resize_size"],
                interpolation=InterpolationMode(fields.get("interpolation", "bilinear")),
                max_size=fields.get("max_size"),
            ),
            transforms.CenterCrop(fields["crop_size"]),
            transforms.ToTensor(),
            transforms.Normalize(fields["mean"], fields["std"]),
        ]
    )
    return t(image).numpy().astype("<f4")


def vertical_first(order: str, src: tuple[int, int], dst: tuple[int, int]) -> bool:
    """Whether Pillow resamples the vertical axis first under pass order ``order``
    (docs/contract.md) for ``src`` -> ``dst`` sizes (width, height)."""
    (W, H), (w, h) = src, dst
    if order == "pillow_12_1":
        return False
    if order == "pillow_12_2":
        return H > 100 * W and h < H
    return (H - h) > 0 and (H - h) > 2 * (W - w)


def pillow_resize(image: Image.Image, size: tuple[int, int], resample: Image.Resampling, order: str) -> Image.Image:
    """``image.resize(size, resample)`` as a Pillow with pass order ``order`` computes it: the
    installed Pillow itself when ``order`` is its own rule (it is the oracle), else Pillow's two
    passes rebuilt from single-axis resizes (uint8 in between) in that order's sequence."""
    from butterfly_onnx.contract import current_resample_order

    if order == current_resample_order():
        return image.resize(size, resample)
    (W, H), (w, h) = image.size, size
    if vertical_first(order, (W, H), (w, h)):
        return image.resize((W, h), resample).resize((w, h), resample)
    return image.resize((w, H), resample).resize((w, h), resample)
