"""Reference corpus for the Rust crate's Pillow/torchvision parity tests.

    python make_pillow_refs.py OUT_DIR

Writes encoded images (JPEG, PNG, GIF, BMP, TIFF, WebP, plus broken files) to OUT_DIR and,
computed by the installed Pillow and torchvision, what the Rust crate must reproduce bit for
bit, as raw little-endian files listed in OUT_DIR/manifest.json:
  * decode: ``Image.open(f).convert("RGB")`` pixels (or the fact that Pillow raises);
  * tensors: ``Resize(r, interpolation, max_size) + CenterCrop(c) + ToTensor() + Normalize``;
  * resizes: ``img.resize((w, h), filter)`` with the installed Pillow (the ``pillow_13`` rule
    when Pillow >= 13) and the older pass orders rebuilt from single-axis resizes.
Run by tests/common/mod.rs; needs Pillow, numpy, torch and torchvision.
"""

from __future__ import annotations

import io
import json
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import PIL
from PIL import Image

import torch
from torchvision import transforms
from torchvision.transforms import InterpolationMode

torch.set_num_threads(1)  # tiny tensors: threads only add contention

OUT = Path(sys.argv[1])
OUT.mkdir(parents=True, exist_ok=True)
RNG = np.random.default_rng(20261127)
PHOTO = Path("/usr/share/tuxpaint/stamps/plants/flowers/anemone_red.png")

manifest: dict = {"pillow": PIL.__version__, "images": [], "tensors": [], "resizes": []}


def photo(size: tuple[int, int]) -> Image.Image:
    """A real photo (a Debian tuxpaint stamp) on a noisy gradient, resized to `size`."""
    w, h = 600, 520
    yy, xx = np.mgrid[0:h, 0:w]
    bg = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 255 // (w + h)], axis=-1)
    bg = np.clip(bg + RNG.integers(-40, 40, size=bg.shape), 0, 255).astype(np.uint8)
    canvas = Image.fromarray(bg, "RGB")
    if PHOTO.exists():
        stamp = Image.open(PHOTO).convert("RGBA")
        canvas.paste(stamp, (0, 0), stamp)
    return canvas.resize(size, Image.Resampling.BICUBIC) if canvas.size != size else canvas


def noise(size: tuple[int, int], channels: int = 3) -> np.ndarray:
    w, h = size
    shape = (h, w, channels) if channels > 1 else (h, w)
    return RNG.integers(0, 256, size=shape, dtype=np.uint8)


