"""Planners that look back: token editing, re-masking, and history-aware commitment within a block.

- ``Edit``: LLaDA2.1's token-to-token editing, as SGLang's ``JointThreshold``
  dLLM algorithm and diffusers' ``BlockRefinementScheduler(editing_threshold=...)``
  run it: any revealing planner fills the masks, and in every call (while
  masks fill and, after the last one, in at most ``max_edit_calls`` further
  calls) a revealed token is replaced by this call's proposal when the two
  differ and the proposal's confidence is >= ``threshold``. The block ends once
  no mask is left and a call changed nothing, or the edit calls are spent.
- ``Wino``: WINO, wide-in narrow-out (Hong et al. 2025, arXiv 2507.18578):
  reveal every masked position with confidence >= ``wide`` (at least one), and
  return to the mask every position revealed earlier in the block whose token
  now has probability < ``narrow``. The probability is the model's at the
  revealed position in the same call (WINO scores drafted tokens through a
  shadow block of masks; that costs extra columns and is not done here).
- ``Remask``: ReMDM-style remasking (Wang et al. 2025, "Remasking Discrete
  Diffusion Models with Inference-Time Scaling", arXiv 2503.00307), with a
  deterministic confidence schedule: at call k the inner planner reveals, and
  ``floor(eta * R_k)`` of the ``R_k`` positions revealed before call k, those
  with the lowest score (ties leftmost), return to the mask; the score is the
  probability the token had when it was revealed (``score="reveal"``,
  ReMDM-conf's confidence, kept as per-row state) or the probability the
  model gives it now (``score="current"``).
- ``Stable``: history-aware commitment (the stability rules of LESS-style
  samplers): a position the inner planner picks is revealed only once its
  proposal has been the same, with confidence >= ``tau``, over the last
  ``window`` calls (this one included); the history is explicit per-row state.

Every one declares a hard bound on its calls per block
(:meth:`~unmask.planners.Planner.max_calls_per_block`): ``Wino`` and
``Remask`` reveal every mask left and re-mask nothing at their last allowed
call, ``Edit`` adds at most ``max_edit_calls`` to its inner planner's bound.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import torch
from torch import Tensor

from .base import (
    PlanStep, Planner, Selection, State, Wrapper,
    at_least_one, confident, priority_of, revealed, top_n,
)


def _inner_ok(inner: object, wrapper: str) -> None:
    if not isinstance(inner, Planner):
        raise ValueError(f"inner must be a Planner, got {type(inner).__name__}")
    if inner.revises:
        raise ValueError(f"{wrapper}'s inner planner must only reveal; {inner.name!r} revises (nest the other way: "
                         f"a revising planner around revealing ones)")


def _check_fraction(name: str, value: object, low_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (0.0 < value <= 1.0 if low_open
                                                                             else 0.0 <= value <= 1.0)
    if not ok:
        raise ValueError(f"{name} must be a number in {'(0, 1]' if low_open else '[0, 1]'}, got {value!r}")


def _check_calls(name: str, value: object, allow_none: bool, low: int) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an int >= {low}{' or None' if allow_none else ''}, got {value!r}")


def _split(state: State, own: int) -> tuple[tuple[Tensor, ...] | None, State]:
    """A wrapper's own first ``own`` state tensors, and the rest (its inner planner's, None if it keeps none)."""
    if state is None:
        return None, None
    return state[:own], (state[own:] or None)


def _join(own: tuple[Tensor, ...], inner: State) -> State:
    return own + (inner or ())


@dataclass(frozen=True)
class Edit(Wrapper):
    """Token editing over any revealing planner (LLaDA2.1 token-to-token; SGLang ``JointThreshold``).

    State per row: the calls made after the block had no mask left. A row
    asks for another call (``pending``) while its last call changed a token
    and fewer than ``max_edit_calls`` such calls were made.
    """

    inner: Planner
    threshold: float = 0.9
    max_edit_calls: int = 16
    name: ClassVar[str] = "edit"
    revises: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _inner_ok(self.inner, "edit")
        _check_fraction("threshold", self.threshold)
        _check_calls("max_edit_calls", self.max_edit_calls, False, 0)

    def max_calls_per_block(self, block_length: int) -> int:
        return self.inner.max_calls_per_block(block_length) + self.max_edit_calls

    def select(self, step: PlanStep) -> Selection:
        assert step.tokens is not None, "edit needs the block's tokens (PlanStep.tokens)"
        own, inner_state = _split(step.state, 1)
        sel = self.inner.select(replace(step, state=inner_state))
        after = (own[0] if own is not None else torch.zeros_like(step.masked[:, 0], dtype=torch.long)) \
            + ~step.masked.any(-1)  # [N]: calls made with no mask left, this one included
        p = step.proposal
        edit = revealed(step) & (p.tokens != step.tokens) & confident(p, self.threshold)
        edit &= (after <= self.max_edit_calls).unsqueeze(-1)
        changed = sel.reveal.any(-1) | edit.any(-1)
        pending = changed & (after < self.max_edit_calls)
        return Selection(sel.reveal, sel.priority, edit=edit, pending=pending, state=_join((after,), sel.state))


def _last(step: PlanStep, cap: int) -> bool:
    return step.call >= cap - 1


@dataclass(frozen=True)
class Wino(Planner):
    """WINO (arXiv 2507.18578): reveal at confidence >= ``wide``, re-mask revealed tokens now below ``narrow``.

    ``max_calls`` (None: the block length) bounds the calls per block; the
    last allowed call reveals every mask left and re-masks nothing.
    """

    wide: float = 0.7
    narrow: float = 0.9
    max_calls: int | None = None
    name: ClassVar[str] = "wino"
    revises: ClassVar[bool] = True
    needs: ClassVar[frozenset[str]] = frozenset({"current"})

    def __post_init__(self) -> None:
        _check_fraction("wide", self.wide, low_open=True)
        _check_fraction("narrow", self.narrow)
        _check_calls("max_calls", self.max_calls, True, 1)

    def max_calls_per_block(self, block_length: int) -> int:
        return block_length if self.max_calls is None else self.max_calls

    def select(self, step: PlanStep) -> Selection:
        assert step.current is not None, "wino needs the current tokens' probabilities (needs 'current')"
        priority = priority_of(step, "confidence")
        if _last(step, self.max_calls_per_block(step.block_length)):
            return Selection(step.masked, priority, remask=torch.zeros_like(step.masked))
        reveal = at_least_one(step.masked & confident(step.proposal, self.wide), priority, step.masked)
        remask = revealed(step) & (step.current.double() < self.narrow)
        return Selection(reveal, priority, remask=remask)


REMASK_SCORES = ("reveal", "current")


@dataclass(frozen=True)
class Remask(Wrapper):
    """ReMDM-style remasking (arXiv 2503.00307) at a fixed call cap, lowest current confidence first.

    At call k < ``max_calls`` - 1: the inner planner reveals, and
    ``floor(eta * R_k)`` of the ``R_k`` positions revealed before call k with
    the lowest score return to the mask. ``score="reveal"`` (default): the
    probability the token had when it was revealed (ReMDM-conf; per-row state,
    no extra work per call); ``score="current"``: the probability the model
    gives it now, with the token in its context (meaningful for models trained
    to score revealed tokens; one more pass over the vocabulary). The last allowed
    call (``max_calls``; None: the block length) reveals every mask left. A
    block ends earlier only when a call leaves no mask, so once
    ``floor(eta * R) >= 1`` it costs ``max_calls`` calls: ReMDM's premise, a
    fixed budget of calls spent on re-drawing the least probable tokens.
    """

    inner: Planner
    eta: float = 0.1
    max_calls: int | None = None
    score: str = "reveal"
    name: ClassVar[str] = "remask"
    revises: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _inner_ok(self.inner, "remask")
        if self.score not in REMASK_SCORES:
            raise ValueError(f"score must be one of {REMASK_SCORES}, got {self.score!r}")
        if not isinstance(self.eta, (int, float)) or isinstance(self.eta, bool) or not 0.0 <= self.eta < 1.0:
            raise ValueError(f"eta must be a number in [0, 1) (the share of revealed tokens re-masked per call), "
                             f"got {self.eta!r}")
        _check_calls("max_calls", self.max_calls, True, 1)

    @property
    def needs(self) -> frozenset[str]:  # type: ignore[override]
        return self.inner.needs | ({"current"} if self.score == "current" else set())

    def max_calls_per_block(self, block_length: int) -> int:
        return block_length if self.max_calls is None else self.max_calls

    def select(self, step: PlanStep) -> Selection:
        own, inner_state = _split(step.state, 1)
        sel = self.inner.select(replace(step, state=inner_state))
        kept = torch.zeros_like(step.proposal.confidence) if own is None else own[0]  # [N, Bl] p at reveal
        kept = torch.where(sel.reveal, step.proposal.confidence, kept)
        if _last(step, self.max_calls_per_block(step.block_length)):
            return Selection(step.masked, sel.priority, remask=torch.zeros_like(step.masked),
                             state=_join((kept,), sel.state))
        if self.score == "current":
            assert step.current is not None, "remask(score='current') needs 'current' (PlanStep.current)"
            score = step.current
        else:
            score = kept
        old = revealed(step)  # [N, Bl]
        count = torch.floor(old.sum(-1).double() * self.eta).long()  # [N]
        lowest = top_n(-score.double(), old, count)  # least probable first
        return Selection(sel.reveal, sel.priority, remask=lowest, state=_join((kept,), sel.state))


@dataclass(frozen=True)
class Stable(Wrapper):
    """History-aware commitment: reveal the inner planner's picks whose proposal has held, each time with
    confidence >= ``tau``, over the last ``window`` calls; at least the inner planner's best pick.

    State per row: the last call's proposal and, per position, how many calls
    in a row it has held with confidence >= tau. ``window=1`` is the inner
    planner gated by ``tau``.
    """

    inner: Planner
    window: int = 2
    tau: float = 0.0
    name: ClassVar[str] = "stable"

    def __post_init__(self) -> None:
        _inner_ok(self.inner, "stable")
        _check_calls("window", self.window, False, 1)
        _check_fraction("tau", self.tau)

    def select(self, step: PlanStep) -> Selection:
        own, inner_state = _split(step.state, 2)
        sel = self.inner.select(replace(step, state=inner_state))
        tokens = step.proposal.tokens
        ok = confident(step.proposal, self.tau)
        if own is None:
            run = ok.long()
        else:
            last, before = own
            run = torch.where(ok, torch.where(tokens == last, before + 1, 1), 0)
        reveal = sel.reveal & (run >= self.window)
        starved = step.masked.any(-1) & ~reveal.any(-1)
        reveal |= top_n(sel.priority, sel.reveal, 1) & starved.unsqueeze(-1)
        return Selection(reveal, sel.priority, state=_join((tokens, run), sel.state))


__all__ = ["Edit", "Remask", "Stable", "Wino"]
