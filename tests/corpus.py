"""The test-time image corpus: files in every format, mode and awkward size the inference
backends must handle exactly like ``Image.open(p).convert("RGB")`` + torchvision.

``build_corpus(root)`` writes the synthetic files (natural-looking pixels: smooth colour
fields plus texture and edges, so resampling differences show) and returns ``{name: path}``;
``real_photos()`` lists real photographs that installed packages ship.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["natural_rgb", "build_corpus", "real_photos", "write_png16_rgb", "BIG"]

#: The one large photo-sized case (decoding it dominates, so specs use it sparingly).
BIG = "jpeg_6000x4000"


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


def _upscaled(height: int, width: int, factor: int, seed: int) -> Image.Image:
    """A large natural-looking image, cheaply: a smaller one upscaled (bicubic) plus noise."""
    small = Image.fromarray(natural_rgb(height // factor, width // factor, seed=seed))
    big = np.asarray(small.resize((width, height), Image.Resampling.BICUBIC))
    noise = np.random.default_rng(seed).integers(-10, 11, size=(height, width, 1), dtype=np.int16)
    return Image.fromarray(np.clip(big + noise, 0, 255).astype(np.uint8))


def write_png16_rgb(path: Path, array: np.ndarray) -> None:
    """A 16-bit RGB PNG (Pillow cannot write one): IHDR bit depth 16, colour type 2."""
    height, width, _ = array.shape
    raw = b"".join(b"\x00" + array[row].astype(">u2").tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def build_corpus(root: Path, *, big: bool = True) -> dict[str, Path]:
    """Write the synthetic corpus under ``root``; ``{name: path}``, names saying what each is."""
    root.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}

    def save(name: str, image: Image.Image, suffix: str, **options) -> None:
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
    grey16 = (natural_rgb(300, 400, seed=4)[:, :, 0].astype(np.uint16) * 3)  # many values > 255
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
    save("jpeg_tall_257x26000", _upscaled(26000, 257, factor=4, seed=12), ".jpg", quality=90)
    save("png_wide_3000x20", Image.fromarray(natural_rgb(20, 3000, seed=13)), ".png")
    if big:
        save(BIG, _upscaled(4000, 6000, factor=4, seed=14), ".jpg", quality=90, subsampling=2)
    return files


def real_photos(limit_tuxpaint: int = 4) -> dict[str, Path]:
    """Real photographs shipped by installed packages (skimage, sklearn, matplotlib, tuxpaint)."""
    found: dict[str, Path] = {}
    try:
        import skimage

        data_dir = Path(skimage.__file__).parent / "data"
        for name in ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "retina.jpg", "hubble_deep_field.jpg", "camera.png"):
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
    stamps = Path("/usr/share/tuxpaint/stamps")
    if stamps.is_dir():
        pngs = sorted(p for p in stamps.rglob("*.png") if "thumb" not in p.name)
        step = max(len(pngs) // max(limit_tuxpaint, 1), 1)
        for path in pngs[::step][:limit_tuxpaint]:
            found[f"tuxpaint_{path.parent.name}_{path.name}"] = path
    return found
