"""One call's decision over rows whose blocks start with different numbers of filled offsets.

Block-diffusion models lay their blocks out from each row's position 0, so a
prompt tail fills the first ``lead`` offsets of a row's first generated block
(:class:`~unmask.canvas.Canvas`). :func:`~unmask.decide.decide` takes one lead
per call, so rows are grouped by lead and the decisions merged back in row
order; every other case is one plain ``decide``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..decide import decide
from ..noise import Noise
from ..planners import Planner
from ..sampling import SamplingParams

Decided = tuple[Tensor, Tensor, Tensor, Tensor, "Tensor | None"]  # reveal, tokens, confidence, logq, finite


def decide_by_lead(logits: Tensor, masked: Tensor, keys: Tensor, positions: Tensor, planner: Planner,
                   sampling: SamplingParams, call: int, num_blocks: int, mask_id: int, leads: list[int]) -> Decided:
    """``decide`` for rows with noise ``keys [N]`` at ``positions [N, Bl]``, one group per distinct lead."""
    groups = sorted(set(leads))
    out: list[Tensor | None] = []
    for lead in groups:
        sel = None if len(groups) == 1 else torch.tensor([i for i, t in enumerate(leads) if t == lead],
                                                         device=logits.device)

        def pick(t: Tensor, sel: Tensor | None = sel) -> Tensor:
            return t if sel is None else t.index_select(0, sel)

        noise = Noise(pick(keys)).at(call, pick(positions))
        d = decide(pick(logits), pick(masked), planner, sampling, noise, call, num_blocks, mask_id, lead=lead)
        got = [d.reveal, d.proposal.tokens, d.proposal.confidence, d.proposal.logq, d.proposal.finite]
        if sel is None:
            return got[0], got[1], got[2], got[3], got[4]
        if not out:
            out = [None if t is None else t.new_zeros((len(leads), *t.shape[1:])) for t in got]
        for o, t in zip(out, got, strict=True):
            if o is not None:
                assert t is not None
                o.index_copy_(0, sel, t)
    assert out[0] is not None and out[1] is not None and out[2] is not None and out[3] is not None
    return out[0], out[1], out[2], out[3], out[4]
