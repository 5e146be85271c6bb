"""Classifier-free guidance as a denoiser wrapper, so the loop never knows.

The unconditional copy is the canvas with the prompt masked; both copies run
in one batched call and combine as ``u + (s + 1) * (c - u)`` (LLaDA's rule).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .denoiser import Denoiser, TokenSpec


class Guided:
    """Wrap ``denoiser`` with guidance scale ``scale`` for a canvas whose prompt is ``prompt_mask [N, T]``."""

    def __init__(self, denoiser: Denoiser, prompt_mask: Tensor, scale: float) -> None:
        self.inner = denoiser
        self.prompt_mask = prompt_mask
        self.scale = float(scale)
        self.spec: TokenSpec = denoiser.spec
        self.prompt_lengths = prompt_mask.sum(-1, keepdim=True)  # [N, 1]: prompt tokens per row
        self.lookbehind = int(getattr(denoiser, "lookbehind", 0))  # for the cache policies

    @property
    def device(self) -> Any:
        return getattr(self.inner, "device", None)

    def _combine(self, logits: Tensor) -> Tensor:
        cond, uncond = logits.chunk(2, dim=0)
        return uncond + (self.scale + 1.0) * (cond - uncond)

    def _uncond_ids(self, input_ids: Tensor, position_ids: Tensor) -> Tensor:
        if input_ids.shape[1] == self.prompt_mask.shape[1]:
            return input_ids.masked_fill(self.prompt_mask, self.spec.mask_id)
        # a segment (cache policies): its prompt tokens, if any (a lookbehind query), are those at
        # positions below the row's prompt length, since positions count from each row's first token
        return input_ids.masked_fill(position_ids < self.prompt_lengths, self.spec.mask_id)

    def __call__(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor) -> Tensor:
        ids = torch.cat([input_ids, self._uncond_ids(input_ids, position_ids)], 0)
        logits = self.inner(ids, attention_mask.repeat(2, 1), position_ids.repeat(2, 1))
        return self._combine(logits)

    def forward_kv(self, input_ids: Tensor, position_ids: Tensor, key_mask: Tensor, past: Any | None) -> tuple[Tensor, Any]:
        ids = torch.cat([input_ids, self._uncond_ids(input_ids, position_ids)], 0)
        # the key/value state has 2N rows (conditional then unconditional), and so has the past it gets back
        logits, kv = self.inner.forward_kv(ids, position_ids.repeat(2, 1), key_mask.repeat(2, 1), past)  # type: ignore[attr-defined]
        return self._combine(logits), kv
