"""The generation config: frozen, validated before any compute.

Each rule has one home: planner settings are checked by the planner classes
(and ``make_planner`` for names), sampling settings by :class:`SamplingParams`;
this class checks sizes, their fit with the planner, and the loop's own switches.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .names import CACHE_MODES, SEED_LIMIT
from .planners import Dilated, Planner, parse_planner
from .sampling import SamplingParams


def _positive_int(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")


@dataclass(frozen=True)
class GenerationConfig:
    """How to generate: sizes, planner, sampling, guidance, cache, compilation and stopping.

    ``planner`` may be a :class:`~unmask.planners.Planner` or a spec string such
    as ``"dilated(base=2)"``; ``sampling`` a :class:`SamplingParams` or a dict of
    its fields (``{"temperature": 0.7, "top_p": 0.9}``). Both are parsed here, so
    errors surface before compute.
    """

    gen_length: int = 128
    block_length: int = 32
    planner: Planner | str = field(default_factory=Dilated)
    sampling: SamplingParams | Mapping[str, Any] = field(default_factory=SamplingParams)
    cfg_scale: float = 0.0
    cache: str = "auto"  # auto: "committed" for block-causal models, "none" otherwise (resolved by the engine)
    compile: bool = False  # static shapes, compiled and (on CUDA) replayed as graphs: see NativeDenoiser.compiled
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
        if isinstance(self.sampling, Mapping):
            object.__setattr__(self, "sampling", _from_mapping(SamplingParams, self.sampling, "sampling"))
        if not isinstance(self.sampling, SamplingParams):
            raise ValueError(f"sampling must be a SamplingParams or a dict of its fields, got {type(self.sampling).__name__}")
        if isinstance(self.cfg_scale, bool) or not isinstance(self.cfg_scale, (int, float)) or not 0.0 <= self.cfg_scale < math.inf:
            raise ValueError(f"cfg_scale must be a finite number >= 0 (0 = no guidance), got {self.cfg_scale!r}")
        if self.cache not in CACHE_MODES:
            raise ValueError(f"cache must be one of {CACHE_MODES}, got {self.cache!r}")
        _bool("compile", self.compile)
        _bool("early_exit", self.early_exit)
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        if not isinstance(self.stop, (list, tuple)) or any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError(f"stop must be a sequence of non-empty strings, got {self.stop!r}")
        object.__setattr__(self, "stop", tuple(self.stop))
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)
                                      or not 0 <= self.seed < SEED_LIMIT):
            raise ValueError(f"seed must be an int in [0, 2^63) or None, got {self.seed!r}")

    @property
    def num_blocks(self) -> int:
        return self.gen_length // self.block_length

    @property
    def temperature(self) -> float:
        return self.sampling.temperature  # type: ignore[union-attr]

    @classmethod
    def coerce(cls, config: GenerationConfig | Mapping[str, Any] | None) -> GenerationConfig:
        """``config`` itself, a config built from a dict of its fields, or the defaults for None."""
        if config is None:
            return cls()
        if isinstance(config, Mapping):
            return _from_mapping(cls, config, "config")
        if not isinstance(config, cls):
            raise ValueError(f"config must be a GenerationConfig, a dict of its fields or None, got {type(config).__name__}")
        return config


def _from_mapping(cls: type, values: Mapping[str, Any], what: str) -> Any:
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"{what} has no field(s) {unknown}; its fields are {names}")
    return cls(**values)
