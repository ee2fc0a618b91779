"""What the hardware offers fine-tuning: the cores this process may use, mixed precision, and
the memory format.

- **Cores**: ``os.sched_getaffinity`` (taskset, cpusets) capped by the cgroup's CPU quota
  (``cpu.max`` of cgroup v2, ``cpu.cfs_quota_us`` of v1), which ``os.cpu_count()`` and torch's
  default thread count both ignore.
- **Precision** ``"auto"``: bf16 autocast on a CPU with native bf16 arithmetic (AVX-512 BF16 or
  AMX, read from ``/proc/cpuinfo``'s flags; not for :data:`CPU_BF16_SLOWER_FAMILIES`, measured
  slower in bf16 on such a CPU) and on a CUDA GPU that supports bf16, fp16 autocast
  with a GradScaler on other CUDA GPUs, fp32 otherwise.  Weights stay fp32 (autocast casts per
  operation), so checkpoints and the exported ONNX are fp32 either way.
- **channels_last** ``None``: on for the convolutional families (:data:`CHANNELS_LAST_FAMILIES`;
  measured on EfficientNet, docs/benchmarks.md), off for the others.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "CPUINFO",
    "CHANNELS_LAST_FAMILIES",
    "CPU_BF16_SLOWER_FAMILIES",
    "Precision",
    "cpu_flags",
    "native_bf16_cpu",
    "resolve_precision",
    "usable_cores",
    "use_channels_last",
    "torch_threads",
    "to_layout",
]

#: Where the CPU's feature flags are read (a test points it at a fake file).
CPUINFO = Path("/proc/cpuinfo")
#: cgroup files holding the CPU quota (v2, then v1's pair).
CGROUP_V2 = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1 = (Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"), Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us"))

#: The CPU flags that mean native bf16 arithmetic (AVX-512 BF16 dot products, AMX tiles).
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})

#: Architecture name prefixes whose CPU training step is slower in bf16 autocast than in fp32,
#: even on a CPU with native bf16: "auto" keeps them fp32 there.  Measured (docs/benchmarks.md,
#: "Training"): MobileNetV3-Small (hard-swish, squeeze-and-excitation, convolutions so small that
#: the casts cost more than the bf16 arithmetic saves: 13.8 ms/image against fp32's 9.2, both
#: channels_last).  MobileNetV3-Large breaks even there (30.4 against 29.3) and gains in feature
#: caching (2.1x), so it keeps bf16.
CPU_BF16_SLOWER_FAMILIES = ("mobilenet_v3_small",)

#: Architecture name prefixes trained in channels_last by default: convolutional families, whose
#: oneDNN convolutions run NHWC natively.  Measured (docs/benchmarks.md, "Training"), fp32 training
#: step on the 2-core EPYC: EfficientNet (Lite0: 1.8x), ResNet (1.07x), MobileNetV3 (1.43x),
#: RegNet (1.34x), DenseNet (1.16x), ShuffleNetV2 (1.15x), MnasNet (1.69x), ResNeXt (1.25x), Wide
#: ResNet (1.09x); ConvNeXt breaks even (0.97-1.05x: its blocks permute to channels-last anyway).
#: Transformers (vit_, swin_, maxvit_) and the rest keep the default layout.
CHANNELS_LAST_FAMILIES = (
    "efficientnet",
    "mobilenet",
    "resnet",
    "resnext",
    "wide_resnet",
    "regnet",
    "convnext",
    "mnasnet",
    "shufflenet",
    "densenet",
)


def cpu_flags(path: Path | None = None) -> frozenset[str]:
    """The ``flags`` of ``/proc/cpuinfo`` (empty where there is none: not Linux, or a sandbox)."""
    try:
        text = (path or CPUINFO).read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def native_bf16_cpu(flags: frozenset[str] | None = None) -> bool:
    """True when the CPU computes in bf16 natively (AVX-512 BF16 or AMX-BF16)."""
    return bool((cpu_flags() if flags is None else flags) & BF16_FLAGS)


def _cgroup_quota() -> float | None:
    """CPUs the cgroup's quota allows (a fraction is rounded up), or None without a quota."""
    try:
        quota, _, period = CGROUP_V2.read_text().partition(" ")
        if quota.strip() != "max":
            return float(quota) / float(period)
        return None
    except (OSError, ValueError):
        pass
    try:
        quota_v1 = float(CGROUP_V1[0].read_text())
        period_v1 = float(CGROUP_V1[1].read_text())
    except (OSError, ValueError):
        return None
    return quota_v1 / period_v1 if quota_v1 > 0 and period_v1 > 0 else None


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity, capped by the cgroup's quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores)


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run with ``count`` torch threads (None: leave it); the caller's setting is restored."""
    previous = torch.get_num_threads()
    if count is not None and count != previous:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)


@dataclass(frozen=True)
class Precision:
    """A resolved precision: ``name`` is "fp32", "bf16" or "fp16" on ``device_type``."""

    name: str
    device_type: str

    @property
    def dtype(self) -> torch.dtype:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name, torch.float32)

    @property
    def enabled(self) -> bool:
        return self.name != "fp32"

    @property
    def scaled(self) -> bool:
        """fp16 needs loss scaling (its range underflows small gradients); bf16 does not."""
        return self.name == "fp16"

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Autocast to ``dtype``; fp32 is no context at all (torch warns on a CPU fp32 autocast)."""
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)


def resolve_precision(
    precision: str, device: torch.device, flags: frozenset[str] | None = None, arch: str = ""
) -> Precision:
    """``precision`` for ``device``: an explicit "fp32"/"bf16"/"fp16" as asked; "auto" as the
    module docstring says, except that the families of :data:`CPU_BF16_SLOWER_FAMILIES` stay fp32
    on a CPU (``flags`` stands in for the CPU's flags in tests)."""
    if precision != "auto":
        return Precision(precision, device.type)
    if device.type == "cuda":
        return Precision("bf16" if torch.cuda.is_bf16_supported() else "fp16", "cuda")
    if device.type == "cpu" and native_bf16_cpu(flags) and not arch.startswith(CPU_BF16_SLOWER_FAMILIES):
        return Precision("bf16", "cpu")
    return Precision("fp32", device.type)


def use_channels_last(choice: bool | None, arch: str, device: torch.device) -> bool:
    """``choice`` when given; else on for the measured families (MPS keeps NCHW: its kernels are
    NCHW-first)."""
    if choice is not None:
        return choice
    return device.type != "mps" and arch.startswith(CHANNELS_LAST_FAMILIES)


def to_layout(images: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """A batch on ``device`` in the model's memory format."""
    images = images.to(device, non_blocking=True)
    return images.contiguous(memory_format=torch.channels_last) if channels_last else images