def png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def raw_png(width: int, height: int, bit_depth: int, color_type: int, rows: list[bytes]) -> bytes:
    """A minimal PNG writer for sample layouts Pillow cannot save (16-bit RGB, 2-bit grey)."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    raw = b"".join(b"\x00" + r for r in rows)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(raw))
            + png_chunk(b"IEND", b""))


def add(name: str, data: bytes) -> None:
    """Store an encoded image and what Pillow decodes it to."""
    (OUT / name).write_bytes(data)
    entry: dict = {"file": name}
    try:
        with Image.open(io.BytesIO(data)) as im:
            entry["pillow_mode"] = im.mode
            rgb = im.convert("RGB")
    except Exception as e:  # noqa: BLE001 - any Pillow failure is an expected decode error
        entry["error"] = f"{type(e).__name__}: {e}"
    else:
        entry["width"], entry["height"] = rgb.size
        entry["rgb"] = name + ".rgb"
        (OUT / entry["rgb"]).write_bytes(np.asarray(rgb).tobytes())
    manifest["images"].append(entry)


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


# -- JPEG ------------------------------------------------------------------------------------
base = photo((600, 520))
for sub, label in ((0, "444"), (1, "422"), (2, "420")):
    add(f"photo_{label}.jpg", encode(base, "JPEG", quality=90, subsampling=sub))
add("photo_progressive.jpg", encode(base, "JPEG", quality=85, progressive=True))
add("photo_grey.jpg", encode(base.convert("L"), "JPEG", quality=90))
add("photo_cmyk.jpg", encode(base.convert("CMYK"), "JPEG", quality=90))
add("photo_restart.jpg", encode(base, "JPEG", quality=75, restart_marker_blocks=3))
for size in ((1, 1), (2, 3), (3, 500), (500, 3), (333, 251), (255, 257), (256, 256), (224, 224),
             (100, 90), (4000, 20), (20, 3000), (301, 903)):
    add(f"jpeg_{size[0]}x{size[1]}.jpg", encode(photo(size), "JPEG", quality=90))
add("noise_420.jpg", encode(Image.fromarray(noise((97, 61))), "JPEG", quality=95))
add("photo_1920x1280.jpg", encode(photo((1920, 1280)), "JPEG", quality=90))
add("photo_6000x4000.jpg", encode(photo((6000, 4000)), "JPEG", quality=80))

# Broken JPEGs: Pillow's own verdict is the expectation.
good = encode(base, "JPEG", quality=90)
prog = encode(base, "JPEG", quality=85, progressive=True)
add("trunc_header.jpg", good[:120])
add("trunc_half.jpg", good[: len(good) // 2])
add("trunc_no_eoi.jpg", good[:-2])
add("trunc_last_bytes.jpg", good[:-40])
add("trunc_progressive.jpg", prog[: len(prog) * 2 // 3])
add("not_really.jpg", b"This is a text file, not a JPEG.\n")
add("soi_only.jpg", b"\xff\xd8\xff")
corrupt = bytearray(good)
for i in range(len(corrupt) // 2, len(corrupt) // 2 + 64):
    corrupt[i] = 0xFF if i % 7 else 0xD0
add("corrupt_scan.jpg", bytes(corrupt))

# -- PNG -------------------------------------------------------------------------------------
small = photo((301, 203))
add("rgb.png", encode(small, "PNG"))
rgba = small.convert("RGBA")
rgba.putalpha(Image.fromarray(noise((301, 203), 1)))
add("rgba.png", encode(rgba, "PNG"))
add("la.png", encode(rgba.convert("LA"), "PNG"))
add("grey.png", encode(small.convert("L"), "PNG"))
add("palette.png", encode(small.quantize(200), "PNG"))
add("palette_4bit.png", encode(small.quantize(16), "PNG", bits=4))
pal_t = small.quantize(64)
pal_t.info["transparency"] = 3
add("palette_trns.png", encode(pal_t, "PNG"))
add("bilevel.png", encode(small.convert("1"), "PNG"))
w16, h16 = 67, 45
rgb16 = RNG.integers(0, 65536, size=(h16, w16, 3), dtype=np.uint16)
add("rgb16.png", raw_png(w16, h16, 16, 2, [r.astype(">u2").tobytes() for r in rgb16]))
rgba16 = RNG.integers(0, 65536, size=(h16, w16, 4), dtype=np.uint16)
add("rgba16.png", raw_png(w16, h16, 16, 6, [r.astype(">u2").tobytes() for r in rgba16]))
grey16 = RNG.integers(0, 600, size=(h16, w16), dtype=np.uint16)  # many values above 255
add("grey16.png", raw_png(w16, h16, 16, 0, [r.astype(">u2").tobytes() for r in grey16]))
la16 = RNG.integers(0, 65536, size=(h16, w16, 2), dtype=np.uint16)
add("la16.png", raw_png(w16, h16, 16, 4, [r.astype(">u2").tobytes() for r in la16]))
grey2 = RNG.integers(0, 4, size=(h16, 64), dtype=np.uint8)
add("grey2bit.png", raw_png(64, h16, 2, 0, [np.packbits(np.unpackbits(r[:, None], axis=1)[:, 6:].ravel()).tobytes() for r in grey2]))
png_good = encode(small, "PNG")
add("trunc.png", png_good[: len(png_good) // 2])

# -- GIF, BMP, TIFF, WebP ----------------------------------------------------------------------
add("palette.gif", encode(small.quantize(128), "GIF"))
gif_t = small.quantize(32)
add("transparent.gif", encode(gif_t, "GIF", transparency=5))
add("rgb.bmp", encode(small, "BMP"))
add("palette.bmp", encode(small.quantize(100), "BMP"))
add("grey.bmp", encode(small.convert("L"), "BMP"))
add("rgb.tif", encode(small, "TIFF"))
add("grey.tif", encode(small.convert("L"), "TIFF"))
add("grey16.tif", encode(Image.frombytes("I;16", (w16, h16), grey16.astype("<u2").tobytes()), "TIFF"))
add("rgba.tif", encode(rgba, "TIFF"))
add("cmyk.tif", encode(small.convert("CMYK"), "TIFF"))
add("rgba.bmp", encode(rgba, "BMP"))
add("rgba.webp", encode(rgba, "WEBP", lossless=True))
add("lossless.webp", encode(small, "WEBP", lossless=True))
add("lossy.webp", encode(small, "WEBP", quality=80))
add("empty.png", b"")

# -- torchvision tensors -------------------------------------------------------------------------
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
SPECS = [
    dict(resize_size=256, crop_size=224, interpolation="bilinear", max_size=None, mean=IMAGENET[0], std=IMAGENET[1]),
    dict(resize_size=232, crop_size=224, interpolation="bilinear", max_size=None, mean=IMAGENET[0], std=IMAGENET[1]),
    dict(resize_size=160, crop_size=128, interpolation="bicubic", max_size=None, mean=IMAGENET[0], std=IMAGENET[1]),
    dict(resize_size=224, crop_size=224, interpolation="bilinear", max_size=None, mean=(0.5,) * 3, std=(0.5,) * 3),
    dict(resize_size=256, crop_size=224, interpolation="bicubic", max_size=300, mean=IMAGENET[0], std=IMAGENET[1]),
]
FULL_SPEC_IMAGES = None  # every decodable image gets SPECS[0]; the small ones get all specs


def torchvision_tensor(img: Image.Image, spec: dict) -> np.ndarray:
    mode = InterpolationMode.BILINEAR if spec["interpolation"] == "bilinear" else InterpolationMode.BICUBIC
    t = transforms.Compose([
        transforms.Resize(spec["resize_size"], interpolation=mode, max_size=spec["max_size"]),
        transforms.CenterCrop(spec["crop_size"]),
        transforms.ToTensor(),
        transforms.Normalize(spec["mean"], spec["std"]),
    ])
    return t(img).numpy().astype("<f4")


for entry in manifest["images"]:
    if "error" in entry:
        continue
    img = Image.open(OUT / entry["file"]).convert("RGB")
    big = img.width * img.height > 3_000_000
    for i, spec in enumerate(SPECS):
        if big and i > 0:
            continue
        name = f"{entry['file']}.spec{i}.f32"
        (OUT / name).write_bytes(torchvision_tensor(img, spec).tobytes())
        manifest["tensors"].append({"image": entry["file"], "spec": spec, "file": name})

# -- resize pass orders ------------------------------------------------------------------------
FILTERS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


def vertical_first(order: str, W: int, H: int, w: int, h: int) -> bool:
    if order == "pillow_12_1":
        return False
    if order == "pillow_12_2":
        return H > 100 * W and h < H
    return (H - h) > 0 and (H - h) > 2 * (W - w)


def two_pass(img: Image.Image, size: tuple[int, int], flt, vfirst: bool) -> Image.Image:
    """Pillow's two passes, rebuilt from single-axis resizes (uint8 in between)."""
    (W, H), (w, h) = img.size, size
    if vfirst:
        return img.resize((W, h), flt).resize((w, h), flt)
    return img.resize((w, H), flt).resize((w, h), flt)


