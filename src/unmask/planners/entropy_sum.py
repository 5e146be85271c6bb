"""An entropy budget per call: JetEngine's ``entropy_bounded`` remasking (SDAR's serving engine).

Masked positions are taken by ascending entropy (nats) while the sum of their
entropies stays within ``bound``; at least one per call. The EB-Sampler
(:class:`~unmask.planners.EB`) bounds the sum *minus its largest term* in bits,
so it admits one position more than this rule at the same budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from .base import Planner, PlanStep, Selection, at_least_one, top_n


@dataclass(frozen=True)
class EntropySum(Planner):
    """Reveal the largest lowest-entropy prefix whose entropy sum (nats) is <= ``bound``, at least one."""

    bound: float = 0.35
    name: ClassVar[str] = "entropy_sum"
    needs: ClassVar[frozenset[str]] = frozenset({"entropy"})

    def __post_init__(self) -> None:
        if not isinstance(self.bound, (int, float)) or isinstance(self.bound, bool) or not self.bound >= 0 \
                or math.isinf(self.bound):
            raise ValueError(f"bound must be a finite number >= 0 (nats), got {self.bound!r}")

    def select(self, step: PlanStep) -> Selection:
        assert step.proposal.entropy is not None, "entropy requested but not computed"
        h = step.proposal.entropy.double()  # [N, Bl] nats
        ascending = torch.sort(torch.where(step.masked, h, math.inf), dim=-1).values  # unmasked last (inf)
        total = torch.cumsum(torch.nan_to_num(ascending, posinf=0.0), -1)
        n = ((total <= self.bound) & torch.isfinite(ascending)).sum(-1)  # the prefix condition is monotone
        priority = -h
        reveal = at_least_one(top_n(priority, step.masked, n), priority, step.masked)
        return Selection(reveal=reveal, priority=priority)
