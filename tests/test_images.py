"""Input expansion and Pillow decoding (python/butterfly_onnx/images.py)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from butterfly_onnx.errors import ImageDecodeError, ImageNotFoundError, ImageTooLargeError
from butterfly_onnx.images import decode_rgb, expand_images
from corpus import natural_rgb


@pytest.fixture()
def folder(tmp_path):
    rgb = natural_rgb(40, 50, seed=1)
    for name in ("b.JPG", "a.png", "c.webp", "d.TIFF"):
        Image.fromarray(rgb).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub").mkdir()
    Image.fromarray(rgb).save(tmp_path / "sub" / "e.png")
    return tmp_path


def test_directory_expands_to_sorted_image_files(folder):
    items = expand_images(folder)
    assert [name for name, _ in items] == [str(folder / n) for n in ("a.png", "b.JPG", "c.webp", "d.TIFF")]


def test_glob_expands_to_sorted_matches(folder):
    items = expand_images(str(folder / "*.png")) + expand_images(str(folder / "**" / "*.png"))
    assert [p.name for _, p in items] == ["a.png", "a.png", "e.png"]


def test_kinds_and_lists_keep_order(folder):
    rgb = natural_rgb(10, 12)
    data = (folder / "a.png").read_bytes()
    items = expand_images([str(folder / "a.png"), folder / "b.JPG", data, Image.fromarray(rgb), rgb, folder])
    kinds = [type(payload).__name__ for _, payload in items]
    assert kinds[:5] == ["PosixPath", "PosixPath", "bytes", "Image", "ndarray"]
    assert len(items) == 9
    assert items[2][0] == "<bytes #2>" and items[4][0] == "<array #4 10x12x3>"


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((4, 4), np.uint8),
        np.zeros((4, 4, 4), np.uint8),
        np.zeros((4, 4, 3), np.float32),
        np.zeros((0, 4, 3), np.uint8),
    ],
    ids=["2d", "rgba", "float", "empty"],
)
def test_malformed_arrays_are_refused(bad):
    with pytest.raises(ImageDecodeError, match="array #0"):
        expand_images(bad)


def test_non_contiguous_array_is_made_contiguous():
    rgb = natural_rgb(20, 30)[:, ::2]
    ((_, payload),) = expand_images(rgb)
    assert payload.flags.c_contiguous and np.array_equal(payload, rgb)


def test_missing_path_and_empty_matches(tmp_path):
    # a missing file is kept as an item and fails when decoded (so on_error="skip" can skip it)
    (item,) = expand_images(tmp_path / "nope.jpg")
    with pytest.raises(ImageNotFoundError, match="nope.jpg"):
        decode_rgb(item, None)
    with pytest.raises(ImageNotFoundError, match=r"\*.gif"):
        expand_images(str(tmp_path / "*.gif"))
    with pytest.raises(ImageNotFoundError, match="no image files"):
        expand_images(tmp_path)


def test_wrong_type():
    with pytest.raises(TypeError, match="image #0"):
        expand_images(42)


def test_decode_is_open_convert_rgb(tmp_path):
    for mode in ("RGB", "RGBA", "L", "P", "CMYK", "I;16"):
        src = Image.fromarray(natural_rgb(30, 40)).convert(mode if mode != "I;16" else "L")
        if mode == "I;16":
            src = Image.fromarray(np.asarray(src).astype(np.uint16) * 4)
        path = tmp_path / f"img_{mode.replace(';', '')}.{'jpg' if mode == 'CMYK' else 'png'}"
        src.save(path)
        with Image.open(path) as img:
            want = np.asarray(img.convert("RGB"))
        got = np.asarray(decode_rgb((str(path), path), None))
        assert np.array_equal(got, want), mode
        got_bytes = np.asarray(decode_rgb(("b", path.read_bytes()), None))
        assert np.array_equal(got_bytes, want), mode


def test_decode_errors_name_the_source(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "text.jpg"
    text.write_text("hello, I am not a JPEG\n")
    buffer = io.BytesIO()
    Image.fromarray(natural_rgb(200, 300)).save(buffer, "JPEG", quality=90)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    for path in (empty, text, truncated):
        with pytest.raises(ImageDecodeError, match=path.name) as info:
            decode_rgb((str(path), path), None)
        assert info.value.source == str(path)
    with pytest.raises(ImageDecodeError, match="<bytes #3>"):
        decode_rgb(("<bytes #3>", b""), None)
    with pytest.raises(ImageNotFoundError, match="gone.png"):
        decode_rgb((str(tmp_path / "gone.png"), tmp_path / "gone.png"), None)


def test_pixel_limit_is_checked_before_decoding(tmp_path):
    path = tmp_path / "big.png"
    Image.fromarray(natural_rgb(100, 100)).save(path)
    with pytest.raises(ImageTooLargeError, match="10000 pixels"):
        decode_rgb((str(path), path), 9999)
    assert decode_rgb((str(path), path), 10000).size == (100, 100)


def test_pixel_limit_reads_only_the_header(tmp_path):
    """A PNG whose header claims 3000x3000 but holds one row of pixel data: the limit fires
    from the header alone.  (Without a limit Pillow decodes it, missing rows black.)"""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path = tmp_path / "header_only.png"
    ihdr = struct.pack(">IIBBBBB", 3000, 3000, 8, 2, 0, 0, 0)  # 8-bit RGB
    idat = zlib.compress(b"\x00" + bytes(3000 * 3))  # one row
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    with pytest.raises(ImageTooLargeError, match="header_only.png"):
        decode_rgb((str(path), path), 1_000_000)
    assert decode_rgb((str(path), path), None).size == (3000, 3000)
