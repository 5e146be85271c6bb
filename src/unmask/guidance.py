"""Classifier-free guidance: the unconditional copy of a row and the rule that combines the two.

The unconditional copy is the canvas with the prompt masked; the engine runs
it as a twin row in the same call as its conditional row (each in its own
arena slot when cached), and combines the two rows' logits with :func:`guide`
(LLaDA's rule ``u + (s + 1) * (c - u)``). :class:`Guided` wraps a denoiser for
full-canvas calls outside the engine (the likelihood estimator).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .denoiser import Denoiser, Window

NEG_INF = float("-inf")


def guide(cond: Tensor, uncond: Tensor, scale: float | Tensor) -> Tensor:
    """Classifier-free guidance ``u + (s + 1) * (c - u)`` (LLaDA's rule) that keeps ``-inf`` and never gives NaN.

    ``cond``, ``uncond``: logits ``[N, L, V]``; ``scale``: a float or a per-row
    tensor broadcastable against them (``[N, 1, 1]``), >= 0. Where either logit
    is ``-inf`` the formula is ``-inf - -inf`` or ``-inf * 0`` style NaN, so:

    - a token impossible under the conditional model (``c = -inf``) stays
      impossible: ``-inf``;
    - a token impossible only under the unconditional model (``u = -inf``,
      ``c`` finite) gets its conditional logit ``c``: the unconditional model
      says nothing about it, so guidance neither boosts it (the formula's
      limit is ``+inf``, which would make it certain) nor removes it.

    Everywhere else the rule is the formula, in the logits' dtype.
    """
    guided = torch.where(uncond == NEG_INF, cond, uncond + (scale + 1.0) * (cond - uncond))
    return guided.masked_fill(cond == NEG_INF, NEG_INF)


def unconditional(input_ids: Tensor, position_ids: Tensor, prompt_lengths: Tensor, mask_id: int) -> Tensor:
    """``input_ids [N, q]`` with the prompt masked: positions below each row's ``prompt_lengths [N, 1]``.

    Positions count from each row's first real token, so the prompt tokens of
    any run of columns (the whole canvas, or a segment with a lookbehind query)
    are those at positions below the row's prompt length; padding columns may
    be masked too, which changes nothing (their keys are hidden).
    """
    return input_ids.masked_fill(position_ids < prompt_lengths, mask_id)


class Guided(Denoiser):
    """Wrap ``denoiser`` with guidance scale ``scale`` for a canvas whose prompt is ``prompt_mask [N, T]``."""

    def __init__(self, denoiser: Denoiser, prompt_mask: Tensor, scale: float) -> None:
        self.inner = denoiser
        self.scale = float(scale)
        self.spec = denoiser.spec
        self.lookbehind = denoiser.lookbehind
        self.add_bos = denoiser.add_bos
        self.prompt_lengths = prompt_mask.sum(-1, keepdim=True)  # [N, 1]: prompt tokens per row

    @property
    def device(self) -> torch.device:
        return self.inner.device

    def __call__(
        self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, window: Window | None = None
    ) -> Tensor:
        uncond = unconditional(input_ids, position_ids, self.prompt_lengths, self.spec.mask_id)
        ids = torch.cat([input_ids, uncond], 0)
        logits = self.inner(ids, attention_mask.repeat(2, 1), position_ids.repeat(2, 1), window)
        return guide(*logits.chunk(2, dim=0), self.scale)
