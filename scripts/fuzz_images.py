#!/usr/bin/env python3
"""Differential image fuzzer: Pillow + torchvision against both butterfly_onnx backends.

Seeds are real photos (skimage / scikit-learn / matplotlib sample photos and, when installed,
Tux Paint stamps; read at run time, never copied) encoded with Pillow (and a few hand-written
encoders for what Pillow cannot write: 16-bit BMPs, RLE BMPs, 16-bit RGB PNG, GIFs whose
frame and logical screen differ) in every promised format: JPEG, PNG, GIF, BMP, WebP, TIFF.
Each case is a seed with 1-3 mutations: byte and bit flips, truncation, removal or
duplication of byte ranges and of chunks (PNG chunks, JPEG segments, GIF blocks), header
field edits (sizes huge or zero, offsets, bit depths, compression, TIFF tags), splices of two
seeds of the same format.

Every case goes through three worker processes, each of which may crash or hang without
stopping the campaign (a dead worker is counted and restarted; a case running past the
timeout is a hang, the worker is killed and restarted):

* the reference: ``Image.open(f).convert("RGB")`` + ``torchvision.transforms`` Resize,
  CenterCrop, ToTensor, Normalize;
* the python backend: ``Classifier(backend="python").preprocess`` and ``.predict``;
* the rust backend: the same on ``Classifier(backend="rust")``.

Defects counted per backend: ``crash``, ``hang``, ``mismatch`` (Pillow decodes, the backend
returns a different tensor), ``tensor_where_pillow_raised``, ``refusal`` (Pillow decodes,
the backend raises; allowed for corrupt files under 0.5% of the decodable cases; counted as
``refusal_unsupported`` when the message says the layout is unsupported),
``outside_hierarchy`` (an exception that is not a ``butterfly_onnx.errors.ButterflyError``);
and between the backends ``error_class_disagreement`` (both raise, different classes) and
``class_disagreement`` (both predict, different top-1 class). Every defective case is kept in
the output folder (``<kind>/<id>.<ext>`` plus ``cases.jsonl``).

    python scripts/fuzz_images.py --seed 1 --cases 2000
    nice -n 10 python scripts/fuzz_images.py --minutes 60 --out fuzz_out
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import os
import random
import struct
import sys
import tempfile
import threading
import time
import traceback
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

RESIZE = 64
CROP = 64
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
NUM_CLASSES = 10
CASE_TIMEOUT_S = 30.0
#: ... or this many times as long as the reference (Pillow + torchvision) took on the case,
#: whichever is longer: the backends decode the image twice (preprocess and predict), and on
#: a saturated 2-core VM a valid 176 M-pixel WebP (Pillow 6.5 s) took the python worker over
#: 6x that. A real hang never ends, so a wide margin loses nothing.
HANG_FACTOR = 20.0
#: Address-space ceiling of the backend workers: a file that makes a decoder allocate
#: gigabytes fails there (counted as an error or a crash) instead of swapping the machine.
WORKER_MEMORY_BYTES = 6 << 30
FORMATS = ("jpeg", "png", "gif", "bmp", "webp", "tiff")
EXTENSIONS = {"jpeg": "jpg", "png": "png", "gif": "gif", "bmp": "bmp", "webp": "webp", "tiff": "tif"}


# ---------------------------------------------------------------------------------------------
# seed photos
# ---------------------------------------------------------------------------------------------
def photo_paths() -> list[Path]:
    """Real photos shipped with installed packages (and Tux Paint stamps when present)."""
    paths: list[Path] = []
    try:
        import skimage.data

        base = Path(skimage.data.__file__).parent
        for name in (
            "astronaut.png",
            "chelsea.png",
            "coffee.png",
            "rocket.jpg",
            "motorcycle_left.png",
            "camera.png",
            "retina.jpg",
            "hubble_deep_field.jpg",
            "logo.png",
            "color.png",
        ):
            if (base / name).exists():
                paths.append(base / name)
    except ImportError:
        pass
    try:
        import sklearn.datasets

        base = Path(sklearn.datasets.__file__).parent / "images"
        paths += sorted(base.glob("*.jpg"))
    except ImportError:
        pass
    try:
        import matplotlib

        base = Path(matplotlib.get_data_path()) / "sample_data"
        paths += [p for p in (base / "grace_hopper.jpg", base / "Minduka_Present_Blue_Pack.png") if p.exists()]
    except ImportError:
        pass
    stamps = Path("/usr/share/tuxpaint/stamps")
    if stamps.is_dir():
        paths += sorted(stamps.rglob("*.png"))[::40]
    if not paths:
        raise SystemExit("no seed photos found (install scikit-image, scikit-learn or matplotlib)")
    return paths


def _photo(path: Path, rng: random.Random, size: tuple[int, int]):
    from PIL import Image

    with Image.open(path) as img:
        has_alpha = "A" in img.getbands() or "transparency" in img.info
        img = img.convert("RGBA" if has_alpha else "RGB")
        w, h = img.size
        cw, ch = min(w, size[0] * rng.randint(1, 4)), min(h, size[1] * rng.randint(1, 4))
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        return img.crop((x, y, x + cw, y + ch)).resize(size)


# ---------------------------------------------------------------------------------------------
# hand-written encoders for files Pillow does not write
# ---------------------------------------------------------------------------------------------
def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_raw(width: int, height: int, color: int, depth: int, rows: list[bytes], extra: list[bytes] = ()) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    body = b"".join(b"\x00" + r for r in rows)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + b"".join(extra)
        + _png_chunk(b"IDAT", zlib.compress(body))
        + _png_chunk(b"IEND", b"")
    )


def png_rgb16(img) -> bytes:
    a = np.asarray(img.convert("RGB"), dtype=np.uint16)
    a = (a << 8) | (a ^ 0x5A)  # distinct low bytes
    return png_raw(img.width, img.height, 2, 16, [r.astype(">u2").tobytes() for r in a])


def bmp_16(img, five_six_five: bool, bitfields: bool) -> bytes:
    a = np.asarray(img.convert("RGB"), dtype=np.uint16)
    if five_six_five:
        v = ((a[..., 0] >> 3) << 11) | ((a[..., 1] >> 2) << 5) | (a[..., 2] >> 3)
        masks = (0xF800, 0x07E0, 0x001F)
    else:
        v = ((a[..., 0] >> 3) << 10) | ((a[..., 1] >> 3) << 5) | (a[..., 2] >> 3)
        masks = (0x7C00, 0x03E0, 0x001F)
    h, w = v.shape
    stride = (w * 2 + 3) & ~3
    rows = b"".join(r.astype("<u2").tobytes().ljust(stride, b"\0") for r in v[::-1])
    compression = 3 if bitfields else 0
    extra = struct.pack("<III", *masks) if bitfields else b""
    header_size = 14 + 40 + len(extra)
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 16, compression, len(rows), 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", header_size + len(rows), 0, 0, header_size) + info + extra + rows


def bmp_rle8(img) -> bytes:
    p = img.convert("RGB").quantize(64)
    idx = np.asarray(p)
    pal = (p.getpalette() + [0] * 192)[: 64 * 3]
    h, w = idx.shape
    out = bytearray()
    for row in idx[::-1]:
        x = 0
        while x < w:
            run = 1
            while x + run < w and run < 255 and row[x + run] == row[x]:
                run += 1
            if run >= 2:
                out += bytes((run, int(row[x])))
                x += run
                continue
            end = x + 1
            while end < w and end - x < 255 and not (end + 1 < w and row[end] == row[end + 1]):
                end += 1
            lit = [int(v) for v in row[x:end]]
            if len(lit) >= 3:
                out += bytes((0, len(lit))) + bytes(lit) + (b"\0" if len(lit) % 2 else b"")
            else:
                for v in lit:
                    out += bytes((1, v))
            x = end
        out += b"\x00\x00"
    out += b"\x00\x01"
    palette = b"".join(bytes((pal[3 * i + 2], pal[3 * i + 1], pal[3 * i], 0)) for i in range(64))
    header_size = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 8, 1, len(out), 2835, 2835, 64, 0)
    return b"BM" + struct.pack("<IHHI", header_size + len(out), 0, 0, header_size) + info + palette + bytes(out)


def gif_screen(img, screen: tuple[int, int], offset: tuple[int, int]) -> bytes:
    """A GIF whose logical screen and frame size/offset are chosen independently."""
    buf = io.BytesIO()
    img.convert("RGB").quantize(128).save(buf, "GIF")
    b = bytearray(buf.getvalue())
    b[6:10] = struct.pack("<HH", *screen)
    pos = b.index(b"\x2c", 13 + (3 << ((b[10] & 7) + 1)) if b[10] & 0x80 else 13)
    b[pos + 1 : pos + 5] = struct.pack("<HH", *offset)
    return bytes(b)


# ---------------------------------------------------------------------------------------------
# seeds
# ---------------------------------------------------------------------------------------------
def make_seeds(rng: random.Random, count_per_photo: int = 1) -> dict[str, list[tuple[str, bytes]]]:
    """{format: [(name, bytes)]} -- every variant of every format from a few real photos."""
    from PIL import Image

    seeds: dict[str, list[tuple[str, bytes]]] = {f: [] for f in FORMATS}
    photos = photo_paths()
    sizes = [(64, 64), (80, 64), (64, 96), (96, 64), (67, 64), (64, 72)]

    def save(fmt: str, name: str, img, **kw) -> None:
        buf = io.BytesIO()
        try:
            img.save(
                buf,
                {"jpeg": "JPEG", "png": "PNG", "gif": "GIF", "bmp": "BMP", "webp": "WEBP", "tiff": "TIFF"}[fmt],
                **kw,
            )
        except (OSError, ValueError, KeyError):
            return
        seeds[fmt].append((name, buf.getvalue()))

    def animated(fmt: str, name: str, first, second, **kw) -> None:
        """Two RGBA frames, 40 ms each."""
        rgba = second.convert("RGBA")
        save(fmt, name, first.convert("RGBA"), save_all=True, append_images=[rgba], duration=40, **kw)

    chosen = photos[:6] + rng.sample(photos[6:], min(len(photos) - 6, 4)) if len(photos) > 6 else photos
    for i, path in enumerate(chosen):
        size = sizes[i % len(sizes)]
        img = _photo(path, rng, size)
        rgb = img.convert("RGB")
        tag = f"{path.stem[:16]}_{size[0]}x{size[1]}"
        # JPEG
        save("jpeg", f"{tag}_420", rgb, quality=rng.choice([75, 90, 95]))
        save("jpeg", f"{tag}_444", rgb, quality=90, subsampling=0)
        save("jpeg", f"{tag}_422", rgb, quality=85, subsampling=1)
        save("jpeg", f"{tag}_prog", rgb, quality=80, progressive=True)
        save("jpeg", f"{tag}_grey", rgb.convert("L"), quality=90)
        if i % 3 == 0:
            save("jpeg", f"{tag}_cmyk", rgb.convert("CMYK"), quality=90)
            save("jpeg", f"{tag}_restart", rgb, quality=90, restart_marker_blocks=2)
            save(
                "jpeg",
                f"{tag}_opt",
                rgb,
                quality=70,
                optimize=True,
                exif=b"Exif\0\0MM\0*\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01\0\x06\0\0\0\0\0\0",
            )
        if i % 3 == 2:  # a camera-like EXIF block: Pillow reads its resolution in _open (no JFIF dpi)
            exif = Image.Exif()
            exif.update({0x0110: "fuzz", 0x0112: 1, 0x011A: 72.0, 0x011B: 72.0, 0x0128: 2, 0x0131: "fuzz"})
            save("jpeg", f"{tag}_exif", rgb, quality=85, exif=exif.tobytes())
        if i % 3 == 1:  # MPO: a JPEG with an MPF segment and a second image (Pillow: MpoImageFile)
            buf = io.BytesIO()
            rgb.save(buf, "MPO", save_all=True, append_images=[rgb.rotate(180)], quality=85)
            seeds["jpeg"].append((f"{tag}_mpo", buf.getvalue()))
        # PNG
        save("png", f"{tag}_rgb", rgb)
        save("png", f"{tag}_rgba", img.convert("RGBA"))
        save("png", f"{tag}_l", rgb.convert("L"))
        save("png", f"{tag}_la", rgb.convert("LA"))
        save("png", f"{tag}_p", rgb.quantize(rng.choice([16, 200])))
        pt = rgb.quantize(32)
        save("png", f"{tag}_ptrns", pt, transparency=rng.randint(0, 31))
        save("png", f"{tag}_1bit", rgb.convert("1"))
        save("png", f"{tag}_p4", rgb.quantize(16), bits=4)
        save(
            "png", f"{tag}_i16", Image.fromarray((np.asarray(rgb.convert("L"), dtype=np.uint16) * 3).astype(np.uint16))
        )
        seeds["png"].append((f"{tag}_rgb16", png_rgb16(rgb)))
        if i % 4 == 0:
            from PIL import ImageCms

            icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
            save("png", f"{tag}_icc", rgb, icc_profile=icc)
            save("jpeg", f"{tag}_icc", rgb, icc_profile=icc)
        # GIF
        save("gif", f"{tag}_p", rgb.quantize(rng.choice([8, 64, 256])))
        save("gif", f"{tag}_trns", rgb.quantize(64), transparency=3)
        w, h = rgb.size
        seeds["gif"].append((f"{tag}_screen_small", gif_screen(rgb, (w - 13, h - 9), (0, 0))))
        seeds["gif"].append((f"{tag}_screen_big", gif_screen(rgb, (w + 16, h + 8), (5, 3))))
        if i % 2 == 0:
            frames = [rgb.quantize(64), rgb.rotate(90).quantize(64)]
            buf = io.BytesIO()
            frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=50)
            seeds["gif"].append((f"{tag}_anim", buf.getvalue()))
        if i % 2 == 1:  # APNG: only the first frame is promised (torchvision reads that one)
            second = rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            save("png", f"{tag}_apng", rgb, save_all=True, append_images=[second], duration=40)
            animated("png", f"{tag}_apng_rgba", img, second, disposal=1, blend=1)
            save("png", f"{tag}_apng_default", rgb, save_all=True, append_images=[second], default_image=True)
        # BMP
        save("bmp", f"{tag}_rgb", rgb)
        save("bmp", f"{tag}_p", rgb.quantize(256))
        save("bmp", f"{tag}_l", rgb.convert("L"))
        save("bmp", f"{tag}_1", rgb.convert("1"))
        save("bmp", f"{tag}_rgba", img.convert("RGBA"))
        seeds["bmp"].append((f"{tag}_555", bmp_16(rgb, False, False)))
        seeds["bmp"].append((f"{tag}_565", bmp_16(rgb, True, True)))
        seeds["bmp"].append((f"{tag}_555bf", bmp_16(rgb, False, True)))
        seeds["bmp"].append((f"{tag}_rle8", bmp_rle8(rgb)))
        # WebP
        save("webp", f"{tag}_lossy", rgb, quality=rng.choice([50, 80]))
        save("webp", f"{tag}_lossless", rgb, lossless=True)
        save("webp", f"{tag}_rgba", img.convert("RGBA"), lossless=bool(i % 2))
        if i % 2 == 0:  # animated WebP: the first frame
            second = rgb.rotate(180)
            save("webp", f"{tag}_anim", rgb, save_all=True, append_images=[second], duration=40, lossless=bool(i % 4))
            animated("webp", f"{tag}_anim_rgba", img, second, quality=70)
        # TIFF
        save("tiff", f"{tag}_raw", rgb)
        save("tiff", f"{tag}_lzw", rgb, compression="tiff_lzw")
        save("tiff", f"{tag}_deflate", rgb, compression="tiff_adobe_deflate")
        save("tiff", f"{tag}_packbits", rgb.convert("L"), compression="packbits")
        save("tiff", f"{tag}_rgba", img.convert("RGBA"), compression="tiff_lzw")
        save("tiff", f"{tag}_g4", rgb.convert("1"), compression="group4")
        save("tiff", f"{tag}_jpeg", rgb, compression="jpeg")
        save("tiff", f"{tag}_cmyk", rgb.convert("CMYK"))
        save(
            "tiff",
            f"{tag}_i16",
            Image.fromarray((np.asarray(rgb.convert("L"), dtype=np.uint16) * 200).astype(np.uint16)),
        )
        save("tiff", f"{tag}_p", rgb.quantize(64))
    return {f: v for f, v in seeds.items() if v}


# ---------------------------------------------------------------------------------------------
# mutations
# ---------------------------------------------------------------------------------------------
INTERESTING = (
    0,
    1,
    2,
    7,
    8,
    15,
    16,
    31,
    32,
    63,
    64,
    127,
    128,
    255,
    256,
    1023,
    4096,
    32767,
    32768,
    65535,
    65536,
    100000,
    1 << 24,
    0x7FFFFFFF,
    0x80000000,
    0xFFFFFFFF,
)


def _interesting(rng: random.Random, old: int, bits: int) -> int:
    choice = rng.random()
    if choice < 0.4:
        v = rng.choice(INTERESTING)
    elif choice < 0.7:
        v = old + rng.choice((-2, -1, 1, 2, old, -old // 2))
    else:
        v = rng.getrandbits(bits)
    return v & ((1 << bits) - 1)


def _edit_int(b: bytearray, pos: int, size: int, little: bool, rng: random.Random) -> None:
    if pos < 0 or pos + size > len(b):
        return
    order = "little" if little else "big"
    old = int.from_bytes(b[pos : pos + size], order)
    b[pos : pos + size] = _interesting(rng, old, 8 * size).to_bytes(size, order)


def png_chunks(b: bytes) -> list[tuple[int, int, bytes]]:
    """(start, end, type) of each chunk after the signature."""
    out, pos = [], 8
    while pos + 8 <= len(b):
        (n,) = struct.unpack(">I", b[pos : pos + 4])
        end = pos + 12 + n
        if end > len(b):
            break
        out.append((pos, end, b[pos + 4 : pos + 8]))
        pos = end
    return out


def jpeg_segments(b: bytes) -> list[tuple[int, int, int]]:
    out, pos = [], 2
    while pos + 4 <= len(b) and b[pos] == 0xFF:
        marker = b[pos + 1]
        if marker == 0xDA:
            out.append((pos, len(b) - 2, marker))
            break
        (n,) = struct.unpack(">H", b[pos + 2 : pos + 4])
        out.append((pos, pos + 2 + n, marker))
        pos += 2 + n
    return out


def tiff_entries(b: bytes) -> list[tuple[int, bool, int]]:
    """(entry offset, little endian, tag) of the first IFD's entries."""
    if len(b) < 8:
        return []
    little = b[:2] == b"II"
    e = "<" if little else ">"
    (ifd,) = struct.unpack(e + "I", b[4:8])
    if ifd + 2 > len(b):
        return []
    (n,) = struct.unpack(e + "H", b[ifd : ifd + 2])
    return [
        (ifd + 2 + 12 * i, little, struct.unpack(e + "H", b[ifd + 2 + 12 * i : ifd + 4 + 12 * i])[0])
        for i in range(n)
        if ifd + 14 + 12 * i <= len(b)
    ]


