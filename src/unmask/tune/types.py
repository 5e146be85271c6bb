"""The tuner's settings and results: :class:`TuneConfig`, :class:`Score`, :class:`TuneResult`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..config import CACHE_MODES, GenerationConfig
from ..planners import Planner
from .candidates import Candidate


@dataclass(frozen=True)
class TuneConfig:
    budget: int  # calls per block
    gen_length: int = 32
    block_length: int = 32
    temperature: float = 0.0
    seed: int = 0
    batch_size: int = 256
    cache: str = "none"
    max_distance: int = 8  # pairs up to this far apart (pair JS)
    rescore: int = 4  # greedy: at most this many near-best candidates get their likelihood computed
    screen: int = 32  # adaptive candidates run first on this many prompts; clearly over budget there, they stop
    search: int | None = None  # schedules scored by the label-free search (None: 200 when sampling, 0 when greedy)

    def __post_init__(self) -> None:
        GenerationConfig(gen_length=self.gen_length, block_length=self.block_length,
                         sampling={"temperature": self.temperature}, cache=self.cache, seed=self.seed)  # the shared checks
        for name in ("budget", "batch_size", "max_distance", "rescore", "screen"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.budget > self.block_length:
            raise ValueError(f"budget must be <= block_length={self.block_length} calls per block, got {self.budget}")
        if self.cache not in CACHE_MODES:
            raise ValueError(f"cache must be one of {CACHE_MODES}, got {self.cache!r}")
        if self.search is not None and (not isinstance(self.search, int) or isinstance(self.search, bool) or self.search < 0):
            raise ValueError(f"search must be an int >= 0 (schedules to score) or None (automatic), got {self.search!r}")

    @property
    def sampled(self) -> bool:
        """True when decoding samples (temperature > 0), False for greedy decoding."""
        return self.temperature > 0

    @property
    def search_evals(self) -> int:
        """Schedules the search may score: ``search``, or by default 200 when sampling and 0 when greedy."""
        return self.search if self.search is not None else (200 if self.sampled else 0)

    @property
    def num_blocks(self) -> int:
        return self.gen_length // self.block_length

    def generation(self, planner: Planner | str) -> GenerationConfig:
        return GenerationConfig(gen_length=self.gen_length, block_length=self.block_length, planner=planner,
                                sampling={"temperature": self.temperature}, cache=self.cache,
                                early_exit=not self.sampled, seed=self.seed)


@dataclass(frozen=True)
class Decode:
    generated: Tensor  # [N, G]
    token_logq: Tensor  # [N, G]
    calls_per_block: Tensor  # [N] float: mean calls per block over the blocks the row ran
    calls_max: Tensor  # [N] long: the most calls the row spent in one block
    seconds: float

    def rows(self, index: Sequence[int]) -> Decode:
        """The decode of the rows ``index`` only."""
        i = torch.as_tensor(list(index), dtype=torch.long)
        return Decode(self.generated[i], self.token_logq[i], self.calls_per_block[i], self.calls_max[i], self.seconds)


@dataclass
class Score:
    candidate: Candidate
    calls: float  # mean calls per block on the calibration set
    calls_max: int  # the most calls any row spent in one block (a batch waits for its slowest row)
    eligible: bool
    agreement: float | None = None  # greedy
    loglik: float | None = None  # greedy: mean (log p(output) - log p(reference)) per token; sampling: log p per token
    kl: float | None = None  # sampling: self KL per token
    kl_se: float | None = None
    kl_status: str | None = None  # "exact", "upper bound" or "biased"
    js: float | None = None  # sampling: pair JS against the reference
    seconds: float = 0.0
    screened: int | None = None  # over budget on the first ``screened`` prompts: not run on the rest


@dataclass
class TuneResult:
    config: TuneConfig
    scores: list[Score]
    winner: Score
    report: Score  # the winner scored on the report prompts
    n_calibration: int
    n_report: int
    js_floor: float | None = None
    seconds: float = 0.0  # this budget's own work
    reference_seconds: float = 0.0  # the one-token-per-call reference decodes (shared by every budget of a run)
    files: list = field(default_factory=list)

    @property
    def spec(self) -> str:
        return self.winner.candidate.spec
