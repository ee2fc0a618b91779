"""The device and the process group: one process, or DDP under ``torchrun`` (gloo on CPUs,
NCCL on CUDA GPUs, one GPU per process)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch

from ..errors import TrainingError

__all__ = ["Dist", "init_distributed", "resolve_device"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto``: CUDA, else MPS, else the CPU; any other value as ``torch.device`` reads it."""
    if str(device) != "auto":
        try:
            return torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise TrainingError(f"invalid device {device!r}: {exc}") from None
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@dataclass
class Dist:
    """This process's place in the run: ``world`` processes, this one ``rank`` (``local_rank``
    on its machine, of ``local_world``)."""

    world: int = 1
    rank: int = 0
    local_rank: int = 0
    local_world: int = 1
    started_here: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()

    def broadcast(self, value: Any) -> Any:
        if not self.active:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        if not self.active:
            return [value]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, value)
        return out

    def close(self) -> None:
        if self.started_here:
            try:
                torch.distributed.destroy_process_group()
            except Exception:  # noqa: BLE001 - best effort at teardown
                pass


def init_distributed(device: torch.device, timeout_s: float) -> tuple[Dist, torch.device]:
    """DDP when launched by torchrun (WORLD_SIZE > 1): gloo on CPU, NCCL on CUDA, where each
    process takes the GPU of its LOCAL_RANK.  Returns the group and this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), device
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    started = False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
        started = True
    group = Dist(
        world=dist.get_world_size(),
        rank=dist.get_rank(),
        local_rank=local_rank,
        local_world=max(1, local_world),
        started_here=started,
    )
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return group, device