def header_edit(fmt: str, b: bytearray, rng: random.Random) -> str:
    if fmt == "png":
        chunks = png_chunks(bytes(b))
        if rng.random() < 0.6 or len(chunks) < 2:
            field_ = rng.choice(
                [
                    (16, 4, "width"),
                    (20, 4, "height"),
                    (24, 1, "depth"),
                    (25, 1, "color"),
                    (26, 1, "compression"),
                    (27, 1, "filter"),
                    (28, 1, "interlace"),
                ]
            )
            _edit_int(b, field_[0], field_[1], False, rng)
            start, end = 8, 33
            what = f"IHDR.{field_[2]}"
        else:
            start, end, kind = rng.choice(chunks)
            if end - start > 12:
                for _ in range(rng.randint(1, 4)):
                    i = rng.randrange(start + 8, end - 4)
                    b[i] = rng.getrandbits(8)
            what = f"{kind.decode('latin-1')}.data"
        if rng.random() < 0.8 and end <= len(b):  # keep the CRC valid most of the time
            b[end - 4 : end] = struct.pack(">I", zlib.crc32(bytes(b[start + 4 : end - 4])))
        return what
    if fmt == "bmp":
        field_ = rng.choice(
            [
                (2, 4, "file_size"),
                (10, 4, "offset"),
                (14, 4, "header_size"),
                (18, 4, "width"),
                (22, 4, "height"),
                (26, 2, "planes"),
                (28, 2, "bpp"),
                (30, 4, "compression"),
                (34, 4, "image_size"),
                (46, 4, "colors_used"),
                (54, 4, "mask0"),
                (58, 4, "mask1"),
                (62, 4, "mask2"),
                (66, 4, "mask3"),
            ]
        )
        if field_[2] == "bpp" and rng.random() < 0.7:
            b[28:30] = struct.pack("<H", rng.choice([0, 1, 2, 4, 8, 15, 16, 24, 32, 64]))
        elif field_[2] == "compression" and rng.random() < 0.7:
            b[30:34] = struct.pack("<I", rng.choice([0, 1, 2, 3, 4, 5, 6]))
        else:
            _edit_int(b, field_[0], field_[1], True, rng)
        return f"BMP.{field_[2]}"
    if fmt == "gif":
        if rng.random() < 0.5:
            field_ = rng.choice([(6, 2, "screen_w"), (8, 2, "screen_h"), (10, 1, "flags"), (11, 1, "background")])
            _edit_int(b, field_[0], field_[1], True, rng)
            return f"GIF.{field_[2]}"
        starts = [i for i in range(13, len(b)) if b[i] == 0x2C][:3]
        if not starts:
            return "GIF.none"
        pos = rng.choice(starts)
        field_ = rng.choice([(1, 2, "left"), (3, 2, "top"), (5, 2, "width"), (7, 2, "height"), (9, 1, "flags")])
        _edit_int(b, pos + field_[0], field_[1], True, rng)
        return f"GIF.frame.{field_[2]}"
    if fmt == "jpeg":
        segs = jpeg_segments(bytes(b))
        sof = [s for s in segs if s[2] in (0xC0, 0xC1, 0xC2)]
        if sof and rng.random() < 0.6:
            start = sof[0][0]
            field_ = rng.choice(
                [
                    (4, 1, "precision"),
                    (5, 2, "height"),
                    (7, 2, "width"),
                    (9, 1, "components"),
                    (11, 1, "sampling0"),
                    (14, 1, "sampling1"),
                    (12, 1, "qtable0"),
                ]
            )
            _edit_int(b, start + field_[0], field_[1], False, rng)
            return f"SOF.{field_[2]}"
        if segs:
            start, end, marker = rng.choice(segs)
            for _ in range(rng.randint(1, 3)):
                i = rng.randrange(start + 2, max(start + 3, min(end, start + 40)))
                if i < len(b):
                    b[i] = rng.getrandbits(8)
            return f"JPEG.{marker:02X}"
        return "JPEG.none"
    if fmt == "tiff":
        entries = tiff_entries(bytes(b))
        if not entries:
            return "TIFF.none"
        pos, little, tag = rng.choice(entries)
        e = "<" if little else ">"
        if rng.random() < 0.2:
            _edit_int(b, pos + 2, 2, little, rng)  # the field type
            return f"TIFF.{tag}.type"
        if rng.random() < 0.15:
            _edit_int(b, pos + 4, 4, little, rng)  # the count
            return f"TIFF.{tag}.count"
        typ = struct.unpack(e + "H", b[pos + 2 : pos + 4])[0]
        special = {
            259: [1, 2, 3, 4, 5, 7, 8, 32773, 32946, 34712],
            262: [0, 1, 2, 3, 4, 5, 6, 8],
            274: list(range(0, 10)),
            277: [1, 2, 3, 4, 5],
            258: [1, 2, 4, 8, 12, 16, 32],
            284: [1, 2],
            317: [1, 2, 3],
            338: [0, 1, 2],
            339: [1, 2, 3],
        }
        if tag in special and rng.random() < 0.7:
            value = rng.choice(special[tag])
            if typ == 3:
                b[pos + 8 : pos + 10] = struct.pack(e + "H", value)
            else:
                b[pos + 8 : pos + 12] = struct.pack(e + "I", value)
        else:
            _edit_int(b, pos + 8, 2 if typ == 3 else 4, little, rng)
        return f"TIFF.{tag}"
    if fmt == "webp":
        kind = bytes(b[12:16])
        if kind == b"VP8X" and rng.random() < 0.5:
            field_ = rng.choice([(20, 1, "flags"), (24, 3, "canvas_w"), (27, 3, "canvas_h")])
        elif kind == b"VP8L" and rng.random() < 0.6:
            field_ = rng.choice([(21, 2, "size_lo"), (22, 2, "size_mid"), (23, 2, "size_hi"), (24, 1, "version")])
        elif kind == b"VP8 " and rng.random() < 0.6:
            field_ = rng.choice([(26, 2, "width"), (28, 2, "height"), (20, 3, "frame_tag")])
        else:
            field_ = rng.choice([(4, 4, "riff_size"), (16, 4, "chunk_size")])
        _edit_int(b, field_[0], field_[1], True, rng)
        return f"WEBP.{kind.decode('latin-1').strip()}.{field_[2]}"
    return "none"


