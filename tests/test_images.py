"""Input expansion and Pillow decoding (python/butterfly_onnx/images.py)."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

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


# -- one pixel limit, every way to set it -----------------------------------------------
BOMB = (14_000, 13_000)  # 182,000,000 pixels: just above Pillow's default ceiling
PILLOW_CEILING = 2 * 89_478_485  # 178,956,970


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` grey pixels and whose data stops after a
    few: refused from the header when over the limit, else a decode error (truncated)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def limit_images(tmp_path_factory):
    """(a small real photo of 40x30 = 1,200 pixels, a header-only bomb), and a model."""
    from contract_models import tiny_model

    root = tmp_path_factory.mktemp("pixel_limit")
    Image.fromarray(natural_rgb(30, 40, seed=2)).save(root / "small.png")
    (root / "bomb.png").write_bytes(_png_claiming(*BOMB))
    return tiny_model(root / "model.onnx"), root / "small.png", root / "bomb.png"


NO_LIMIT = None
#: (how it is set, the Classifier keyword or CLI option, PIL.Image.MAX_IMAGE_PIXELS, the limit
#: that must result).  API: both backends apply the lower of the argument and Pillow's ceiling
#: (the python backend decodes with Pillow); CLI: the option is exact, 0 = no limit.
PIXEL_LIMIT_CASES = [
    ("api", "default", 89_478_485, PILLOW_CEILING),
    ("api", None, 89_478_485, PILLOW_CEILING),
    ("api", 1_000, 89_478_485, 1_000),
    ("api", 10**9, 89_478_485, PILLOW_CEILING),
    ("api", "default", 1_000, 2_000),
    ("api", None, 1_000, 2_000),
    ("api", 1_500, 1_000, 1_500),
    ("api", "default", None, NO_LIMIT),
    ("api", None, None, NO_LIMIT),
    ("api", 1_000, None, 1_000),
    ("api", 10**9, None, 10**9),
    ("cli", "default", 89_478_485, PILLOW_CEILING),
    ("cli", 1_000, 89_478_485, 1_000),
    ("cli", 0, 89_478_485, NO_LIMIT),
    ("cli", 10**9, 89_478_485, 10**9),
]


@pytest.mark.parametrize(("way", "setting", "pillow", "limit"), PIXEL_LIMIT_CASES)
@pytest.mark.parametrize("backend", ["python", "rust"])
def test_one_pixel_limit_whatever_the_way_and_the_backend(
    way, setting, pillow, limit, backend, limit_images, monkeypatch, capsys
):
    """Every way to set the decompression-bomb limit means the same on both backends and in
    both commands: the 1,200-pixel photo and the 182,000,000-pixel header are refused
    (ImageTooLargeError, "exceeds" in the message) exactly when above the resulting limit."""
    from butterfly_onnx import Classifier
    from butterfly_onnx.cli import main
    from contract_models import require_backend, run_rust_cli

    require_backend(backend)
    model, small, bomb = limit_images
    expected = {
        small: limit is not None and 1_200 > limit,
        bomb: limit is not None and BOMB[0] * BOMB[1] > limit,
    }
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pillow)  # restored after the test (the CLI sets it)
    refused: dict[Path, bool] = {}
    if way == "api":
        kwargs = {} if setting == "default" else {"max_image_pixels": setting}
        classifier = Classifier(model, backend=backend, on_error="skip", **kwargs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for prediction in classifier.predict([small, bomb]):
                refused[Path(prediction.source)] = isinstance(prediction.error, ImageTooLargeError)
                assert prediction.ok or isinstance(prediction.error, (ImageTooLargeError, ImageDecodeError))
    else:
        option = [] if setting == "default" else ["--max-image-pixels", str(setting)]
        if backend == "python":  # the Python command, on the rust backend too: that is its default
            for command_backend in ("python", "rust"):
                main(
                    [
                        "predict",
                        str(model),
                        str(small),
                        str(bomb),
                        "--json",
                        "--no-progress",
                        "--backend",
                        command_backend,
                        *option,
                    ]
                )
                rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
                got = {Path(r["source"]): "exceeds" in (r["error"] or "") for r in rows}
                refused = refused or got
                assert got == refused, command_backend
        else:
            monkeypatch.undo()  # the Rust command has no Pillow: only the default ceiling
            if pillow != 89_478_485:
                pytest.skip("PIL.Image.MAX_IMAGE_PIXELS does not reach the Rust command")
            code, stdout, stderr = run_rust_cli("predict", model, small, bomb, "--no-progress", *option)
            lines = stderr.splitlines()
            refused = {
                image: any(f"{image}:" in line and "exceeds" in line for line in lines) for image in (small, bomb)
            }
            # exit 1 when some images failed (refused, or the bomb's truncated data), 2 when none
            # produced a result (the CLI's rule)
            failed = [any(f"{image}:" in line for line in lines) for image in (small, bomb)]
            assert code == (2 if all(failed) else 1 if any(failed) else 0), stderr
            assert "panicked" not in stderr, stderr
    assert refused == expected
