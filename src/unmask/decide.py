"""One call's decision: from a block's logits to the positions revealed now and their tokens.

The generation loop and the engine plugins (SGLang) both call :func:`decide`,
so for the same logits, masks and seeds every front reveals exactly the same
positions with the same tokens.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from .noise import CallNoise
from .planners import PlanStep, Planner, State
from .sampling import Proposal, SamplingParams, propose


@dataclass(frozen=True)
class Decision:
    reveal: Tensor  # [N, Bl] bool: positions revealed by this call (a subset of the masked ones)
    proposal: Proposal  # tokens and scores of every position of the block
    edit: Tensor | None = None  # [N, Bl] bool: revealed positions overwritten with the proposal (revising planners)
    remask: Tensor | None = None  # [N, Bl] bool: revealed positions returned to the mask (revising planners)
    pending: Tensor | None = None  # [N] bool: rows that want another call even with no mask left
    state: State = None  # the planner's per-row state, to pass back at the next call of the block
    logits: Tensor | None = None  # [N, Bl, V]: the processed logits (after the planner's temperature, if any)


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
    tokens: Tensor | None = None,
    state: State = None,
) -> Decision:
    """Sample and score every position of the block, and let ``planner`` pick what to reveal.

    ``logits [N, Bl, V]`` is modified in place: the mask id's logit is set to
    ``-inf``, so a revealed position never takes the mask. ``masked [N, Bl]``
    marks the positions still masked; ``call`` is the index of this call
    within the block. ``lead``: the block's first offsets that were filled
    before its first call (a prompt ending mid-block, as SGLang lays blocks
    out; 0 in unmask's own loop): schedule-based planners plan the other
    offsets as a block of ``Bl - lead`` (:class:`~unmask.planners.PlanStep`).
    ``tokens [N, Bl]``: the block's tokens (the mask id where masked), which
    revising planners (``planner.revises``) and planners that need the
    probability of the current tokens (``"current"`` in ``planner.needs``)
    require. ``state``: the planner's per-row state returned by the previous
    call of the block (``Decision.state``; None at the block's first call).
    Nothing is read back to the host: the caller checks ``proposal.finite``
    and :func:`broken` (with :func:`check`) when it syncs anyway.

    Uniform-state denoisers mark uncommitted positions with an id outside the
    model's vocabulary (``mask_id >= V``): there is no mask logit to suppress.
    A planner with a ``temperature`` schedule gets ``logits / T_call`` (a new
    tensor, ``Decision.logits``); a planner that returns ``Selection.tokens``
    sets the tokens its reveals and edits take (the proposal then carries their
    probability and log-probability under the processed logits, which it draws from).
    """
    block_length = masked.shape[-1]
    if not isinstance(lead, int) or isinstance(lead, bool) or not 0 <= lead < block_length:
        raise ValueError(f"lead must be an int in [0, block length {block_length}), got {lead!r}")
    wants_current = "current" in planner.needs
    if (planner.revises or wants_current) and (tokens is None or tokens.shape != masked.shape):
        raise ValueError(f"planner {planner.name!r} looks at revealed tokens: pass tokens=[N, Bl], the block's ids")
    if mask_id < logits.shape[-1]:
        logits[..., mask_id] = float("-inf")
    temperature = planner.temperature(call, logits.device)
    if temperature is not None:
        logits = logits / temperature
    current = current_prob(logits, tokens) if wants_current else None  # type: ignore[arg-type]
    proposal = propose(logits, params, noise, planner.needs - {"current", "logits"})
    step = PlanStep(masked, proposal, call, block_length, num_blocks, noise, lead, tokens, current, state,
                    logits if "logits" in planner.needs else None)
    sel = planner.select(step)
    if sel.tokens is not None:  # the planner's own tokens, with their probabilities under the processed logits
        z = logits.float()
        logp = z.gather(-1, sel.tokens.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(z, -1)
        proposal = dataclasses.replace(proposal, tokens=sel.tokens, confidence=logp.exp(), logq=logp,
                                       doubt=-torch.expm1(logp))
    return Decision(sel.reveal, proposal, sel.edit, sel.remask, sel.pending, sel.state, logits)


def current_prob(logits: Tensor, tokens: Tensor) -> Tensor:
    """``[N, Bl]`` float32: the model probability ``softmax(logits)`` of each position's current token (0 where
    it is the mask, whose logit is -inf by then). One extra pass over the vocabulary, for planners that ask."""
    z = logits.float()
    outside = tokens >= z.shape[-1]  # a uniform-state canvas's uncommitted marker: not a model token
    p = (z.gather(-1, tokens.clamp_max(z.shape[-1] - 1).unsqueeze(-1)).squeeze(-1) - torch.logsumexp(z, -1)).exp()
    return p.masked_fill(outside, 0.0)


def broken(masked: Tensor, reveal: Tensor, edit: Tensor | None = None, remask: Tensor | None = None,
           progress: bool = True) -> Tensor:
    """Bool scalar: the reveal is not a subset of the masked positions, a row with masks revealed nothing (unless
    ``progress`` is False: planners that re-decide every call), or an edit or re-mask touched a masked position
    (or the same position twice)."""
    bad = (reveal & ~masked).any()
    if progress:
        bad = bad | ~(reveal.any(-1) | ~masked.any(-1)).all()
    if edit is not None:
        bad = bad | (edit & masked).any()
    if remask is not None:
        bad = bad | (remask & masked).any()
        if edit is not None:
            bad = bad | (edit & remask).any()
    return bad


def check(nonfinite: Tensor, invariant_broken: Tensor, planner: Planner) -> None:
    """Raise for what the calls since the last check flagged (one host synchronisation)."""
    flags = torch.stack([nonfinite, invariant_broken]).tolist()
    if flags[0]:
        raise ValueError("denoiser returned logits with NaN or +inf (or a position where every token has -inf); "
                         "logits must be finite or -inf")
    assert not flags[1], f"{planner} revealed an unmasked position, made no progress, or revised a masked position"
