"""One call's decision over rows whose blocks start with different numbers of filled offsets.

Block-diffusion models lay their blocks out from each row's position 0, so a
prompt tail fills the first ``lead`` offsets of a row's first generated block
(:class:`~unmask.canvas.Canvas`). :func:`~unmask.decide.decide` takes one lead
per call, so rows are grouped by lead and the decisions merged back in row
order; every other case is one plain ``decide``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..decide import decide
from ..noise import Noise
from ..planners import Planner, State
from ..sampling import SamplingParams


@dataclass(frozen=True)
class Decided:
    """What the engine applies from one decision (``[N, Bl]`` unless noted; see :class:`~unmask.decide.Decision`)."""

    reveal: Tensor
    tokens: Tensor
    confidence: Tensor
    logq: Tensor
    finite: Tensor | None  # [N]
    edit: Tensor | None = None
    remask: Tensor | None = None
    pending: Tensor | None = None  # [N]
    state: State = None  # per-row tensors
    logits: Tensor | None = None  # [N, Bl, V]: the processed logits (uniform-state models' self-conditioning)


def _merge(parts: list[tuple[Tensor, Tensor | None]], rows: int) -> Tensor | None:
    """Tensors of row groups (``(rows of the group, tensor)``) back into one tensor in row order."""
    if parts[0][1] is None:
        return None
    first = parts[0][1]
    out = first.new_zeros((rows, *first.shape[1:]))
    for sel, t in parts:
        assert t is not None
        out.index_copy_(0, sel, t)
    return out


def decide_by_lead(logits: Tensor, masked: Tensor, keys: Tensor, positions: Tensor, planner: Planner,
                   sampling: SamplingParams, call: int, num_blocks: int, mask_id: int, leads: list[int],
                   tokens: Tensor | None = None, state: State = None) -> Decided:
    """``decide`` for rows with noise ``keys [N]`` at ``positions [N, Bl]``, one group per distinct lead.

    ``tokens [N, Bl]`` and ``state`` (per-row tensors) are passed to revising planners, split by group."""
    groups = sorted(set(leads))
    got: list[tuple[Tensor, Decided]] = []
    for lead in groups:
        sel = torch.tensor([i for i, t in enumerate(leads) if t == lead], device=logits.device)
        one = len(groups) == 1

        def pick(t: Tensor | None, sel: Tensor = sel, one: bool = one) -> Tensor | None:
            return t if one or t is None else t.index_select(0, sel)

        noise = Noise(pick(keys)).at(call, pick(positions))  # type: ignore[arg-type]
        part_state = None if state is None else tuple(pick(s) for s in state)
        d = decide(pick(logits), pick(masked), planner, sampling, noise, call, num_blocks, mask_id,  # type: ignore[arg-type]
                   lead=lead, tokens=pick(tokens), state=part_state)
        p = d.proposal
        dec = Decided(d.reveal, p.tokens, p.confidence, p.logq, p.finite, d.edit, d.remask, d.pending, d.state,
                      d.logits)
        if one:
            return dec
        got.append((sel, dec))
    n = len(leads)
    fields = {name: _merge([(s, getattr(d, name)) for s, d in got], n)
              for name in ("reveal", "tokens", "confidence", "logq", "finite", "edit", "remask", "pending", "logits")}
    merged_state = None
    if got[0][1].state is not None:
        merged_state = tuple(_merge([(s, d.state[i]) for s, d in got], n)  # type: ignore[index]
                             for i in range(len(got[0][1].state)))  # type: ignore[arg-type]
    return Decided(**fields, state=merged_state)  # type: ignore[arg-type]
