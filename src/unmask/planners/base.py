"""The planner contract: one pure, batched function per call.

A planner sees the still-masked positions of the current block, the
proposals and scores for them, and the call index within the block, and
returns the positions to reveal now. It keeps no hidden state: the masked set
and the call index (and, for a block whose first offsets were filled before
its first call, their number ``lead``) are the whole state, and the caller
passes them in. A planner that needs more (a per-row history) returns it as
``Selection.state`` and gets it back as ``PlanStep.state`` at the next call of
the block: explicit state the caller keeps per row. Every planner reveals at
least one masked position per row that still has one, and declares a hard
bound on its calls per block (:meth:`Planner.max_calls_per_block`), so every
block finishes, whatever the scores.

A *revising* planner (``revises = True``) may also name positions revealed
earlier in the block to overwrite with this call's proposal (``edit``) or to
return to the mask (``remask``), and answers per row whether it wants another
call once no mask is left (``pending``). It must leave no mask at its last
allowed call.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from ..noise import ORDER, CallNoise
from ..sampling import Proposal


State = tuple[Tensor, ...] | None  # per-row planner state: tensors whose first dimension is the row


@dataclass(frozen=True)
class PlanStep:
    """Everything a planner may look at for one call (tensors are ``[N, Bl]``)."""

    masked: Tensor  # bool: positions of the current block that are still masked
    proposal: Proposal  # tokens and scores for every position of the block
    call: int  # 0-based index of this call within the block
    block_length: int
    num_blocks: int
    noise: CallNoise | None = None  # uniforms for random choices (random top-k)
    # offsets before ``lead`` were filled before the block's first call (a prompt ending mid-block, as
    # SGLang lays blocks out): schedule-based planners plan offsets lead..Bl-1 exactly as a block of
    # Bl - lead. unmask's own loop starts every block after the prompt, so it always passes 0.
    lead: int = 0
    tokens: Tensor | None = None  # long: the block's tokens before this call (the mask id where masked)
    current: Tensor | None = None  # float: model probability of the current token (0 where masked), if needed
    state: State = None  # the planner's own per-row state from the previous call of the block (None at call 0)
    logits: Tensor | None = None  # [N, Bl, V] float: the call's logits (after temperature()), if "logits" in needs


@dataclass(frozen=True)
class Selection:
    """A planner's answer: what to reveal now, and how it ranks positions."""

    reveal: Tensor  # bool [N, Bl], a subset of the masked positions
    priority: Tensor  # float [N, Bl], higher = more eager to reveal (used by post-filters)
    edit: Tensor | None = None  # bool [N, Bl]: revealed positions to overwrite with this call's proposal
    remask: Tensor | None = None  # bool [N, Bl]: revealed positions to return to the mask
    pending: Tensor | None = None  # bool [N]: the row wants another call even when no mask is left
    state: State = None  # per-row state for the next call of the block
    tokens: Tensor | None = None  # long [N, Bl]: the tokens revealed and edited positions take (None: the proposal's)


class Planner(ABC):
    """Base class: subclasses are frozen dataclasses whose fields are their settings."""

    name: ClassVar[str]
    needs: ClassVar[frozenset[str]] = frozenset()  # optional scores: "margin", "entropy", "current"
    revises: ClassVar[bool] = False  # may edit or re-mask revealed positions (then adaptive)
    # every call reveals at least one masked position per row with masks (checked by the engine); False for a
    # planner that re-decides every position at every call (entropy_bound), bounded by its max_calls_per_block
    progress: ClassVar[bool] = True

    def temperature(self, call: int, device: torch.device | str = "cpu") -> Tensor | None:
        """The planner's own temperature at call ``call`` (a float32 scalar tensor): ``decide`` divides the logits
        by it before anything else, and the tempered logits are the call's *processed* logits (the next
        self-conditioning input of a DiffusionGemma model). None (the default): no schedule of its own."""
        return None

    def check(self, gen_length: int, block_length: int) -> None:
        """Raise ``ValueError`` if this planner cannot run with these sizes."""

    def calls_per_block(self, block_length: int, num_blocks: int) -> int | None:
        """Calls one block costs when fixed in advance (the loop then never asks whether masks are left),
        else None (adaptive planners)."""
        return None

    def max_calls_per_block(self, block_length: int) -> int:
        """A hard bound on the calls one block of ``block_length`` costs (at most one per position here, as
        every call reveals at least one masked position); revising planners declare their own."""
        return block_length

    @abstractmethod
    def select(self, step: PlanStep) -> Selection: ...


