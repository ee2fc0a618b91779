"""Checkpoints: a plain dict of tensors and JSON-serialisable config, written atomically and
loadable with ``torch.load(weights_only=True)`` (no pickled classes, no code execution)."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..contract import PreprocessSpec
from ..errors import ArchitectureError, ContractError, TrainingError

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "save_checkpoint",
    "load_checkpoint",
    "read_checkpoint",
    "remove_stale_temps",
]

CHECKPOINT_FORMAT = "butterfly_onnx.checkpoint"
CHECKPOINT_VERSION = 1
_REQUIRED_CONFIG = ("arch", "num_classes", "labels", "weights", "preprocess", "metrics", "epoch", "train_config")


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def save_checkpoint(path: str | os.PathLike, model: nn.Module, config: dict[str, Any], **extra: Any) -> Path:
    """Write ``{"format", "format_version", "model_state", "config", **extra}`` to ``path``
    atomically (a temporary file in the same folder, then ``os.replace``).

    ``config`` needs the keys arch, num_classes, labels, weights, preprocess (a dict or a
    PreprocessSpec), metrics, epoch, train_config and must be JSON-serialisable.  ``extra``
    carries the optional resume state (optimizer_state, scheduler_state, scaler_state,
    rng_state, history)."""
    path = Path(path)
    config = dict(config)
    if isinstance(config.get("preprocess"), PreprocessSpec):
        config["preprocess"] = config["preprocess"].to_dict()
    missing = [key for key in _REQUIRED_CONFIG if key not in config]
    if missing:
        raise TrainingError(f"checkpoint config for {path} lacks {missing}")
    try:
        # A JSON round trip leaves only plain types (str subclasses such as torch's TorchVersion
        # would not pass weights_only=True loading).
        config = json.loads(json.dumps(config))
    except (TypeError, ValueError) as exc:
        raise TrainingError(f"checkpoint config for {path} is not JSON-serialisable: {exc}") from None
    state = {k: v.detach().cpu() for k, v in _unwrap(model).state_dict().items()}
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "model_state": state,
        "config": config,
        **extra,
    }
    atomic_save(payload, path)
    return path


def atomic_save(payload: Any, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, fsynced, then ``os.replace``d:
    a crash never leaves a half-written file.  The temporary file is removed when the save
    fails or is interrupted (Ctrl-C); one left by a killed process is removed by the next
    save into the folder (:func:`remove_stale_temps`).  A failed save is a TrainingError
    naming the file and the cause ("No space left on device"), not torch's internal one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent)
    # The writer's pid in the name tells a killed run's leftover from a save in progress.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, Exception):
            raise TrainingError(f"cannot save {path}: {_cause(exc)}") from exc
        raise  # KeyboardInterrupt, SystemExit: as they are, the temporary file gone


#: The suffix of :func:`atomic_save`'s temporary files (``.<name>.<pid>.<8 random>.butterfly.tmp``):
#: distinctive, so that :func:`remove_stale_temps` never takes someone else's file for one.
TEMP_SUFFIX = ".butterfly.tmp"
_TEMP_NAME = re.compile(r"^\..+\.(?P<pid>\d+)\.[a-z0-9_]{8}" + re.escape(TEMP_SUFFIX) + "$")


def _cause(exc: BaseException) -> str:
    """The operating system's reason behind a failed write: torch.save reports a full disk as
    its own RuntimeError ("unexpected pos ...") with the OSError as its context."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError):
            return seen.strerror or str(seen)
        seen = seen.__cause__ or seen.__context__
    return str(exc) or type(exc).__name__


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: someone else's live process
        return True
    return True


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that :func:`atomic_save` processes no longer running left
    in ``folder`` (a run killed mid-save); returns what was removed.  A save in progress (its
    process alive) is left alone."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(os.fspath(folder)))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP_NAME.match(entry.name)
        if match is None or not entry.is_file(follow_symlinks=False) or _alive(int(match["pid"])):
            continue
        try:
            os.unlink(entry.path)
            removed.append(Path(entry.path))
        except FileNotFoundError:
            pass
    return removed


def read_checkpoint(path: str | os.PathLike, *, map_location: Any = "cpu") -> dict[str, Any]:
    """The raw checkpoint dict, validated; bad files raise TrainingError naming the path."""
    path = Path(path)
    remove_stale_temps(path.parent)  # a resumed run starts here: a killed run's leftovers go
    if not path.is_file():
        raise TrainingError(f"checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise TrainingError(f"{path} is not a readable butterfly_onnx checkpoint: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise TrainingError(f"{path} is not a butterfly_onnx checkpoint (no format {CHECKPOINT_FORMAT!r})")
    if data.get("format_version") != CHECKPOINT_VERSION:
        raise TrainingError(
            f"{path}: checkpoint format_version {data.get('format_version')!r} is not supported "
            f"(this butterfly_onnx reads {CHECKPOINT_VERSION})"
        )
    config = data.get("config")
    if not isinstance(config, dict) or any(key not in config for key in _REQUIRED_CONFIG):
        raise TrainingError(f"{path}: checkpoint config lacks some of {list(_REQUIRED_CONFIG)}")
    if not isinstance(data.get("model_state"), dict):
        raise TrainingError(f"{path}: checkpoint has no model_state")
    labels = config["labels"]
    if not isinstance(labels, list) or len(labels) != config["num_classes"]:
        raise TrainingError(f"{path}: checkpoint has {config['num_classes']} classes but labels {labels!r}")
    try:
        PreprocessSpec.from_dict(config["preprocess"])
    except ContractError as exc:
        raise TrainingError(f"{path}: checkpoint preprocess is invalid: {exc}") from None
    return data


def load_checkpoint(path: str | os.PathLike, *, map_location: Any = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """The model (built with ``build_model(arch, weights=None, num_classes=...)``, state loaded
    strictly, in eval mode) and the checkpoint's config dict."""
    from .models import build_model

    data = read_checkpoint(path, map_location=map_location)
    config = data["config"]
    try:
        model = build_model(config["arch"], weights=None, num_classes=int(config["num_classes"]))
        model.load_state_dict(data["model_state"], strict=True)
    except (ArchitectureError, RuntimeError) as exc:
        raise TrainingError(f"{path}: checkpoint weights do not fit {config['arch']}: {exc}") from None
    if map_location is not None and not callable(map_location) and not isinstance(map_location, dict):
        model = model.to(map_location)
    return model.eval(), config
