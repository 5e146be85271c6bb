"""The canvas: a batch of left-padded rows, their masks, positions and blocks, built once.

The loop, the likelihood estimator and guidance all work on the same
layout: row i is ``[pad ... pad | prompt_i | generated]``, padding on the
left so that every row's generated region starts at the same column
``width``; position ids count from each row's first real token, so a row
gives the same logits padded or alone.

Block-diffusion models (SDAR, Fast-dLLM v2) lay their blocks out from each
row's position 0, so a prompt usually ends inside a block and its tail shares
that block with the first generated tokens (SDAR's ``generate.py`` and
Fast-dLLM v2's ``batch_sample`` do so). :meth:`Canvas.build` with ``block``
does the same: row i is ``[pad | head_i | tail_i, masks ...]``, where the head
is the prompt's whole blocks and the tail (``lead_i = len % block`` tokens)
fills the first offsets of generated block 0; the padding is a multiple of
``block``, so every row's blocks start at the same columns. The generated
region runs to the block boundary after ``max(lead) + gen_length``; row i's
output is its ``gen_length`` columns after its tail (:meth:`Canvas.trim`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .denoiser import TokenSpec, canvas_positions


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def canvas_length(rows: Sequence[Sequence[int]], gen_length: int, block: int | None = None,
                  model_block: int | None = None) -> int:
    """Columns of :meth:`Canvas.build`'s canvas for these rows (without building it)."""
    if block is None:
        return max(map(len, rows)) + gen_length
    width = max(len(r) - len(r) % block for r in rows)
    need = width + _round_up(max(len(r) % block for r in rows) + gen_length, block)
    m = model_block or block
    return max(need, *(width - (len(r) - len(r) % block) + _round_up(len(r) + gen_length, m) for r in rows))


def prompt_leads(rows: Sequence[Sequence[int]], block: int | None) -> list[int]:
    """Each row's prompt tail in generated block 0 (``len % block``) when blocks are laid out from position 0
    (``block``: block-causal models), else zeros: the offset of a row's first generated token in its region."""
    return [0] * len(rows) if block is None else [len(r) % block for r in rows]


@dataclass(frozen=True)
class Canvas:
    """``ids [N, width + gen_length]`` and what the denoiser and the loop need about them."""

    ids: Tensor  # long: left padding, prompt, then gen_length generated columns (mask ids at the start)
    attention_mask: Tensor  # bool: False on left padding
    positions: Tensor  # long: 0 at each row's first real token
    width: int  # first generated column (the longest prompt's length; with blocks, the longest head's)
    padded: bool  # whether any row has left padding (else no key mask is needed)
    leads: tuple[int, ...] = ()  # with blocks: each row's prompt tail in generated block 0 (empty: none)
    pads: tuple[int, ...] = ()  # each row's left-padding columns

    @classmethod
    def build(cls, rows: Sequence[Sequence[int]], gen_length: int, spec: TokenSpec,
              device: torch.device | str = "cpu", block: int | None = None,
              model_block: int | None = None) -> Canvas:
        """Rows of token ids, left-padded with ``spec.pad_id``, followed by ``gen_length`` mask ids.

        ``block``: lay blocks of that length out from each row's position 0 (block-diffusion models, see
        the module docstring); the generated region then holds ``max(lead) + gen_length`` rounded up to a
        whole block, each row's prompt tail at its start, and runs on with masks to at least each row's
        ``model_block`` boundary (the model attends to its whole current block, masks included: a row sees
        the same canvas alone or beside longer rows).
        """
        n = len(rows)
        lead = prompt_leads(rows, block)
        head = [len(r) - t for r, t in zip(rows, lead, strict=True)]
        width = max(head)
        total = width + gen_length if block is None else canvas_length(rows, gen_length, block, model_block)
        ids = torch.full((n, total), spec.mask_id, dtype=torch.long)
        attention_mask = torch.ones(ids.shape, dtype=torch.bool)
        for i, row in enumerate(rows):
            pad = width - head[i]
            ids[i, :pad] = spec.pad_id
            attention_mask[i, :pad] = False
            ids[i, pad : pad + len(row)] = torch.tensor(list(row), dtype=torch.long)
        padded = any(h < width for h in head)
        attention_mask = attention_mask.to(device)
        return cls(ids.to(device), attention_mask, canvas_positions(attention_mask), width, padded,
                   () if block is None else tuple(lead), tuple(width - h for h in head))

    def lead(self, i: int) -> int:
        """Row ``i``'s prompt tokens in generated block 0."""
        return self.leads[i] if self.leads else 0

    def trim(self, gen: Tensor, gen_length: int) -> Tensor:
        """Each row's ``gen_length`` generated columns out of ``gen [N, region, ...]`` (the region's columns
        after the row's lead): ``[N, gen_length, ...]``."""
        if not self.leads:
            return gen[:, :gen_length]
        cols = torch.tensor(self.leads, device=gen.device).unsqueeze(1) + torch.arange(gen_length, device=gen.device)
        cols = cols.view(*cols.shape, *([1] * (gen.dim() - 2))).expand(-1, -1, *gen.shape[2:])
        return gen.gather(1, cols)

    @property
    def gen_length(self) -> int:
        return int(self.ids.shape[1]) - self.width

    @property
    def key_mask(self) -> Tensor | None:
        """The mask of real keys for the denoiser, or None when no row is padded."""
        return self.attention_mask if self.padded else None

    @property
    def prompt_mask(self) -> Tensor:
        """``[N, T]`` bool: the prompt tokens (real columns before ``width``, and each row's lead after it),
        which guidance masks."""
        cols = torch.arange(self.ids.shape[1], device=self.ids.device)
        end = self.width + torch.tensor(self.leads or [0] * self.ids.shape[0], device=self.ids.device)
        return self.attention_mask & (cols < end.unsqueeze(1))

    def block(self, b: int, block_length: int) -> tuple[int, int]:
        """Canvas columns ``[lo, hi)`` of generated block ``b``."""
        return self.width + b * block_length, self.width + (b + 1) * block_length
