"""Planners whose per-call count adapts to the scores.

- ``EB``: EB-Sampler (Ben-Hamu et al. 2025, "Accelerated sampling from masked
  diffusion models via entropy bounded unmasking").
- ``Threshold``: confidence-bounded unmasking (Fast-dLLM, Wu et al. 2025).
- ``Factor``: Fast-dLLM's factor rule.

None has a step cap: each reveals at least one position per call and runs
until the block is full.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import (
    PlanStep, Planner, Selection, Wrapper,
    at_least_one, confident, masked_ranks, priority_of, top_n,
)


def _sorted_masked(values: torch.Tensor, masked: torch.Tensor, descending: bool) -> torch.Tensor:
    """Values of masked positions sorted per row ``[N, Bl]``; unmasked ones padded at the end."""
    pad = -math.inf if descending else math.inf
    return torch.sort(torch.where(masked, values, pad), dim=-1, descending=descending).values


EB_ENTROPIES = ("exact", "reference")


@dataclass(frozen=True)
class EB(Planner):
    """Reveal the largest lowest-entropy prefix whose entropy sum minus its maximum is <= gamma bits.

    ``entropy="exact"``: the entropy of the model's distribution.
    ``entropy="reference"``: the EB / DUS reference code's ``-sum p log2(p +
    1e-10)`` in float64, which undercounts tokens of probability below about
    1e-10: with a large vocabulary and a flat tail it reveals more per call
    (docs/reference.md).
    """

    gamma: float = 1.0
    entropy: str = "exact"
    name: ClassVar[str] = "eb"

    def __post_init__(self) -> None:
        if not isinstance(self.gamma, (int, float)) or not self.gamma >= 0 or math.isinf(self.gamma):
            raise ValueError(f"gamma must be a finite number >= 0 (bits), got {self.gamma!r}")
        if self.entropy not in EB_ENTROPIES:
            raise ValueError(f"entropy must be one of {EB_ENTROPIES}, got {self.entropy!r}")

    @property
    def needs(self) -> frozenset[str]:  # type: ignore[override]
        return frozenset({"entropy" if self.entropy == "exact" else "entropy_reference"})

    def select(self, step: PlanStep) -> Selection:
        if self.entropy == "reference":
            assert step.proposal.entropy_reference is not None, "entropy_reference requested but not computed"
            bits = step.proposal.entropy_reference  # [N, Bl] float64
        else:
            assert step.proposal.entropy is not None, "entropy requested but not computed"
            bits = step.proposal.entropy / math.log(2.0)  # [N, Bl]
        h = _sorted_masked(bits, step.masked, descending=False)  # ascending, inf padded
        # prefix k (1-based) costs sum(h[:k]) - max(h[:k]) = sum(h[:k-1]) (ascending order)
        before = torch.cumsum(torch.nan_to_num(h, posinf=0.0), -1) - torch.nan_to_num(h, posinf=0.0)
        ok = (before <= self.gamma) & torch.isfinite(h)
        n = ok.sum(-1)  # prefix condition is monotone, so the count is the prefix length
        priority = -bits
        reveal = at_least_one(top_n(priority, step.masked, n), priority, step.masked)
        return Selection(reveal=reveal, priority=priority)


@dataclass(frozen=True)
class Threshold(Planner):
    """Reveal every masked position with confidence >= tau, and at least the most confident one."""

    tau: float = 0.9
    name: ClassVar[str] = "threshold"

    def __post_init__(self) -> None:
        if not isinstance(self.tau, (int, float)) or not 0.0 < self.tau <= 1.0:
            raise ValueError(f"tau must be in (0, 1], got {self.tau!r}")

    def select(self, step: PlanStep) -> Selection:
        priority = priority_of(step, "confidence")
        reveal = at_least_one(step.masked & confident(step.proposal, self.tau), priority, step.masked)
        return Selection(reveal=reveal, priority=priority)


@dataclass(frozen=True)
class Factor(Planner):
    """Reveal the n most confident positions, n the largest with ``(n + 1) * (1 - c_n) <= factor``.

    ``c_n`` is the n-th largest confidence among masked positions (1-based);
    the rule is monotone in n, so the n positions form a prefix; at least one.
    """

    factor: float = 1.0
    name: ClassVar[str] = "factor"

    def __post_init__(self) -> None:
        if not isinstance(self.factor, (int, float)) or not self.factor > 0 or math.isinf(self.factor):
            raise ValueError(f"factor must be a finite number > 0, got {self.factor!r}")

    def select(self, step: PlanStep) -> Selection:
        doubt = _sorted_masked(step.proposal.doubt, step.masked, descending=False)  # [N, Bl] 1 - c_n, inf padded
        rank = torch.arange(1, doubt.shape[-1] + 1, device=doubt.device, dtype=doubt.dtype)
        ok = ((rank + 1) * doubt.double() <= self.factor) & torch.isfinite(doubt)
        n = ok.sum(-1)
        priority = priority_of(step, "confidence")
        reveal = at_least_one(top_n(priority, step.masked, n), priority, step.masked)
        return Selection(reveal=reveal, priority=priority)


@dataclass(frozen=True)
class Spaced(Wrapper):
    """Dilated-spacing post-filter (arXiv 2506.19037, Sec. 4.4), composable with any planner.

    The inner planner's picks, in its priority order, are accepted only if at
    least ``min_gap = max(2, M * start_stride // B)`` away from every pick
    accepted in this call (M = masked positions left in the block, B = block
    length); the rest stay masked for a later call. The best pick is always
    accepted, so progress is kept.
    """

    inner: Planner
    start_stride: int = 8
    name: ClassVar[str] = "spaced"

    def __post_init__(self) -> None:
        if not isinstance(self.inner, Planner):
            raise ValueError(f"inner must be a Planner, got {type(self.inner).__name__}")
        if self.inner.revises:
            raise ValueError(f"spaced filters reveals, so its inner planner must only reveal; {self.inner.name!r} "
                             f"revises (nest it the other way, e.g. edit(spaced(...)))")
        if not isinstance(self.start_stride, int) or self.start_stride < 1:
            raise ValueError(f"start_stride must be a positive int, got {self.start_stride!r}")

    def select(self, step: PlanStep) -> Selection:
        sel = self.inner.select(step)
        cand = sel.reveal  # [N, Bl]
        n_rows, bl = cand.shape
        gap = (step.masked.sum(-1) * self.start_stride // bl).clamp_min(2)  # [N]
        order = torch.argsort(masked_ranks(sel.priority, cand), dim=-1)  # candidates first, best first
        offsets = torch.arange(bl, device=cand.device)
        accepted = torch.zeros_like(cand)
        rows = torch.arange(n_rows, device=cand.device)
        for r in range(int(cand.sum(-1).max())):
            pos = order[:, r]  # [N]
            dist = (offsets.unsqueeze(0) - pos.unsqueeze(-1)).abs()  # [N, Bl]
            nearest = torch.where(accepted, dist, 1 << 30).min(-1).values  # [N]; no accepted pick = no limit
            ok = cand[rows, pos] & (nearest >= gap)
            accepted[rows, pos] |= ok
        return Selection(reveal=accepted, priority=sel.priority, state=sel.state)
