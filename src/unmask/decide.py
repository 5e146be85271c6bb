"""One call's decision: from a block's logits to the positions revealed now and their tokens.

The generation loop and the engine plugins (SGLang) both call :func:`decide`,
so for the same logits, masks and seeds every front reveals exactly the same
positions with the same tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

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
) -> Decision:
    """Sample and score every position of the block, and let ``planner`` pick what to reveal.

    ``logits [N, Bl, V]`` is modified in place: the mask id's logit is set to
    ``-inf``, so a revealed position never takes the mask. ``masked [N, Bl]``
    marks the positions still masked; ``call`` is the index of this call
    within the block.
    """
    logits[..., mask_id] = float("-inf")
    proposal = propose(logits, params, noise, planner.needs)
    step = PlanStep(masked, proposal, call, masked.shape[-1], num_blocks, noise)
    reveal = planner.select(step).reveal
    assert not (reveal & ~masked).any(), f"{planner} revealed an unmasked position"
    assert bool((reveal.any(-1) | ~masked.any(-1)).all()), f"{planner} made no progress"
    return Decision(reveal, proposal)