def chunk_op(fmt: str, b: bytes, rng: random.Random) -> tuple[bytes, str]:
    ranges: list[tuple[int, int, str]] = []
    if fmt == "png":
        ranges = [(s, e, k.decode("latin-1")) for s, e, k in png_chunks(b)]
    elif fmt == "jpeg":
        ranges = [(s, e, f"{m:02X}") for s, e, m in jpeg_segments(b)]
    elif fmt == "webp" and len(b) > 20:
        pos = 12
        while pos + 8 <= len(b):
            (n,) = struct.unpack("<I", b[pos + 4 : pos + 8])
            end = min(len(b), pos + 8 + n + (n & 1))
            ranges.append((pos, end, b[pos : pos + 4].decode("latin-1")))
            pos = end
    if not ranges:
        a = rng.randrange(len(b))
        z = min(len(b), a + rng.randint(1, max(1, len(b) // 8)))
        ranges = [(a, z, "range")]
    start, end, kind = rng.choice(ranges)
    op = rng.choice(["remove", "duplicate", "move"])
    piece = b[start:end]
    if op == "remove":
        return b[:start] + b[end:], f"remove:{kind}"
    if op == "duplicate":
        return b[:end] + piece + b[end:], f"duplicate:{kind}"
    rest = b[:start] + b[end:]
    at = rng.randrange(len(rest) + 1)
    return rest[:at] + piece + rest[at:], f"move:{kind}"


def mutate(fmt: str, data: bytes, others: list[bytes], rng: random.Random) -> tuple[bytes, list[str]]:
    b = data
    steps: list[str] = []
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3))):
        if not b:
            break
        r = rng.random()
        if r < 0.22:
            ba = bytearray(b)
            n = rng.choice((1, 1, 2, 4, 8, 16))
            lo = 0 if rng.random() < 0.7 else min(len(ba) - 1, 64)
            hi = len(ba) if rng.random() < 0.6 else min(len(ba), 128)
            for _ in range(n):
                ba[rng.randrange(lo, max(lo + 1, hi))] = rng.getrandbits(8)
            b, step = bytes(ba), f"bytes:{n}"
        elif r < 0.32:
            ba = bytearray(b)
            for _ in range(rng.randint(1, 4)):
                ba[rng.randrange(len(ba))] ^= 1 << rng.randrange(8)
            b, step = bytes(ba), "bits"
        elif r < 0.45:
            cut = rng.choice(
                (rng.randrange(len(b)), len(b) - rng.randint(1, min(len(b), 16)), int(len(b) * rng.random() ** 0.3))
            )
            b, step = b[:cut], f"truncate:{cut}"
        elif r < 0.62:
            ba = bytearray(b)
            step = "header:" + header_edit(fmt, ba, rng)
            b = bytes(ba)
        elif r < 0.77:
            b, step = chunk_op(fmt, b, rng)
            step = "chunk:" + step
        elif r < 0.87 and others:
            other = rng.choice(others)
            a, z = rng.randrange(len(b) + 1), rng.randrange(len(other) + 1)
            b, step = b[:a] + other[z:], "splice"
        else:
            a = rng.randrange(len(b))
            if rng.random() < 0.5:
                b, step = b[:a] + bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 16))) + b[a:], "insert"
            else:
                b, step = b[:a] + b[a + rng.randint(1, 16) :], "delete"
        steps.append(step)
    return b, steps


