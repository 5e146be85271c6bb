"""Data parallelism for the lm-eval model: one model copy per process, requests sharded by rank.

Under ``accelerate launch --num_processes N`` (or any launcher that sets
``WORLD_SIZE > 1``), lm-eval shards documents by ``rank`` / ``world_size``,
pads ranks to equal request counts, and gathers per-sample metrics to rank 0
through the hooks below. Collectives go through ``torch.distributed`` (NCCL on
GPUs, gloo on CPU), set up by ``accelerate.Accelerator``.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch



class DataParallel:
    """Rank, world size, device and the collectives lm-eval calls."""

    def __init__(self, device: str | None) -> None:
        self.accelerator: Any | None = None
        launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
        initialised = torch.distributed.is_available() and torch.distributed.is_initialized()
        if launched or initialised:
            from accelerate import Accelerator

            cpu = not torch.cuda.is_available() or (device is not None and device.startswith("cpu"))
            self.accelerator = Accelerator(cpu=cpu)  # cpu: gloo across processes (needs WORLD_SIZE etc., e.g. torchrun)
            self.rank = int(self.accelerator.process_index)
            self.world_size = int(self.accelerator.num_processes)
            self.device = torch.device(self.accelerator.device)
        else:
            from ..models.loading import default_device

            self.rank, self.world_size = 0, 1
            self.device = default_device(device)  # None: cuda if available; an absent CUDA device is an error

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Concatenate ``tensor`` from every rank (lm-eval gathers request counts with it)."""
        if self.accelerator is None or self.world_size == 1:
            return tensor
        return self.accelerator.gather(tensor)

    def gather_object(self, obj: Any, dst: int = 0) -> list[Any] | None:
        """Objects of every rank, on ``dst``; None elsewhere."""
        if self.world_size == 1:
            return [obj]
        result: list[Any] | None = [None] * self.world_size if self.rank == dst else None
        torch.distributed.gather_object(obj, result, dst=dst)
        return result

    def barrier(self) -> None:
        if self.accelerator is not None and self.world_size > 1:
            self.accelerator.wait_for_everyone()


def leave_process_group() -> None:
    """Wait for every rank, then leave the process group (a rank exiting inside it can abort in gloo)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def padding_flags(requests: Sequence[Any]) -> list[bool]:
    """True for the copies lm-eval appends to even out ranks (occurrences beyond an instance's ``repeats``)."""
    seen: Counter[int] = Counter()
    flags = []
    for req in requests:
        seen[id(req)] += 1
        flags.append(seen[id(req)] > (getattr(req, "repeats", None) or 1))
    return flags
