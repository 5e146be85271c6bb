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
        if not isinstance(self.model_name, str) or not self.model_name.strip():
            raise ValueError(f"model_name must be a non-empty string, got {self.model_name!r}")
        for name in ("max_batch", "queue_limit", "max_tokens", "block_length"):
            _positive_int(name, getattr(self, name))
        for name, low in (("batch_wait_ms", 0.0), ("timeout_s", 1e-3)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value < math.inf:
                raise ValueError(f"{name} must be a finite number >= {low:g}, got {value!r}")
        if not isinstance(self.compile, bool):
            raise ValueError(f"compile must be True or False, got {self.compile!r}")
        planner = parse_planner(self.planner)  # a bad default planner is refused before the model is loaded
        try:  # and one that cannot run the default request (e.g. interleave(k=64) on blocks of 32)
            planner.check(self.default_gen_length, self.default_block_length)
        except ValueError as err:
            raise ValueError(f"planner {self.planner!r} cannot run the default request (max_tokens={self.max_tokens}, "
                             f"block_length={self.default_block_length}): {err}") from None

    @property
    def default_block_length(self) -> int:
        """The block length of a request that gives none (a default max_tokens shorter than a block is one block)."""
        return min(self.block_length, self.max_tokens)

    @property
    def default_gen_length(self) -> int:
        """The canvas a request without ``max_tokens`` needs: the default max_tokens in whole blocks."""
        block = self.default_block_length
        return -(-self.max_tokens // block) * block

    def check_model(self, max_length: int | None, prompt_tokens: int = 1) -> None:
        """Refuse, at start-up, a default ``max_tokens`` whose canvas leaves no room for a prompt of
        ``prompt_tokens`` (one token, plus a BOS where the model adds one) within the model's ``max_length``;
        otherwise every request without ``max_tokens`` would fail."""
        if max_length is None or self.default_gen_length + prompt_tokens <= max_length:
            return
        room = max_length - prompt_tokens
        fits = room if room <= self.block_length else room // self.block_length * self.block_length
        raise ValueError(f"max_tokens: the default {self.max_tokens} needs a canvas of {self.default_gen_length} "
                         f"(whole blocks of {self.default_block_length}), which leaves no room for a prompt of "
                         f"{prompt_tokens} token(s) within the model's maximum length {max_length}; the most that fits "
                         f"is {fits}" if fits >= 1 else f"max_tokens: the model's maximum length {max_length} leaves "
                         f"no room for generation after a prompt of {prompt_tokens} token(s)")
