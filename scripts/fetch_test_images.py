#!/usr/bin/env python3
"""Fetch the real-world image corpus: Pillow's own test images, for the installed Pillow.

The images are the ``Tests/images`` folder of the Pillow source distribution (sdist) on PyPI
whose version is the installed Pillow's: hundreds of valid (and some deliberately broken)
files of every format this project promises -- JPEG, PNG, APNG, GIF, BMP, WebP, TIFF.
They are read at run time by ``tests/test_real_world_images.py`` and never copied into this
repository (they come under Pillow's licence and their authors' terms, which ship in the
same sdist).

The sdist's URL and SHA-256 come from PyPI's simple index (PEP 691 JSON); the download is
checked against that hash, and only ``Tests/images`` is extracted, into

    $BUTTERFLY_ONNX_CACHE/pillow-<version>-test-images        (when the variable is set)
    ~/.cache/butterfly_onnx/pillow-<version>-test-images      (otherwise)

Running it again is a no-op once the folder is complete.

    python scripts/fetch_test_images.py            # fetch (or confirm) the corpus, print its path
    python scripts/fetch_test_images.py --sdist pillow-13.0.0.tar.gz   # from a local copy
    python scripts/fetch_test_images.py --print-path                   # where it goes; no fetching
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

SIMPLE_INDEX = "https://pypi.org/simple/pillow/"
#: Written last into the corpus folder: its presence means the extraction completed.
MARKER = ".complete.json"


def pillow_version() -> str:
    from PIL import __version__

    return __version__


def cache_root() -> Path:
    env = os.environ.get("BUTTERFLY_ONNX_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "butterfly_onnx"


def corpus_dir(version: str | None = None) -> Path:
    """Where the corpus for ``version`` (default: the installed Pillow's) lives."""
    return cache_root() / f"pillow-{version or pillow_version()}-test-images"


def is_complete(folder: Path) -> bool:
    return (folder / MARKER).is_file()


def sdist_entry(version: str, timeout: float = 60) -> dict:
    """PyPI's record of ``pillow-<version>.tar.gz``: its url and sha256."""
    request = urllib.request.Request(SIMPLE_INDEX, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request, timeout=timeout) as reply:
        index = json.load(reply)
    name = f"pillow-{version}.tar.gz"
    for entry in index.get("files", []):
        if entry.get("filename", "").lower() == name:
            return {"filename": entry["filename"], "url": entry["url"], "sha256": entry["hashes"]["sha256"]}
    raise SystemExit(f"fetch_test_images: PyPI lists no {name} (the sdist of the installed Pillow)")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(url: str, dest: Path, timeout: float = 300) -> None:
    with urllib.request.urlopen(url, timeout=timeout) as reply, open(dest, "wb") as f:
        shutil.copyfileobj(reply, f, 1 << 20)


def _extract_images(sdist: Path, dest: Path) -> int:
    """Extract ``<top>/Tests/images/**`` (regular files and folders only) into ``dest``."""
    count = 0
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar:
            parts = Path(member.name).parts
            if len(parts) < 4 or parts[1:3] != ("Tests", "images") or ".." in parts:
                continue
            if not (member.isfile() or member.isdir()):
                continue  # links and devices are not needed (and not trusted)
            target = dest.joinpath(*parts[3:])
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            assert source is not None
            with source, open(target, "wb") as out:
                shutil.copyfileobj(source, out)
            count += 1
    return count


def fetch(version: str | None = None, sdist: Path | None = None, quiet: bool = False) -> Path:
    """The corpus folder for ``version``, fetched and verified first when it is not complete."""
    version = version or pillow_version()
    dest = corpus_dir(version)
    if is_complete(dest):
        return dest
    entry = sdist_entry(version)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pillow-sdist-", dir=dest.parent) as tmp:
        archive = Path(tmp) / entry["filename"]
        if sdist is not None:
            shutil.copyfile(sdist, archive)
        else:
            if not quiet:
                print(f"fetch_test_images: downloading {entry['url']}", file=sys.stderr)
            _download(entry["url"], archive)
        got = sha256_of(archive)
        if got != entry["sha256"]:
            raise SystemExit(
                f"fetch_test_images: {entry['filename']} has sha256 {got}, PyPI says {entry['sha256']}; not extracted"
            )
        staging = Path(tmp) / "images"
        staging.mkdir()
        count = _extract_images(archive, staging)
        if count == 0:
            raise SystemExit(f"fetch_test_images: {entry['filename']} has no Tests/images folder")
        (staging / MARKER).write_text(
            json.dumps({"pillow": version, "sdist": entry["filename"], "sha256": got, "files": count}) + "\n"
        )
        if dest.exists():  # an interrupted earlier extraction
            shutil.rmtree(dest)
        staging.rename(dest)
    if not quiet:
        print(f"fetch_test_images: {count} files from {entry['filename']} (sha256 verified)", file=sys.stderr)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", help="Pillow version (default: the installed one)")
    parser.add_argument("--sdist", type=Path, help="use this local sdist instead of downloading it (still verified)")
    parser.add_argument("--print-path", action="store_true", help="print where the corpus goes and exit")
    args = parser.parse_args(argv)
    if args.print_path:
        print(corpus_dir(args.version))
        return 0
    print(fetch(args.version, args.sdist))
    return 0


if __name__ == "__main__":
    sys.exit(main())
