"""What callers may pass as images, and how the python backend decodes them.

:func:`expand_images` turns the user's argument into a flat list of ``ImageItem`` =
``(source, payload)``, shared by both backends: ``source`` names the input in every error
message, ``payload`` is a :class:`pathlib.Path`, ``bytes`` (an encoded file), a PIL image, or
a C-contiguous HxWx3 uint8 array.

:func:`decode_rgb` is torchvision's loader, ``Image.open(f).convert("RGB")`` (no EXIF
rotation), with the pixel limit checked from the header before any pixel is decoded and
every failure mapped onto :mod:`butterfly_onnx.errors`.
"""

from __future__ import annotations

import glob
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, JpegImagePlugin

from .contract import PreprocessSpec
from .errors import (
    ImageDecodeError,
    ImageError,
    ImageNotFoundError,
    ImageTooLargeError,
    InvalidArgumentTypeError,
    decode_error,
)
from .preprocess import resized_size

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageItem",
    "expand_images",
    "decode_rgb",
    "jpeg_draft_request",
    "parse_extensions",
    "pixel_limit_default",
    "effective_pixel_limit",
]


def parse_extensions(text: str) -> frozenset[str]:
    """The extensions (with the dot, lowercase) listed in ``text``: one per line, blank lines
    and ``#`` comment lines skipped -- the rule the Rust CLI's reader applies to the same file."""
    lines = (line.strip() for line in text.splitlines())
    return frozenset("." + line.lower() for line in lines if line and not line.startswith("#"))


def _read_extensions() -> frozenset[str]:
    return parse_extensions((Path(__file__).parent / "data" / "image_extensions.txt").read_text(encoding="utf-8"))


#: File extensions a directory is searched for (case-insensitive), with the dot.  The one list
#: (``data/image_extensions.txt``), read by training, inference and the Rust CLI alike.
IMAGE_EXTENSIONS = _read_extensions()

Payload = Path | bytes | np.ndarray | Image.Image
ImageItem = tuple[str, Payload]


def pixel_limit_default() -> int | None:
    """Twice ``PIL.Image.MAX_IMAGE_PIXELS``: where Pillow itself raises DecompressionBombError
    (178,956,970 pixels with Pillow's default); None when it is set to None."""
    limit = Image.MAX_IMAGE_PIXELS
    return None if limit is None else 2 * int(limit)


def effective_pixel_limit(max_image_pixels: int | None) -> int | None:
    """The pixel limit both backends apply for ``Classifier(max_image_pixels=...)``: the lower
    of it and Pillow's own ceiling (:func:`pixel_limit_default`, read now), because the python
    backend decodes with Pillow, which refuses above its ceiling whatever we allow.  None: no
    limit at all (``max_image_pixels=None`` with ``PIL.Image.MAX_IMAGE_PIXELS = None``)."""
    limits = [limit for limit in (max_image_pixels, pixel_limit_default()) if limit is not None]
    return min(limits) if limits else None


def _is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def _expand_path(path: Path) -> list[ImageItem]:
    if path.is_file():
        return [(str(path), path)]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not files:
            raise ImageNotFoundError(
                f"{path}: the directory holds no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})",
                source=str(path),
            )
        return [(str(p), p) for p in files]
    text = str(path)
    if _is_glob(text):
        matches = sorted(Path(m) for m in glob.glob(text, recursive=True))
        files = [m for m in matches if m.is_file()]
        if not files:
            raise ImageNotFoundError(f"{text}: the pattern matches no file", source=text)
        return [(str(p), p) for p in files]
    # A missing file stays an item: the backend reports it (ImageNotFoundError) like any other
    # unreadable image, so on_error="skip" can skip it.
    return [(text, path)]


