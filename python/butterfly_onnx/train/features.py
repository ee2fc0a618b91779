"""The frozen backbone's features, computed once: the head phase and the linear probe use them.

While the backbone is frozen (eval mode: BatchNorm keeps its pretrained statistics, dropout
off) the input of the classification head does not change from epoch to epoch.  It is computed
once per image (and per augmented view), cached in ``out_dir/features.pt`` under a key of
everything it depends on, and the head is fitted on the cache (:mod:`.epochs`).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import TrainingError
from .checkpoint import atomic_save
from .data import ImageSamples
from .hardware import Precision, to_layout
from .models import classifier_head

__all__ = ["FeatureCache", "cacheable_head", "extract_features", "fit_probe", "cache_key", "probe_head_state"]

CACHE_FILE = "features.pt"
CACHE_FORMAT = "butterfly_onnx.features"


def cacheable_head(model: nn.Module) -> nn.Linear | None:
    """The head when the model's logits are ``head(features)`` with a Linear head (every
    torchvision family except SqueezeNet, whose 1x1-conv head is followed by ReLU + pooling)."""
    _, _, layer = classifier_head(model)
    return layer if isinstance(layer, nn.Linear) else None


@torch.no_grad()
def extract_features(
    model: nn.Module,
    samples: Sequence[tuple[Path, int]],
    transform: Any,
    *,
    batch_size: int,
    device: torch.device,
    precision: Precision,
    workers: int,
    channels_last: bool = False,
    progress_bar: Any = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The head's input for every sample, float32 on the CPU, in sample order, with the model
    in eval mode (the caller restores the mode it needs), computed in ``precision``."""
    head = cacheable_head(model)
    if head is None:
        raise TrainingError(f"{type(model).__name__} has no Linear head: its features cannot be cached")
    captured: list[torch.Tensor] = []
    hook = head.register_forward_pre_hook(lambda _module, inputs: captured.append(inputs[0].detach().float().cpu()))
    model.eval()
    loader: torch.utils.data.DataLoader[Any] = torch.utils.data.DataLoader(
        ImageSamples(samples, transform), batch_size=batch_size, shuffle=False, num_workers=workers
    )
    targets = []
    try:
        for images, target in loader:
            with precision.autocast():
                model(to_layout(images, device, channels_last))
            targets.append(target)
            if progress_bar is not None:
                progress_bar.update(1)
    finally:
        hook.remove()
    if not captured:
        return torch.zeros((0, head.in_features)), torch.zeros((0,), dtype=torch.int64)
    return torch.cat(captured).flatten(1), torch.cat(targets).to(torch.int64)


def cache_key(**parts: Any) -> str:
    """SHA-1 of everything the cached features depend on (JSON of ``parts``; sample files by
    path, size and modification time)."""

    def norm(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [norm(v) for v in value]
        if isinstance(value, dict):
            return {str(k): norm(v) for k, v in value.items()}
        if isinstance(value, Path):
            try:
                st = value.stat()
                return [str(value), st.st_size, st.st_mtime_ns]
            except OSError:
                return [str(value)]
        return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)

    return hashlib.sha1(json.dumps(norm(parts), sort_keys=True).encode()).hexdigest()


class FeatureCache:
    """``{"train": (N*(1+views), F), "train_targets", "val": (M, F), "val_targets"}`` on disk."""

    def __init__(self, out_dir: Path):
        self.path = Path(out_dir) / CACHE_FILE

    def load(self, key: str) -> dict[str, torch.Tensor] | None:
        if not self.path.is_file():
            return None
        try:
            data = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - a damaged cache is recomputed, never fatal
            return None
        if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT or data.get("key") != key:
            return None
        return data["tensors"]

    def save(self, key: str, tensors: dict[str, torch.Tensor]) -> None:
        atomic_save({"format": CACHE_FORMAT, "key": key, "tensors": tensors}, self.path)


def fit_probe(
    train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor, num_classes: int
) -> dict[str, Any]:
    """The linear probe: scikit-learn's ``LogisticRegression`` with its default settings
    (L2, C=1, lbfgs; ``max_iter`` raised to 2000 so it converges) on the frozen features of the
    training images (eval view), scored on the validation images' features."""
    from sklearn.linear_model import LogisticRegression

    from .metrics import topk_accuracy

    started = time.perf_counter()
    x = train_x.double().numpy()
    y = train_y.numpy()
    present = np.unique(y)
    probe = LogisticRegression(max_iter=2000)
    probe.fit(x, y)
    # Full (num_classes, F) weights: sklearn keeps only the classes present (a binary problem
    # has one row); absent classes get -inf-like bias so they are never predicted.
    weight = np.zeros((num_classes, x.shape[1]))
    bias = np.full(num_classes, -1e4)
    if len(present) == 2 and probe.coef_.shape[0] == 1:
        weight[present[0]], weight[present[1]] = -probe.coef_[0] / 2, probe.coef_[0] / 2
        bias[present[0]], bias[present[1]] = -probe.intercept_[0] / 2, probe.intercept_[0] / 2
    else:
        weight[present], bias[present] = probe.coef_, probe.intercept_
    logits = val_x.double().numpy() @ weight.T + bias
    targets = val_y.numpy()
    return {
        "acc1": topk_accuracy(logits, targets, 1),
        "acc5": topk_accuracy(logits, targets, 5),
        "seconds": time.perf_counter() - started,
        "num_train": int(len(y)),
        "weight": torch.from_numpy(weight).float(),
        "bias": torch.from_numpy(bias).float(),
    }


def probe_head_state(head: nn.Linear, probe: dict[str, Any]) -> None:
    """Put the probe's weights into the model's head (in place)."""
    with torch.no_grad():
        head.weight.copy_(probe["weight"].to(head.weight))
        if head.bias is not None:
            head.bias.copy_(probe["bias"].to(head.bias))
