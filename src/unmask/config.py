"""The generation config: frozen, validated before any compute."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .planners import Dilated, Planner, parse_planner
from .sampling import SamplingParams

CACHE_MODES = ("none", "prefix", "dual")


def _positive_int(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


@dataclass(frozen=True)
class GenerationConfig:
    """How to generate: sizes, planner, sampling, guidance, cache and stopping.

    ``planner`` may be a :class:`~unmask.planners.Planner` or a spec string such
    as ``"dilated(base=2)"``; it is parsed here so errors surface before compute.
    """

    gen_length: int = 128
    block_length: int = 32
    planner: Planner | str = field(default_factory=Dilated)
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int | None = None
    score_temperature: bool = False  # score on the tempered, truncated distribution (Dream) instead of the clean one
    cfg_scale: float = 0.0
    cache: str = "none"
    early_exit: bool = True  # stop after a block once every row has produced EOS
    stop: tuple[str, ...] = ()  # stop strings, trimmed after decoding
    seed: int | None = None  # base of the per-row seeds when generate() gets none (None: drawn from torch's RNG)

    def __post_init__(self) -> None:
        _positive_int("gen_length", self.gen_length)
        _positive_int("block_length", self.block_length)
        if self.gen_length % self.block_length:
            raise ValueError(
                f"gen_length ({self.gen_length}) must be divisible by block_length ({self.block_length})"
            )
        if isinstance(self.planner, str):
            object.__setattr__(self, "planner", parse_planner(self.planner))
        if not isinstance(self.planner, Planner):
            raise ValueError(f"planner must be a Planner or a spec string, got {type(self.planner).__name__}")
        self.planner.check(self.gen_length, self.block_length)
        if not isinstance(self.temperature, (int, float)) or not 0.0 <= self.temperature < math.inf:
            raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {self.temperature!r}")
        if not isinstance(self.top_p, (int, float)) or not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if self.top_k is not None:
            _positive_int("top_k", self.top_k)
        if not isinstance(self.score_temperature, bool):
            raise ValueError(f"score_temperature must be True or False, got {self.score_temperature!r}")
        if not isinstance(self.cfg_scale, (int, float)) or not 0.0 <= self.cfg_scale < math.inf:
            raise ValueError(f"cfg_scale must be a finite number >= 0 (0 = no guidance), got {self.cfg_scale!r}")
        if self.cache not in CACHE_MODES:
            raise ValueError(f"cache must be one of {CACHE_MODES}, got {self.cache!r}")
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        object.__setattr__(self, "stop", tuple(self.stop))
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0):
            raise ValueError(f"seed must be an int >= 0 or None, got {self.seed!r}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError(f"stop must be a sequence of non-empty strings, got {self.stop!r}")

    @property
    def num_blocks(self) -> int:
        return self.gen_length // self.block_length

    @property
    def sampling(self) -> SamplingParams:
        return SamplingParams(temperature=float(self.temperature), top_p=float(self.top_p), top_k=self.top_k,
                              score_temperature=self.score_temperature)
