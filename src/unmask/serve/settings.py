"""The server's settings: batching limits, request defaults and the served model's name, validated once."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..planners import parse_planner


def _positive_int(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


@dataclass(frozen=True)
class ServeSettings:
    """How ``unmask serve`` batches and what a request gets when it leaves a field out.

    ``max_batch`` rows share one :func:`unmask.generate` call; the scheduler
    waits at most ``batch_wait_ms`` after a request arrives for compatible ones
    to join it; at most ``queue_limit`` requests wait (more get 503); a request
    not answered within ``timeout_s`` gets 504 and leaves its batch.
    ``max_tokens``, ``block_length`` and ``planner`` are the defaults of the
    request fields of the same names.
    """

    model_name: str = "tiny-arith"
    max_batch: int = 32
    batch_wait_ms: float = 5.0
    queue_limit: int = 256
    timeout_s: float = 60.0
    max_tokens: int = 32
    block_length: int = 32
    planner: str = "dilated"
    compile: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.model_name, str) or not self.model_name:
            raise ValueError(f"model_name must be a non-empty string, got {self.model_name!r}")
        for name in ("max_batch", "queue_limit", "max_tokens", "block_length"):
            _positive_int(name, getattr(self, name))
        for name, low in (("batch_wait_ms", 0.0), ("timeout_s", 1e-3)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value < math.inf:
                raise ValueError(f"{name} must be a finite number >= {low:g}, got {value!r}")
        parse_planner(self.planner)  # a bad default planner is refused before the model is loaded
        if not isinstance(self.compile, bool):
            raise ValueError(f"compile must be True or False, got {self.compile!r}")