# ---------------------------------------------------------------------------------------------
# workers
# ---------------------------------------------------------------------------------------------
def _error(exc: BaseException) -> dict[str, Any]:
    try:
        from butterfly_onnx.errors import ButterflyError

        inside = isinstance(exc, ButterflyError)
    except ImportError:
        inside = False
    return {"ok": False, "cls": type(exc).__name__, "inside": inside, "msg": str(exc)[:300]}


def _worker(kind: str, model: str, conn) -> None:
    import warnings

    warnings.simplefilter("ignore")
    if not os.environ.get("FUZZ_IMAGES_STDERR"):  # libtiff and friends print on every corrupt file
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
    if kind != "reference":
        try:
            import resource

            resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_BYTES, WORKER_MEMORY_BYTES))
        except (ImportError, ValueError, OSError):
            pass
    if kind == "reference":
        import torch
        from PIL import Image
        from torchvision import transforms as T

        torch.set_num_threads(1)
        transform = T.Compose([T.Resize(RESIZE), T.CenterCrop(CROP), T.ToTensor(), T.Normalize(MEAN, STD)])

        def handle(data: bytes) -> dict[str, Any]:
            try:
                img = Image.open(io.BytesIO(data)).convert("RGB")
            except Exception as exc:  # Pillow's verdict, whatever its class
                return _error(exc)
            t = transform(img).numpy()
            return {"ok": True, "tensor": t.tobytes(), "shape": t.shape}
    else:
        from butterfly_onnx import Classifier

        clf = Classifier(model, backend=kind, threads=1)

        def handle(data: bytes) -> dict[str, Any]:
            try:
                t = clf.preprocess([data])
                t = np.asarray(t, dtype=np.float32)[0]
                top = clf.predict([data], top_k=1)[0]
                return {"ok": True, "tensor": t.tobytes(), "shape": t.shape, "top1": top.index}
            except BaseException as exc:  # noqa: BLE001 -- classified, not swallowed
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    raise
                return _error(exc)

    conn.send("ready")
    while True:
        try:
            data = conn.recv()
        except EOFError:
            return
        if data is None:
            return
        try:
            conn.send(handle(data))
        except Exception as exc:  # noqa: BLE001
            conn.send({"ok": False, "cls": type(exc).__name__, "inside": False, "msg": traceback.format_exc()[-300:]})


