"""Checkpoints: a plain dict of tensors and JSON-serialisable config, written atomically and
loadable with ``torch.load(weights_only=True)`` (no pickled classes, no code execution)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..contract import PreprocessSpec
from ..errors import ArchitectureError, ContractError, TrainingError

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "save_checkpoint", "load_checkpoint", "read_checkpoint"]

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
    a crash never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def read_checkpoint(path: str | os.PathLike, *, map_location: Any = "cpu") -> dict[str, Any]:
    """The raw checkpoint dict, validated; bad files raise TrainingError naming the path."""
    path = Path(path)
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
