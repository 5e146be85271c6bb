"""Commit rules for uniform-state samplers: which positions of a canvas to commit after a call.

A rule is called as ``rule(probs [B, L, V], committed [B, L], call) -> commit
[B, L]`` (batched over canvases): ``probs`` are the denoiser's posteriors at
the generated positions, ``committed`` the positions committed by earlier
calls, ``call`` the call index (0 first). It returns the positions to commit
now: not yet committed, at least one while any is left, and every one left at
call ``max_calls(L) - 1``. Committed positions take a token drawn from
``probs``; the others are re-drawn uniformly before the next call. The rules
here choose from ``probs`` and ``committed`` alone (never from the drawn
tokens). Rules that do read the tokens drawn at this call, or a random order
(any unmask planner, :class:`~unmask.oracles.uniform_planner.PlannerCommit`),
say so by ``reads_draws`` / ``reads_order`` and are called through
:meth:`CommitRule.commit`; :mod:`.uniform_law` then sums over the draws and
orders too.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..schedules import (
    check_levels,
    dilated_levels,
    farthest_levels,
    interleave_levels,
    linear_counts,
)


def entropy(probs: Tensor) -> Tensor:
    """``[..., L]`` Shannon entropy (nats) of ``probs [..., L, V]`` (0 log 0 = 0)."""
    return -torch.where(probs > 0, probs * probs.clamp_min(1e-300).log(), torch.zeros((), dtype=probs.dtype)).sum(-1)


class CommitRule:
    """Base of the commit rules; subclasses implement :meth:`choose`."""

    reads_draws: bool = False  # the commit set depends on the tokens drawn at this call
    reads_order: bool = False  # the commit set depends on a random order of the positions

    def max_calls(self, length: int) -> int:
        """The most calls this rule takes for ``length`` generated positions (its last call commits the rest)."""
        raise NotImplementedError

    def choose(self, probs: Tensor, committed: Tensor, call: int) -> Tensor:
        raise NotImplementedError

    def __call__(self, probs: Tensor, committed: Tensor, call: int) -> Tensor:
        """``[B, L]`` bool: the positions to commit at ``call`` (see the module docstring)."""
        if probs.dim() != 3 or committed.shape != probs.shape[:2]:
            raise ValueError(f"probs must be [B, L, V] and committed [B, L], got {list(probs.shape)} and {list(committed.shape)}")
        if call >= self.max_calls(probs.shape[1]) - 1:
            return ~committed
        return self.choose(probs, committed, call) & ~committed

    def commit(self, probs: Tensor, committed: Tensor, call: int, drawn: Tensor | None = None,
               order: Tensor | None = None) -> Tensor:
        """The commit set given also this call's drawn tokens ``drawn [B, L]`` and order uniforms ``order [B, L]``
        (read only by rules that declare ``reads_draws`` / ``reads_order``)."""
        return self(probs, committed, call)


class FixedGroups(CommitRule):
    """A fixed commit order: call ``t`` commits the positions of ``groups[t]`` (a partition of ``range(L)``)."""

    def __init__(self, groups: Sequence[Sequence[int]], name: str = "groups") -> None:
        self.groups = [sorted(int(i) for i in g) for g in groups]
        self.length = sum(len(g) for g in self.groups)
        check_levels(self.groups, self.length, "groups")
        self.name = name

    def __repr__(self) -> str:
        return f"{self.name}{self.groups}"

    def max_calls(self, length: int) -> int:
        if length != self.length:
            raise ValueError(f"groups partition {self.length} positions, the canvas generates {length}")
        return len(self.groups)

    def choose(self, probs: Tensor, committed: Tensor, call: int) -> Tensor:
        out = torch.zeros_like(committed)
        out[:, self.groups[call]] = True
        return out


def dus_commit(length: int, base: int = 2, skip_exp: int = 1) -> FixedGroups:
    """The Dilated Unmasking Scheduler's groups (Luxembourg et al. 2025) as a commit order."""
    return FixedGroups(dilated_levels(length, base, skip_exp), f"dus(base={base}, skip_exp={skip_exp})")


