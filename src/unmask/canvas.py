"""The canvas: a batch of left-padded rows, their masks, positions and blocks, built once.

The loop, the likelihood estimator and guidance all work on the same
layout: row i is ``[pad ... pad | prompt_i | generated]``, padding on the
left so that every row's generated region starts at the same column
``width``; position ids count from each row's first real token, so a row
gives the same logits padded or alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .denoiser import TokenSpec, canvas_positions


@dataclass(frozen=True)
class Canvas:
    """``ids [N, width + gen_length]`` and what the denoiser and the loop need about them."""

    ids: Tensor  # long: left padding, prompt, then gen_length generated columns (mask ids at the start)
    attention_mask: Tensor  # bool: False on left padding
    positions: Tensor  # long: 0 at each row's first real token
    width: int  # first generated column (the longest prompt's length)
    padded: bool  # whether any row has left padding (else no key mask is needed)

    @classmethod
    def build(cls, rows: Sequence[Sequence[int]], gen_length: int, spec: TokenSpec,
              device: torch.device | str = "cpu") -> Canvas:
        """Rows of token ids, left-padded with ``spec.pad_id``, followed by ``gen_length`` mask ids."""
        n, width = len(rows), max(map(len, rows))
        ids = torch.full((n, width + gen_length), spec.mask_id, dtype=torch.long)
        attention_mask = torch.ones(ids.shape, dtype=torch.bool)
        for i, row in enumerate(rows):
            pad = width - len(row)
            ids[i, :pad] = spec.pad_id
            attention_mask[i, :pad] = False
            ids[i, pad:width] = torch.tensor(list(row), dtype=torch.long)
        padded = any(len(row) < width for row in rows)
        attention_mask = attention_mask.to(device)
        return cls(ids.to(device), attention_mask, canvas_positions(attention_mask), width, padded)

    @property
    def gen_length(self) -> int:
        return int(self.ids.shape[1]) - self.width

    @property
    def key_mask(self) -> Tensor | None:
        """The mask of real keys for the denoiser, or None when no row is padded."""
        return self.attention_mask if self.padded else None

    @property
    def prompt_mask(self) -> Tensor:
        """``[N, T]`` bool: the prompt tokens (real columns before ``width``), which guidance masks."""
        cols = torch.arange(self.ids.shape[1], device=self.ids.device)
        return self.attention_mask & (cols < self.width)

    def block(self, b: int, block_length: int) -> tuple[int, int]:
        """Canvas columns ``[lo, hi)`` of generated block ``b``."""
        return self.width + b * block_length, self.width + (b + 1) * block_length
