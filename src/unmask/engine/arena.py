"""The engine's settings, and the size of its key/value arena from a memory budget.

The arena is one static key/value store of ``slots`` rows of ``max_length``
canvas columns (plus a scratch column), allocated once. Its size comes from
``kv_memory``, like vLLM's ``gpu_memory_utilization``: a fraction of the
device memory that is free once the weights are loaded, or a number of bytes;
``kv_slots`` sets the slot count directly. A cached request needs one slot per
row (two with guidance), and waits while none is free.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..denoiser import Denoiser, TokenSpec

DEFAULT_CPU_BYTES = 256 << 20  # 256 MiB on the CPU
DEFAULT_FRACTION = 0.5  # half the free device memory on a GPU
MAX_SLOT_LENGTH = 2048  # default columns per slot when the model allows more
MAX_SLOTS = 1024
CPU_PAD_BUDGET = 1.3  # on a CPU a call's time grows with its columns: rows of similar lengths share a call


def parse_memory(value: str) -> float | int:
    """``"0.4"`` (a fraction of free device memory), ``"8GiB"``/``"512MiB"``/``"1e9"`` (bytes)."""
    text = value.strip()
    units = {"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "kb": 10**3, "mb": 10**6, "gb": 10**9, "b": 1}
    for unit, scale in units.items():
        if text.lower().endswith(unit):
            number = text[: -len(unit)].strip()
            try:
                return int(float(number) * scale)
            except ValueError:
                break
    else:
        try:
            number_f = float(text)
        except ValueError:
            number_f = float("nan")
        if 0 < number_f <= 1:
            return number_f
        if number_f > 1 and number_f == int(number_f):
            return int(number_f)
    raise ValueError(f"kv_memory must be a fraction of free device memory in (0, 1] or a size such as 8GiB, "
                     f"512MiB or 1000000000 (bytes), got {value!r}")


@dataclass(frozen=True)
class EngineConfig:
    """How the engine batches and caches.

    ``max_rows``: rows (guidance twins counted) in one denoiser call.
    ``kv_memory``: the arena's budget, a fraction in (0, 1] of free device
    memory or bytes (None: half the free GPU memory on CUDA, 256 MiB on CPU).
    ``kv_slots``: the arena's slot count (overrides ``kv_memory``).
    ``max_length``: canvas columns per slot (None: the model's maximum
    length, at most 2048). ``compile``: run the compiled runner.
    ``pad_budget``: split a step's rows of a whole-canvas call kind into
    calls of similar lengths, each padded to at most this many times its rows'
    own columns (None: one call per kind, the best on a GPU, where a call's time
    hardly grows with its columns; ``"auto"``: 1.3 on a CPU, where it pays,
    None elsewhere).
    """

    max_rows: int = 64
    kv_memory: float | int | None = None
    kv_slots: int | None = None
    max_length: int | None = None
    compile: bool = False
    pad_budget: float | str | None = "auto"

    def __post_init__(self) -> None:
        for name in ("max_rows", "kv_slots", "max_length"):
            value = getattr(self, name)
            if value is None and name != "max_rows":
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int{'' if name == 'max_rows' else ' or None'}, got {value!r}")
        m = self.kv_memory
        if m is not None and (isinstance(m, bool) or not isinstance(m, (int, float)) or
                              (isinstance(m, float) and not 0 < m <= 1) or (isinstance(m, int) and m < 1)):
            raise ValueError(f"kv_memory must be a fraction in (0, 1] (float) or a number of bytes (int >= 1), got {m!r}")
        if not isinstance(self.compile, bool):
            raise ValueError(f"compile must be True or False, got {self.compile!r}")
        b = self.pad_budget
        if b is not None and b != "auto" and (isinstance(b, bool) or not isinstance(b, (int, float))
                                              or not 1 <= b < float("inf")):
            raise ValueError(f"pad_budget must be a finite number >= 1, 'auto' or None, got {b!r}")

    def padding(self, device: torch.device) -> float | None:
        """The pad budget in force on ``device``."""
        if self.pad_budget == "auto":
            return CPU_PAD_BUDGET if device.type == "cpu" else None
        return self.pad_budget  # type: ignore[return-value]

    def slot_length(self, spec: TokenSpec) -> int:
        """Canvas columns per arena slot."""
        if self.max_length is not None:
            if spec.max_length is not None and self.max_length > spec.max_length:
                raise ValueError(f"max_length={self.max_length} is longer than the model's maximum length "
                                 f"{spec.max_length}")
            return self.max_length
        return min(spec.max_length or MAX_SLOT_LENGTH, MAX_SLOT_LENGTH)


def arena_size(model: Denoiser, config: EngineConfig, length: int) -> int:
    """Slots of ``length`` columns that fit the budget (at least one; at most 1024)."""
    if config.kv_slots is not None:
        return config.kv_slots
    per_slot = model.arena_slot_bytes(length)  # type: ignore[attr-defined]
    if not per_slot:
        return config.max_rows
    budget = config.kv_memory
    device = model.device
    if budget is None:
        budget = DEFAULT_FRACTION if device.type == "cuda" else DEFAULT_CPU_BYTES
    if isinstance(budget, float):
        if device.type != "cuda":
            raise ValueError("kv_memory as a fraction of free memory needs a CUDA device; give bytes on the CPU")
        free, _ = torch.cuda.mem_get_info(device)
        budget = int(free * budget)
    slots = int(budget) // per_slot
    if slots < 1:
        raise ValueError(f"kv_memory={config.kv_memory!r} holds no slot: one slot of {length} columns takes "
                         f"{per_slot} bytes; raise kv_memory or lower max_length")
    return min(slots, MAX_SLOTS)