def _check_array(array: np.ndarray, source: str) -> np.ndarray:
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ImageDecodeError(
            f"{source}: an image array must be HxWx3 uint8 (RGB), got {array.dtype} {array.shape}",
            source=source,
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ImageDecodeError(f"{source}: the image array is empty ({array.shape})", source=source)
    return np.ascontiguousarray(array)


def _expand_one(image: Any, position: int) -> list[ImageItem]:
    if isinstance(image, (str, os.PathLike)):
        return _expand_path(Path(image))
    if isinstance(image, (bytes, bytearray, memoryview)):
        return [(f"<bytes #{position}>", bytes(image))]
    if isinstance(image, Image.Image):
        width, height = image.size
        return [(f"<PIL image #{position} {image.mode} {width}x{height}>", image)]
    if isinstance(image, np.ndarray):
        source = f"<array #{position} {'x'.join(map(str, image.shape))}>"
        return [(source, _check_array(image, source))]
    raise InvalidArgumentTypeError(
        f"image #{position}: expected a path, bytes, a PIL image or an HxWx3 uint8 array, got {type(image).__name__}"
    )


def expand_images(images: Any) -> list[ImageItem]:
    """The flat, ordered list of items for ``images``: one of the accepted kinds or a
    list/tuple of them.  Directories expand to their image files and glob patterns to their
    matching files, each sorted by path.  Raises ImageNotFoundError for an empty directory or
    an unmatched pattern, ImageDecodeError for a malformed array, and TypeError for anything
    else; a path to a missing file is kept (decoding it raises ImageNotFoundError)."""
    if isinstance(images, (list, tuple)):
        items: list[ImageItem] = []
        for position, image in enumerate(images):
            items.extend(_expand_one(image, position))
        return items
    return _expand_one(images, 0)


def _check_pixels(width: int, height: int, max_image_pixels: int | None, source: str) -> None:
    if max_image_pixels is not None and width * height > max_image_pixels:
        raise ImageTooLargeError(
            f"{source}: image of {width}x{height} = {width * height} pixels exceeds the limit of "
            f"{max_image_pixels} pixels (decompression bomb protection)",
            source=source,
        )


def _claimed_formats(stream: Any) -> list[str]:
    """The formats whose signature the image in ``stream`` carries (its first 16 bytes, as
    Image.open reads them) by Pillow's own checks, in Image.open's order; formats without a check
    (Image.open tries them on anything) are left out."""
    stream.seek(0)
    prefix = stream.read(16)
    Image.init()
    formats = []
    for name in Image.ID:
        accept = Image.OPEN[name][1]
        try:
            if accept is not None and accept(prefix):
                formats.append(name)
        except Exception:  # a check that reads past a short prefix
            continue
    return formats


def _unidentified(stream: Any) -> str:
    """Why Pillow opened nothing from ``stream``: the format its signature claims, broken past it,
    or none."""
    formats = _claimed_formats(stream)
    if formats:
        return f"not a {' or '.join(formats)} file Pillow can open"
    return "unknown image format (not one Pillow reads)"


def _header_size(stream: Any) -> tuple[int, int] | None:
    """The size the header of the image in ``stream`` gives, read by the plugin Image.open would
    use but without Image.open's decompression-bomb check, which raises before the size is seen."""
    for name in _claimed_formats(stream):
        stream.seek(0)
        try:
            with Image.OPEN[name][0](stream, "") as image:
                return image.size
        except Exception:  # not this plugin's file after all: try the next, as Image.open does
            continue
    return None


def jpeg_draft_request(width: int, height: int, spec: PreprocessSpec) -> tuple[int, int] | None:
    """The size JPEG draft mode asks Pillow's ``draft("RGB", size)`` for on a ``width x height``
    JPEG: what torchvision's ``Resize(resize_size, max_size=max_size)`` makes of the full image
    (the same scale as ``(resize_size, resize_size)`` when there is no ``max_size``), so the
    drafted image is never smaller than the resize target.  None (no draft) when that size is
    degenerate: the preprocessing then reports the image, as without draft mode."""
    request = resized_size(width, height, spec)
    return request if min(request) >= 1 else None


def decode_rgb(
    item: ImageItem, max_image_pixels: int | None, jpeg_draft: PreprocessSpec | None = None
) -> Image.Image | np.ndarray:
    """The RGB pixels of one item: a PIL image in mode RGB, or the item's own uint8 array.

    Paths and bytes are opened with Pillow, their size checked against ``max_image_pixels``
    from the header, then decoded with ``convert("RGB")`` (truncated files raise, as with
    Pillow's default ``LOAD_TRUNCATED_IMAGES = False``).  In-memory images are taken as they
    are: the limit guards decoding, and they are already decoded.

    ``jpeg_draft``: JPEG draft mode for this preprocessing (not torchvision-exact): a JPEG file
    or bytes gets ``img.draft("RGB", jpeg_draft_request(...))`` before decoding, so libjpeg
    decodes it at 1/2, 1/4 or 1/8 scale when that still covers the resize.  Other formats,
    PIL images and arrays are unaffected.
    """
    source, payload = item
    if isinstance(payload, np.ndarray):
        return payload
    try:
        if isinstance(payload, Image.Image):
            # Image.open is lazy: a truncated file fails only here, as this item's error.
            payload.load()
            return payload if payload.mode == "RGB" else payload.convert("RGB")
        elif isinstance(payload, bytes):
            if not payload:
                raise decode_error(source, "empty file (0 bytes)")
            stream: Any = io.BytesIO(payload)
        else:
            try:
                stream = open(payload, "rb")
            except FileNotFoundError:
                raise ImageNotFoundError(f"{source}: image not found", source=source) from None
            except IsADirectoryError:
                raise decode_error(source, "a directory, not an image file") from None
            except OSError as exc:
                raise decode_error(source, f"cannot read the file: {exc.strerror or exc}") from None
        with stream:
            if not isinstance(payload, bytes) and os.fstat(stream.fileno()).st_size == 0:
                raise decode_error(source, "empty file (0 bytes)")
            try:
                opened = Image.open(stream)
            except Image.UnidentifiedImageError:
                raise decode_error(source, _unidentified(stream)) from None
            except Image.DecompressionBombError:
                # worded as the Rust core words it, with the size Pillow's message leaves out
                size = _header_size(stream)
                if size is not None:
                    _check_pixels(*size, effective_pixel_limit(max_image_pixels), source)
                raise
            with opened as img:
                _check_pixels(img.width, img.height, max_image_pixels, source)
                if jpeg_draft is not None and isinstance(img, JpegImagePlugin.JpegImageFile):
                    request = jpeg_draft_request(img.width, img.height, jpeg_draft)
                    if request is not None:
                        img.draft("RGB", request)
                img.load()  # decodes; raises on truncated data
                # convert("RGB") of an RGB image is a copy: skip it, the pixels are the same
                return img if img.mode == "RGB" else img.convert("RGB")
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"{source}: {exc}", source=source) from None
    except MemoryError:
        raise
    except Exception as exc:  # Pillow's decoders raise OSError, SyntaxError, ValueError, EOFError...
        raise decode_error(source, str(exc)) from exc
