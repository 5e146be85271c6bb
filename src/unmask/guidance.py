"""Classifier-free guidance as a denoiser wrapper, so the loop never knows.

The unconditional copy is the canvas with the prompt masked; both copies run
in one batched call and combine by :func:`guide`: ``u + (s + 1) * (c - u)``
(LLaDA's rule), extended to logits of ``-inf``. With a cache, the wrapped
denoiser's cache holds 2N rows (conditional, then unconditional).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .denoiser import CachingDenoiser, Denoiser, Window

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


class Guided(CachingDenoiser):
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

    def can_cache(self) -> bool:
        return self.inner.can_cache()

    def _combine(self, logits: Tensor) -> Tensor:
        cond, uncond = logits.chunk(2, dim=0)
        return guide(cond, uncond, self.scale)

    def _both(self, input_ids: Tensor, position_ids: Tensor) -> Tensor:
        """``[2N, q]``: the ids, then the same with the prompt masked.

        Positions count from each row's first real token, so the prompt tokens of
        any run of columns (the whole canvas, or a segment with a lookbehind
        query) are those at positions below the row's prompt length; padding
        columns may be masked too, which changes nothing (their keys are hidden).
        """
        uncond = input_ids.masked_fill(position_ids < self.prompt_lengths, self.spec.mask_id)
        return torch.cat([input_ids, uncond], 0)

    def __call__(
        self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, window: Window | None = None
    ) -> Tensor:
        ids = self._both(input_ids, position_ids)
        return self._combine(self.inner(ids, attention_mask.repeat(2, 1), position_ids.repeat(2, 1), window))

    def new_cache(self, batch: int, length: int) -> Any:
        assert isinstance(self.inner, CachingDenoiser)
        return self.inner.new_cache(2 * batch, length)

    def forward_cached(
        self, input_ids: Tensor, position_ids: Tensor, key_mask: Tensor | None, cache: Any, start: int, window: Window
    ) -> Tensor:
        assert isinstance(self.inner, CachingDenoiser)
        ids = self._both(input_ids, position_ids)
        mask = None if key_mask is None else key_mask.repeat(2, 1)
        return self._combine(self.inner.forward_cached(ids, position_ids.repeat(2, 1), mask, cache, start, window))
