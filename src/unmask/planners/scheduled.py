"""Planners whose calls follow a schedule fixed before the block starts.

- ``Dilated``: DUS (arXiv 2506.19037), far-apart positions first, with optional
  confidence deferral done right: a deferred position joins the next level and
  the last level reveals everything left, so no mask survives the block.
- ``Binary``: the same with binary-search levels.
- ``TopK``: a fixed number per call, ranked by a score: LLaDA's
  ``low_confidence`` / ``random`` remasking, Dream's ``maskgit_plus``
  (confidence), margin and entropy (lowest first), SDAR's ``sequential``
  (``position``: the leftmost masked offsets), with LLaDA's linear counts or
  any explicit count schedule (``counts="dilated"`` = DUS's counts).

A block whose first ``lead`` offsets were filled before its first call
(``PlanStep.lead``) gets the levels, or the dilated / step counts, of a block
of ``block_length - lead``, laid on offsets ``lead..``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

import torch
from torch import Tensor

from ..schedules import binary_levels, dilated_levels, level_sizes, linear_counts
from .base import PlanStep, Planner, Selection, at_least_one, confident, priority_of, top_n

TOPK_SCORES = ("confidence", "margin", "entropy", "random", "position")


@lru_cache(maxsize=256)
def _cumulative_levels(levels: tuple[tuple[int, ...], ...], block_length: int, device: torch.device) -> Tensor:
    """``[R, Bl]`` bool on ``device``: row t marks the offsets scheduled in levels 0..t (kept, so no copy per call)."""
    out = torch.zeros(len(levels), block_length, dtype=torch.bool)
    for t, level in enumerate(levels):
        out[t:, list(level)] = True
    return out.to(device)


class _LevelPlanner(Planner):
    confidence_threshold: float | None

    def levels(self, block_length: int) -> list[list[int]]:
        raise NotImplementedError

    def calls_per_block(self, block_length: int, num_blocks: int) -> int:
        return len(self.levels(block_length))

    def planned_levels(self, block_length: int, lead: int = 0) -> list[list[int]]:
        """The levels over offsets ``lead..block_length-1``: those of a block of ``block_length - lead``
        (``self.levels``), shifted by ``lead``; offsets before ``lead`` were filled before the block began."""
        return shift_levels(self.levels(block_length - lead), lead)

    def select(self, step: PlanStep) -> Selection:
        levels = self.planned_levels(step.block_length, step.lead)
        table = _cumulative_levels(tuple(map(tuple, levels)), step.block_length, step.masked.device)
        last = step.call >= len(levels) - 1
        scheduled = table[min(step.call, len(levels) - 1)]
        candidates = step.masked & scheduled  # [N, Bl]; earlier deferrals included
        priority = priority_of(step, "confidence")  # -(1 - p), in [-1, 0]
        reveal = candidates
        if self.confidence_threshold is not None and not last:
            reveal = candidates & confident(step.proposal, self.confidence_threshold)
        reveal = at_least_one(reveal, torch.where(candidates, priority, priority - 2.0), step.masked)
        return Selection(reveal=reveal, priority=priority)


def shift_levels(levels: list[list[int]], lead: int) -> list[list[int]]:
    """``levels`` of a block of B - lead offsets laid on offsets lead..B-1 of a block of B."""
    return levels if lead == 0 else [[lead + i for i in level] for level in levels]


def fixed_schedule(planner: Planner, block_length: int) -> list[list[int]] | None:
    """The levels of a planner whose reveals are fixed before the block starts, else None.

    Fixed: a level planner (DUS, binary, interleave, farthest point, explicit
    schedules) without confidence deferral, which would move positions by the
    tokens drawn.
    """
    if isinstance(planner, _LevelPlanner) and planner.confidence_threshold is None:
        return planner.levels(block_length)
    return None


def _check_threshold(value: float | None) -> None:
    if value is not None and not 0.0 <= value <= 1.0:
        raise ValueError(f"confidence_threshold must be in [0, 1] or None, got {value!r}")


@dataclass(frozen=True)
class Dilated(_LevelPlanner):
    """Dilated Unmasking Scheduler: ``ceil(log_base B)`` calls per block of B."""

    base: int = 2
    skip_exp: int = 1
    confidence_threshold: float | None = None
    name: ClassVar[str] = "dilated"

    def __post_init__(self) -> None:
        if not isinstance(self.base, int) or self.base < 2:
            raise ValueError(f"base must be an int >= 2, got {self.base!r}")
        if not isinstance(self.skip_exp, int) or self.skip_exp < 0:
            raise ValueError(f"skip_exp must be an int >= 0, got {self.skip_exp!r}")
        _check_threshold(self.confidence_threshold)

    def levels(self, block_length: int) -> list[list[int]]:
        return dilated_levels(block_length, self.base, self.skip_exp)


@dataclass(frozen=True)
class Binary(_LevelPlanner):
    """Binary-search order: block midpoint first, then the midpoints of each half."""

    confidence_threshold: float | None = None
    name: ClassVar[str] = "binary"

    def __post_init__(self) -> None:
        _check_threshold(self.confidence_threshold)

    def levels(self, block_length: int) -> list[list[int]]:
        return binary_levels(block_length)


@dataclass(frozen=True)
class TopK(Planner):
    """Reveal a fixed number of masked positions per call, best score first.

    ``steps``: total calls over the whole generation, split evenly over blocks
    (LLaDA's semantics, linear counts per block). ``counts``: an explicit
    per-call schedule for every block (must sum to the block length), or
    ``"dilated"`` for DUS's level sizes. Give one of the two.
    """

    score: str = "confidence"
    steps: int | None = None
    counts: tuple[int, ...] | str | None = None
    base: int = 2  # used by counts="dilated"
    name: ClassVar[str] = "topk"

    def __post_init__(self) -> None:
        if self.score not in TOPK_SCORES:
            raise ValueError(f"score must be one of {TOPK_SCORES}, got {self.score!r}")
        if (self.steps is None) == (self.counts is None):
            raise ValueError("topk needs exactly one of steps (int) or counts (tuple of ints or 'dilated')")
        if self.steps is not None and (not isinstance(self.steps, int) or self.steps < 1):
            raise ValueError(f"steps must be a positive int, got {self.steps!r}")
        if isinstance(self.counts, str) and self.counts != "dilated":
            raise ValueError(f"counts must be a tuple of positive ints or 'dilated', got {self.counts!r}")
        if isinstance(self.counts, (list, tuple)):
            if not self.counts or any(not isinstance(c, int) or isinstance(c, bool) for c in self.counts) \
                    or any(c < 0 for c in self.counts):
                raise ValueError(f"counts must be a non-empty tuple of positive ints, got {self.counts!r}")
            if 0 in self.counts:  # Dream's schedule with steps == gen_length starts with int(0.999) = 0
                raise ValueError(
                    f"counts must be positive, got {self.counts!r}: a call that reveals nothing changes nothing (the "
                    "next call sees the same canvas), so leave the 0s out; Dream spends that call, so its NFE is one "
                    "more per 0 (docs/reference.md)")
            object.__setattr__(self, "counts", tuple(self.counts))
        if not isinstance(self.base, int) or self.base < 2:
            raise ValueError(f"base must be an int >= 2, got {self.base!r}")

    @property
    def needs(self) -> frozenset[str]:  # type: ignore[override]
        return frozenset({self.score}) & {"margin", "entropy"}

    def check(self, gen_length: int, block_length: int) -> None:
        if self.steps is not None:
            num_blocks = gen_length // block_length
            if self.steps % num_blocks:
                raise ValueError(
                    f"steps must be a multiple of the number of blocks ({num_blocks} = gen_length // block_length), "
                    f"got {self.steps}"
                )
            if not 1 <= self.steps // num_blocks <= block_length:
                raise ValueError(
                    f"steps per block must be in [1, block_length={block_length}], got {self.steps // num_blocks}"
                )
        elif isinstance(self.counts, tuple) and sum(self.counts) != block_length:
            raise ValueError(f"counts must sum to block_length={block_length}, got sum {sum(self.counts)}")

    def schedule(self, block_length: int, num_blocks: int, lead: int = 0) -> list[int]:
        """Per-call reveal counts for one block.

        With ``lead`` offsets filled before the block began, ``"dilated"`` and
        ``steps`` count over the ``block_length - lead`` offsets left, exactly
        as for a block of that length (more steps per block than offsets left
        end in zero counts, so one offset per call); explicit ``counts`` are
        used as given.
        """
        n = block_length - lead
        if self.counts == "dilated":
            return level_sizes(dilated_levels(n, self.base))
        if self.counts is not None:
            return list(self.counts)
        assert self.steps is not None
        return linear_counts(n, self.steps // num_blocks)

    def calls_per_block(self, block_length: int, num_blocks: int) -> int:
        return len(self.schedule(block_length, num_blocks))

    def select(self, step: PlanStep) -> Selection:
        counts = self.schedule(step.block_length, step.num_blocks, step.lead)
        n = counts[step.call] if step.call < len(counts) - 1 else step.block_length
        priority = priority_of(step, self.score)
        reveal = at_least_one(top_n(priority, step.masked, n), priority, step.masked)
        return Selection(reveal=reveal, priority=priority)
