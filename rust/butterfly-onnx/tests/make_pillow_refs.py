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

    python make_pillow_refs.py --regressions OUT_DIR

Only Pillow's verdict on each file of tests/fixtures/regressions/ (the fuzzer's regression
corpus, read from the repository each run): OUT_DIR/regressions.json lists, per file, the
decoded RGB pixels (a raw file in OUT_DIR) or the error class the backends must raise.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import PIL
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))
import reference_images as ri  # noqa: E402  (the one generator of test images and their references)

torch.set_num_threads(1)  # tiny tensors: threads only add contention


def regression_refs(out: Path) -> None:
    """Pillow's verdict on every file of the regression corpus (read where it lies)."""
    folder = Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "regressions"
    entries = []
    for item in json.loads((folder / "index.json").read_text()):
        entry = {
            "file": str(folder / item["file"]),
            "name": item["file"],
            "rust_may_refuse": bool(item.get("rust_may_refuse")),
            "known_mismatch": bool(item.get("known_mismatch")),
        }
        try:
            with Image.open(folder / item["file"]) as im:
                rgb = im.convert("RGB")
        except Image.DecompressionBombError as e:
            entry.update(error=f"{type(e).__name__}: {e}", error_class="ImageTooLargeError")
        except Exception as e:  # noqa: BLE001 - any Pillow failure is an expected decode error
            entry.update(error=f"{type(e).__name__}: {e}", error_class="ImageDecodeError")
        else:
            entry["width"], entry["height"] = rgb.size
            entry["rgb"] = str(out / (item["file"] + ".rgb"))
            Path(entry["rgb"]).write_bytes(np.asarray(rgb).tobytes())
        entries.append(entry)
    (out / "regressions.json").write_text(json.dumps(entries, indent=1))


if sys.argv[1] == "--regressions":
    Path(sys.argv[2]).mkdir(parents=True, exist_ok=True)
    regression_refs(Path(sys.argv[2]))
    sys.exit(0)

OUT = Path(sys.argv[1])
OUT.mkdir(parents=True, exist_ok=True)
RNG = np.random.default_rng(20261127)

manifest: dict = {"pillow": PIL.__version__, "images": [], "tensors": [], "resizes": []}


def photo(size: tuple[int, int]) -> Image.Image:
    """A real photo (a Debian tuxpaint stamp) on a noisy gradient, resized to `size`."""
    return ri.stamp_photo(size, rng=RNG)


def noise(size: tuple[int, int], channels: int = 3) -> np.ndarray:
    return ri.noise(size, channels, rng=RNG)


raw_png = ri.raw_png  # PNG layouts Pillow cannot save (16-bit RGB, 2-bit grey)
encode = ri.encode


def add(name: str, data: bytes) -> None:
    """Store an encoded image and what Pillow decodes it to."""
    (OUT / name).write_bytes(data)
    entry: dict = {"file": name}
    decoded = ri.pillow_decode(data)
    if "mode" in decoded:
        entry["pillow_mode"] = decoded["mode"]
    if "error" in decoded:
        entry["error"] = decoded["error"]
    else:
        entry["width"], entry["height"] = decoded["rgb"].shape[1], decoded["rgb"].shape[0]
        entry["rgb"] = name + ".rgb"
        (OUT / entry["rgb"]).write_bytes(decoded["rgb"].tobytes())
    manifest["images"].append(entry)


# -- JPEG ------------------------------------------------------------------------------------
base = photo((600, 520))
for sub, label in ((0, "444"), (1, "422"), (2, "420")):
    add(f"photo_{label}.jpg", encode(base, "JPEG", quality=90, subsampling=sub))
add("photo_progressive.jpg", encode(base, "JPEG", quality=85, progressive=True))
add("photo_grey.jpg", encode(base.convert("L"), "JPEG", quality=90))
add("photo_cmyk.jpg", encode(base.convert("CMYK"), "JPEG", quality=90))
add("photo_restart.jpg", encode(base, "JPEG", quality=75, restart_marker_blocks=3))
for size in (
    (1, 1),
    (2, 3),
    (3, 500),
    (500, 3),
    (333, 251),
    (255, 257),
    (256, 256),
    (224, 224),
    (100, 90),
    (4000, 20),
    (20, 3000),
    (301, 903),
):
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
add(
    "grey2bit.png",
    raw_png(64, h16, 2, 0, [np.packbits(np.unpackbits(r[:, None], axis=1)[:, 6:].ravel()).tobytes() for r in grey2]),
)
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


torchvision_tensor = ri.torchvision_tensor


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


cases = [
    ((10, 1500), (5, 700)),
    ((12, 1300), (9, 1000)),
    ((300, 900), (256, 768)),
    ((77, 55), (150, 41)),
    ((640, 480), (333, 250)),
    ((31, 400), (20, 39)),
    ((500, 375), (298, 224)),
    ((1, 9), (4, 3)),
]
cases += [
    ((int(RNG.integers(1, 400)), int(RNG.integers(1, 400))), (int(RNG.integers(1, 300)), int(RNG.integers(1, 300))))
    for _ in range(24)
]
for k, ((W, H), (w, h)) in enumerate(cases):
    src_name = f"resize_src_{k}.rgb"
    src = noise((W, H)) if k % 2 else np.asarray(photo((W, H)))
    (OUT / src_name).write_bytes(src.tobytes())
    img = Image.fromarray(src, "RGB")
    for fname, flt in FILTERS.items():
        for order in ("pillow_12_1", "pillow_12_2", "pillow_13"):
            out = ri.pillow_resize(img, (w, h), flt, order)  # the installed Pillow is the oracle for its own order
            name = f"resize_{k}_{fname}_{order}.rgb"
            (OUT / name).write_bytes(np.asarray(out).tobytes())
            manifest["resizes"].append(
                {"src": src_name, "in": [W, H], "out": [w, h], "filter": fname, "order": order, "file": name}
            )

(OUT / "manifest.json").write_text(json.dumps(manifest, indent=1))
print(f"{len(manifest['images'])} images, {len(manifest['tensors'])} tensors, {len(manifest['resizes'])} resizes")