cases = [((10, 1500), (5, 700)), ((12, 1300), (9, 1000)), ((300, 900), (256, 768)), ((77, 55), (150, 41)),
         ((640, 480), (333, 250)), ((31, 400), (20, 39)), ((500, 375), (298, 224)), ((1, 9), (4, 3))]
cases += [((int(RNG.integers(1, 400)), int(RNG.integers(1, 400))),
           (int(RNG.integers(1, 300)), int(RNG.integers(1, 300)))) for _ in range(24)]
major = int(PIL.__version__.split(".")[0])
for k, ((W, H), (w, h)) in enumerate(cases):
    src_name = f"resize_src_{k}.rgb"
    src = noise((W, H)) if k % 2 else np.asarray(photo((W, H)))
    (OUT / src_name).write_bytes(src.tobytes())
    img = Image.fromarray(src, "RGB")
    for fname, flt in FILTERS.items():
        for order in ("pillow_12_1", "pillow_12_2", "pillow_13"):
            if order == "pillow_13" and major >= 13:
                out = img.resize((w, h), flt)  # the installed Pillow is the oracle
            else:
                out = two_pass(img, (w, h), flt, vertical_first(order, W, H, w, h))
            name = f"resize_{k}_{fname}_{order}.rgb"
            (OUT / name).write_bytes(np.asarray(out).tobytes())
            manifest["resizes"].append({"src": src_name, "in": [W, H], "out": [w, h], "filter": fname,
                                        "order": order, "file": name})

(OUT / "manifest.json").write_text(json.dumps(manifest, indent=1))
print(f"{len(manifest['images'])} images, {len(manifest['tensors'])} tensors, {len(manifest['resizes'])} resizes")