class Wrapper(Planner):
    """A planner over another (its ``inner`` field: ``spaced``, ``edit``, ``remask``, ``stable``): the scores it
    needs and the sizes it accepts are its inner planner's."""

    @property
    def needs(self) -> frozenset[str]:  # type: ignore[override]
        return self.inner.needs  # type: ignore[attr-defined]

    def check(self, gen_length: int, block_length: int) -> None:
        self.inner.check(gen_length, block_length)  # type: ignore[attr-defined]


def masked_ranks(priority: Tensor, masked: Tensor) -> Tensor:
    """Rank ``[N, Bl]`` of each masked position by descending priority (0 = first, ties leftmost).

    Unmasked positions get ranks after every masked one, so ``rank < n`` picks
    the top-n masked positions.
    """
    key = torch.where(masked, torch.nan_to_num(priority.double(), nan=-1e30, neginf=-1e30), -float("inf"))
    order = torch.argsort(key, dim=-1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(order.shape[-1], device=order.device).expand_as(order))
    return ranks


def top_n(priority: Tensor, masked: Tensor, n: Tensor | int) -> Tensor:
    """Reveal the ``n`` (per row, ``[N]`` or scalar) highest-priority masked positions."""
    if not isinstance(n, Tensor):
        n = torch.full((masked.shape[0],), int(n), device=masked.device)
    return masked & (masked_ranks(priority, masked) < n.unsqueeze(-1))


def at_least_one(reveal: Tensor, priority: Tensor, masked: Tensor) -> Tensor:
    """Add the best masked position to every row that has masks but reveals none."""
    starved = masked.any(-1) & ~reveal.any(-1)  # [N]; no early return: that would read it back to the host
    best = top_n(priority, masked, 1)
    return reveal | (best & starved.unsqueeze(-1))


def revealed(step: PlanStep) -> Tensor:
    """``[N, Bl]`` bool: positions a revising planner may edit or re-mask (revealed before this call, not the
    prompt's offsets before ``lead``)."""
    offsets = torch.arange(step.block_length, device=step.masked.device)
    return ~step.masked & (offsets >= step.lead)


def confident(proposal: Proposal, tau: float) -> Tensor:
    """``[N, Bl]`` bool: confidence >= tau, decided exactly as ``1 - confidence <= 1 - tau``."""
    return proposal.doubt.double() <= 1.0 - tau


def two_ended(value: Tensor, complement: Tensor) -> Tensor:
    """A float64 key in [-1, 0] increasing with ``value`` in [0, 1], exact at both ends.

    ``value - 1`` below 1/2 (float32 ``value`` keeps its relative precision
    near 0, and subtracting 1 in float64 is exact for ``value >= 2^-30``),
    ``-complement`` above (the complement keeps it near 1). Ranking on
    ``1 - value`` alone cannot tell p = 0.0059566195 from 0.0059566492
    (both 0.99404335 in float32); ranking on ``value`` alone cannot tell
    1 - 1.00e-8 from 1 - 1.01e-8.
    """
    return torch.where(value < 0.5, value.double() - 1.0, -complement.double())


def priority_of(step: PlanStep, score: str) -> Tensor:
    """Per-position priority for a named score (higher = reveal first), exact as p -> 1 and as p -> 0."""
    p = step.proposal
    if score == "confidence":
        return two_ended(p.confidence, p.doubt)
    if score == "margin":
        assert p.margin is not None and p.margin_doubt is not None, "margin requested but not computed"
        return two_ended(p.margin, p.margin_doubt)
    if score == "entropy":
        assert p.entropy is not None, "entropy requested but not computed"
        return -p.entropy  # lowest entropy first
    if score == "random":
        if step.noise is None:
            raise ValueError("the random score needs noise (an unmask.noise.CallNoise) in the PlanStep")
        return step.noise.uniform(ORDER)
    if score == "position":  # leftmost first (SDAR's sequential order)
        offsets = torch.arange(step.masked.shape[-1], 0, -1, device=step.masked.device, dtype=torch.float64)
        return offsets.expand(step.masked.shape)
    raise AssertionError(f"unknown score {score!r}")