def dilated_commit(length: int, calls: int, growth: float = 2.0) -> FixedGroups:
    """A DUS-like dilated order at any call count: farthest-point order in groups growing by ``growth``."""
    return FixedGroups(farthest_levels(length, calls, growth), f"dilated(calls={calls})")


def interleave_commit(length: int, calls: int) -> FixedGroups:
    """Residue classes ``calls`` apart, far-apart classes first (``interleave_levels``): no two commits of a call adjacent."""
    return FixedGroups(interleave_levels(length, calls), f"interleave(calls={calls})")


class TopKCommit(CommitRule):
    """Commit ``counts[t]`` positions at call ``t``: the most confident (``max_v p``) or lowest-entropy ones.

    Ties go to the lower position. ``counts`` must sum to the generated length.
    """

    def __init__(self, counts: Sequence[int], score: str = "confidence") -> None:
        if score not in ("confidence", "entropy"):
            raise ValueError(f"score must be 'confidence' or 'entropy', got {score!r}")
        self.counts = [int(c) for c in counts]
        if not self.counts or any(c < 1 for c in self.counts):
            raise ValueError(f"counts must be positive ints, got {counts!r}")
        self.score = score

    @classmethod
    def linear(cls, length: int, calls: int, score: str = "confidence") -> TopKCommit:
        """LLaDA's even split of ``length`` positions over ``calls`` calls."""
        return cls(linear_counts(length, calls), score)

    def __repr__(self) -> str:
        return f"topk({self.score}, counts={tuple(self.counts)})"

    def max_calls(self, length: int) -> int:
        if sum(self.counts) != length:
            raise ValueError(f"counts sum to {sum(self.counts)}, the canvas generates {length}")
        return len(self.counts)

    def choose(self, probs: Tensor, committed: Tensor, call: int) -> Tensor:
        score = probs.amax(-1) if self.score == "confidence" else -entropy(probs)
        score = torch.where(committed, torch.full((), float("-inf"), dtype=score.dtype), score)
        order = torch.sort(-score, dim=-1, stable=True).indices[:, : self.counts[call]]
        return torch.zeros_like(committed).scatter_(1, order, True)


class EntropyBoundCommit(CommitRule):
    """DiffusionGemma's entropy-bound acceptance as a commit rule (Ben-Hamu et al. 2025, arXiv 2505.24857).

    Among the uncommitted positions sorted by entropy (ascending, ties to the
    lower position), commit the longest prefix whose summed entropy minus its
    largest entropy is at most ``bound`` (an upper bound on the prefix's joint
    mutual information); the lowest-entropy position always qualifies. Call
    ``max_calls - 1`` commits whatever is left.

    DiffusionGemma's sampler applies the same acceptance differently: it
    re-decides every position at every call (an earlier acceptance may be
    dropped and re-drawn), draws at a temperature that falls linearly from
    ``t_max`` to ``t_min``, stops early once the argmax canvas is stable and
    the mean entropy low, and feeds its previous prediction back to the
    decoder. Here a commit stays for good, only uncommitted positions are
    candidates, draws are at temperature 1, and the canvas ends when every
    position is committed.
    """

    def __init__(self, bound: float, max_calls: int = 64) -> None:
        if not isinstance(bound, (int, float)) or isinstance(bound, bool) or not 0 <= bound < float("inf"):
            raise ValueError(f"bound must be a finite number >= 0, got {bound!r}")
        if not isinstance(max_calls, int) or max_calls < 1:
            raise ValueError(f"max_calls must be an int >= 1, got {max_calls!r}")
        self.bound, self.calls = float(bound), max_calls

    def __repr__(self) -> str:
        return f"entropy_bound({self.bound:g})"

    def max_calls(self, length: int) -> int:
        return self.calls

    def choose(self, probs: Tensor, committed: Tensor, call: int) -> Tensor:
        h = torch.where(committed, torch.full((), float("inf"), dtype=probs.dtype), entropy(probs))
        sorted_h, idx = torch.sort(h, dim=-1, stable=True)
        finite = torch.isfinite(sorted_h)
        cum = torch.where(finite, sorted_h, torch.zeros((), dtype=h.dtype)).cumsum(-1)
        take = finite & (cum - sorted_h <= self.bound)
        return torch.zeros_like(committed).scatter_(1, idx, take)
