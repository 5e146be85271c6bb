"""One call's decision: from a block's logits to the positions revealed now and their tokens.

The generation loop and the engine plugins (SGLang) both call :func:`decide`,
so for the same logits, masks and seeds every front reveals exactly the same
positions with the same tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .noise import CallNoise
from .planners import PlanStep, Planner
from .sampling import Proposal, SamplingParams, propose


@dataclass(frozen=True)
class Decision:
    reveal: Tensor  # [N, Bl] bool: positions revealed by this call (a subset of the masked ones)
    proposal: Proposal  # tokens and scores of every position of the block


def decide(
    logits: Tensor,
    masked: Tensor,
    planner: Planner,
    params: SamplingParams,
    noise: CallNoise,
    call: int,
    num_blocks: int,
    mask_id: int,
    *,
    lead: int = 0,
) -> Decision:
    """Sample and score every position of the block, and let ``planner`` pick what to reveal.

    ``logits [N, Bl, V]`` is modified in place: the mask id's logit is set to
    ``-inf``, so a revealed position never takes the mask. ``masked [N, Bl]``
    marks the positions still masked; ``call`` is the index of this call
    within the block. ``lead``: the block's first offsets that were filled
    before its first call (a prompt ending mid-block, as SGLang lays blocks
    out; 0 in unmask's own loop): schedule-based planners plan the other
    offsets as a block of ``Bl - lead`` (:class:`~unmask.planners.PlanStep`).
    Nothing is read back to the host: the caller checks ``proposal.finite``
    and :func:`broken` (with :func:`check`) when it syncs anyway.
    """
    block_length = masked.shape[-1]
    if not isinstance(lead, int) or isinstance(lead, bool) or not 0 <= lead < block_length:
        raise ValueError(f"lead must be an int in [0, block length {block_length}), got {lead!r}")
    logits[..., mask_id] = float("-inf")
    proposal = propose(logits, params, noise, planner.needs)
    step = PlanStep(masked, proposal, call, block_length, num_blocks, noise, lead)
    return Decision(planner.select(step).reveal, proposal)


def broken(masked: Tensor, reveal: Tensor) -> Tensor:
    """Bool scalar: the reveal is not a subset of the masked positions, or a row with masks revealed nothing."""
    return (reveal & ~masked).any() | ~(reveal.any(-1) | ~masked.any(-1)).all()


def check(nonfinite: Tensor, invariant_broken: Tensor, planner: Planner) -> None:
    """Raise for what the calls since the last check flagged (one host synchronisation)."""
    flags = torch.stack([nonfinite, invariant_broken]).tolist()
    if flags[0]:
        raise ValueError("denoiser returned logits with NaN or +inf (or a position where every token has -inf); "
                         "logits must be finite or -inf")
    assert not flags[1], f"{planner} revealed an unmasked position or made no progress"