class Worker:
    """A process that survives being killed: crashed or hung workers are restarted."""

    def __init__(self, kind: str, model: str):
        self.kind, self.model = kind, model
        self.proc = None
        self.start()

    def start(self) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(self.kind, self.model, child), daemon=True)
        self.proc.start()
        child.close()
        if not self.conn.poll(300) or self.conn.recv() != "ready":
            raise RuntimeError(f"the {self.kind} worker did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.is_alive():
            self.proc.kill()
        if self.proc is not None:
            self.proc.join(10)

    def run(self, data: bytes, timeout: float) -> dict[str, Any]:
        try:
            self.conn.send(data)
            if not self.conn.poll(timeout):
                self.kill()
                self.start()
                return {"ok": False, "hang": True, "cls": "hang"}
            return self.conn.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError, OSError):
            self.proc.join(10)
            code = self.proc.exitcode
            self.start()
            return {"ok": False, "crash": True, "cls": f"crash(exit {code})"}

    def close(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.proc.join(5)
        self.kill()


# ---------------------------------------------------------------------------------------------
# the model the backends run: seeded, tiny, with the campaign's preprocessing contract
# ---------------------------------------------------------------------------------------------
def build_model(path: Path, seed: int = 0) -> Path:
    import onnx
    from onnx import TensorProto, helper

    from butterfly_onnx.contract import ModelContract, PreprocessSpec, write_contract

    rng = np.random.default_rng(seed)
    pooled = CROP // 8
    weight = rng.standard_normal((3 * pooled * pooled, NUM_CLASSES)).astype(np.float32)
    nodes = [
        helper.make_node("AveragePool", ["input"], ["pooled"], kernel_shape=[8, 8], strides=[8, 8]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "weight"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "fuzz",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, CROP, CROP])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", NUM_CLASSES])],
        [helper.make_tensor("weight", TensorProto.FLOAT, weight.shape, weight.ravel())],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    spec = PreprocessSpec(RESIZE, CROP, mean=MEAN, std=STD)
    write_contract(path, ModelContract(labels=tuple(f"c{i}" for i in range(NUM_CLASSES)), preprocess=spec))
    return path


# ---------------------------------------------------------------------------------------------
# the campaign
# ---------------------------------------------------------------------------------------------
DEFECTS = (
    "crash",
    "hang",
    "mismatch",
    "tensor_where_pillow_raised",
    "refusal",
    "refusal_unsupported",
    "outside_hierarchy",
)
#: A refusal whose message says the layout is unsupported (docs/reliability.md lists them:
#: TIFF JPEG/CCITT/palette/tiled..., animated WebP) is counted apart from other refusals.
UNSUPPORTED_MARK = "not supported"


@dataclass
class Counts:
    cases: int = 0
    pillow_decodes: int = 0
    pillow_raises: int = 0
    reference_crash_or_hang: int = 0
    per_backend: dict[str, dict[str, int]] = field(
        default_factory=lambda: {b: {d: 0 for d in DEFECTS} for b in ("python", "rust")}
    )
    error_class_disagreement: int = 0
    class_disagreement: int = 0
    by_format: dict[str, int] = field(default_factory=dict)

    def refusal_rate(self, backend: str, unsupported: bool = False) -> float:
        n = self.per_backend[backend]["refusal_unsupported" if unsupported else "refusal"]
        return n / max(1, self.pillow_decodes)

    def all_refusal_rate(self, backend: str) -> float:
        """Refusals of every kind (unsupported layouts included) per Pillow-decodable case."""
        d = self.per_backend[backend]
        return (d["refusal"] + d["refusal_unsupported"]) / max(1, self.pillow_decodes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "cases": self.cases,
            "pillow_decodes": self.pillow_decodes,
            "pillow_raises": self.pillow_raises,
            "reference_crash_or_hang": self.reference_crash_or_hang,
            "per_backend": self.per_backend,
            "refusal_rate": {b: self.refusal_rate(b) for b in self.per_backend},
            "refusal_unsupported_rate": {b: self.refusal_rate(b, True) for b in self.per_backend},
            "all_refusal_rate": {b: self.all_refusal_rate(b) for b in self.per_backend},
            "error_class_disagreement": self.error_class_disagreement,
            "class_disagreement": self.class_disagreement,
            "by_format": self.by_format,
        }


#: Refusals (of every kind, unsupported layouts included) must stay under this share of
#: the cases Pillow decodes.
REFUSAL_LIMIT = 0.005


def verdict(counts: Counts) -> list[str]:
    """What fails the campaign: any defect, and refusals of any kind at or above the limit."""
    failed = [
        f"{b}: {n} {kind}"
        for b, defects in counts.per_backend.items()
        for kind, n in defects.items()
        if n and not kind.startswith("refusal")
    ]
    if counts.error_class_disagreement:
        failed.append(f"{counts.error_class_disagreement} error-class disagreements")
    if counts.class_disagreement:
        failed.append(f"{counts.class_disagreement} top-1 disagreements")
    for b in counts.per_backend:
        rate = counts.all_refusal_rate(b)
        if rate >= REFUSAL_LIMIT:
            failed.append(f"{b}: refusals {100 * rate:.2f} % of the Pillow-decodable cases (limit 0.5 %)")
    return failed


def classify(ref: dict, results: dict[str, dict]) -> list[str]:
    """The defect kinds of one case."""
    found: list[str] = []
    for backend, res in results.items():
        if res.get("crash"):
            found.append(f"{backend}:crash")
            continue
        if res.get("hang"):
            found.append(f"{backend}:hang")
            continue
        if not res["ok"] and not res.get("inside", False):
            found.append(f"{backend}:outside_hierarchy")
        if ref["ok"]:
            if res["ok"]:
                if res["shape"] != ref["shape"] or res["tensor"] != ref["tensor"]:
                    found.append(f"{backend}:mismatch")
            elif UNSUPPORTED_MARK in res.get("msg", ""):
                found.append(f"{backend}:refusal_unsupported")
            else:
                found.append(f"{backend}:refusal")
        elif res["ok"]:
            found.append(f"{backend}:tensor_where_pillow_raised")
    py, rs = results.get("python"), results.get("rust")
    if py and rs and not py.get("crash") and not rs.get("crash") and not py.get("hang") and not rs.get("hang"):
        if not py["ok"] and not rs["ok"] and py["cls"] != rs["cls"]:
            found.append("error_class_disagreement")
        if py["ok"] and rs["ok"] and py["top1"] != rs["top1"]:
            found.append("class_disagreement")
    return found


def _summary(res: dict) -> str:
    if res.get("ok"):
        return "tensor"
    return f"{res.get('cls')}: {res.get('msg', '')[:160]}"


def run_campaign(
    seed: int,
    cases: int | None = None,
    minutes: float | None = None,
    out: Path | None = None,
    backends: tuple[str, ...] = ("python", "rust"),
    timeout: float = CASE_TIMEOUT_S,
    progress: Callable[[Counts], None] | None = None,
    keep_all: bool = False,
    formats: tuple[str, ...] = FORMATS,
    jobs: int = 1,
) -> Counts:
    """Run the campaign; ``jobs`` independent worker triples (reference, python, rust) take
    cases in turn. The cases themselves (case number -> bytes) depend on ``seed`` only."""
    if cases is None and minutes is None:
        cases = 1000
    rng = random.Random(seed)
    seeds = {f: v for f, v in make_seeds(rng).items() if f in formats}
    lock = threading.Lock()
    counts = Counts()
    counts.per_backend = {b: {d: 0 for d in DEFECTS} for b in backends}
    deadline = time.monotonic() + 60 * minutes if minutes is not None else None
    plan = [(fmt, name, data, []) for fmt in seeds for name, data in seeds[fmt]]  # seeds as they are first
    rng.shuffle(plan)
    issued = 0
    failure: list[BaseException] = []

    def next_case() -> tuple[int, str, str, bytes, list[str]] | None:
        nonlocal issued
        with lock:
            if failure or (cases is not None and issued >= cases):
                return None
            if deadline is not None and time.monotonic() >= deadline:
                return None
            if plan:
                fmt, name, data, steps = plan.pop(0)
            else:
                fmt = rng.choice(list(seeds))
                name, base = rng.choice(seeds[fmt])
                data, steps = mutate(fmt, base, [d for _, d in seeds[fmt]], rng)
            issued += 1
            return issued, fmt, name, data, steps

    def record(number: int, fmt: str, name: str, data: bytes, steps: list[str], ref: dict, results: dict) -> None:
        counts.cases += 1
        counts.by_format[fmt] = counts.by_format.get(fmt, 0) + 1
        if ref.get("crash") or ref.get("hang"):
            counts.reference_crash_or_hang += 1
            return
        if ref["ok"]:
            counts.pillow_decodes += 1
        else:
            counts.pillow_raises += 1
        found = classify(ref, results)
        for kind in found:
            if ":" in kind:
                b, d = kind.split(":")
                counts.per_backend[b][d] += 1
            elif kind == "error_class_disagreement":
                counts.error_class_disagreement += 1
            else:
                counts.class_disagreement += 1
        if log is not None and (found or keep_all):
            case_id = f"{seed}-{number:06d}"
            kinds = [k.replace(":", "-") for k in found] or ["ok"]
            folder = out / kinds[0]
            folder.mkdir(exist_ok=True)
            (folder / f"{case_id}.{EXTENSIONS[fmt]}").write_bytes(data)
            entry = {
                "id": case_id,
                "format": fmt,
                "seed_file": name,
                "mutations": steps,
                "defects": found,
                "pillow": _summary(ref),
                **{b: _summary(r) for b, r in results.items()},
                "file": f"{kinds[0]}/{case_id}.{EXTENSIONS[fmt]}",
            }
            log.write(json.dumps(entry) + "\n")
            log.flush()
        if progress is not None and counts.cases % 200 == 0:
            progress(counts)

    def job(workers: dict[str, Worker]) -> None:
        try:
            while (case := next_case()) is not None:
                number, fmt, name, data, steps = case
                started = time.monotonic()
                ref = workers["reference"].run(data, timeout)
                # A backend hangs when it runs past the timeout and far longer than Pillow
                # took (a valid 150 M-pixel image takes seconds on a loaded VM: not a hang).
                limit = max(timeout, HANG_FACTOR * (time.monotonic() - started))
                results = {}
                if not (ref.get("crash") or ref.get("hang")):
                    results = {b: workers[b].run(data, limit) for b in backends}
                with lock:
                    record(number, fmt, name, data, steps, ref, results)
        except BaseException as exc:  # noqa: BLE001 -- re-raised by the main thread
            with lock:
                failure.append(exc)

    log = None
    with tempfile.TemporaryDirectory(prefix="fuzz_images_") as tmp:
        model = str(build_model(Path(tmp) / "fuzz.onnx", seed))
        triples: list[dict[str, Worker]] = []
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            log = open(out / "cases.jsonl", "a")
        try:
            for _ in range(max(1, jobs)):
                triple = {"reference": Worker("reference", model)}
                for b in backends:
                    triple[b] = Worker(b, model)
                triples.append(triple)
            threads = [threading.Thread(target=job, args=(t,), daemon=True) for t in triples]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if failure:
                raise failure[0]
        finally:
            if log is not None:
                log.close()
            for triple in triples:
                for w in triple.values():
                    w.close()
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: a random one, printed)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--cases", type=int, default=None, help="number of cases (default 1000)")
    group.add_argument("--minutes", type=float, default=None, help="run for this long instead")
    parser.add_argument("--out", type=Path, default=Path("fuzz_out"), help="folder for defective cases and counts")
    parser.add_argument("--backends", default="python,rust", help="comma-separated backends to test")
    parser.add_argument("--timeout", type=float, default=CASE_TIMEOUT_S, help="seconds before a case is a hang")
    parser.add_argument("--keep-all", action="store_true", help="keep every case, not only defective ones")
    parser.add_argument("--formats", default=",".join(FORMATS), help="comma-separated formats to fuzz")
    parser.add_argument(
        "--jobs", type=int, default=1, help="independent worker triples running cases side by side (default 1)"
    )
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    print(f"seed {seed}", flush=True)
    start = time.monotonic()

    def progress(c: Counts) -> None:
        print(
            f"[{time.monotonic() - start:7.0f}s] {json.dumps(c.to_dict()['per_backend'])} "
            f"cases={c.cases} decodable={c.pillow_decodes} err_cls={c.error_class_disagreement} "
            f"top1={c.class_disagreement}",
            flush=True,
        )

    counts = run_campaign(
        seed,
        args.cases,
        args.minutes,
        args.out,
        tuple(args.backends.split(",")),
        args.timeout,
        progress,
        args.keep_all,
        tuple(args.formats.split(",")),
        args.jobs,
    )
    result = {"seed": seed, "seconds": round(time.monotonic() - start, 1), **counts.to_dict()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"counts-{seed}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    failed = verdict(counts)
    print("verdict: " + ("FAIL: " + "; ".join(failed) if failed else "pass (no defect, refusals under 0.5 %)"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
