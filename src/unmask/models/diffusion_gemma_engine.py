"""DiffusionGemma as an engine denoiser: per-row encoder caches and self-conditioning in arena slots.

:class:`DiffusionGemma` wraps the operations of
:class:`~unmask.models.diffusion_gemma.DiffusionGemmaDenoiser` in the
:class:`~unmask.denoiser.CanvasDenoiser` contract the engine drives
(DESIGN.md, "Uniform-state corruption and DiffusionGemma"):

- the arena holds, per row slot, the row's encoder state (its prompt and
  finished canvases, encoded once: the prompt by the first canvas's first
  call, a finished canvas by the next canvas's first call, before the
  decoder runs, so NFE counts decoder calls only, as transformers'
  ``tokens_per_forward`` does) and its self-conditioning state ``[C, H]``;
- one call merges the slots' states of its rows (rows of requests at
  different canvases: caches of different lengths, left-padded), runs the
  decoder on their canvases, and :meth:`DiffusionGemma.condition` keeps each
  row's next self-conditioning state from the decision's processed logits.

The vocabulary seen by the engine has one extra id, ``V`` (the model's
vocabulary size): the marker of an uncommitted position in the engine's
canvas, which never reaches the model (the engine replaces it by a uniform
token before each call) and is never sampled (the logits have ``V`` columns).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..denoiser import CanvasDenoiser, CanvasIO, TokenSpec
from .diffusion_gemma import DiffusionGemmaDenoiser, EncoderState


class GemmaArena:
    """Per slot: the row's encoder state (one row, or None before its prompt) and self-conditioning ``[C, H]``."""

    def __init__(self, slots: int) -> None:
        self.states: list[EncoderState | None] = [None] * slots
        self.conditioning: list[Tensor | None] = [None] * slots

    @property
    def nbytes(self) -> int:
        total = 0
        for state in self.states:
            if state is not None:
                total += sum(t.nbytes for layer in state.cache.layers for t in (layer.keys, layer.values))
        return total + sum(c.nbytes for c in self.conditioning if c is not None)


class DiffusionGemma(CanvasDenoiser):
    """transformers' ``DiffusionGemmaForBlockDiffusion`` for :func:`unmask.generate` (uniform-state)."""

    def __init__(self, ops: DiffusionGemmaDenoiser, max_length: int | None = None) -> None:
        self.ops = ops
        self.model = ops.model
        self.canvas_length = ops.canvas_length
        self.vocab = ops.vocab_size  # the model's vocabulary; the engine's marker of uncommitted positions
        self.spec = TokenSpec(mask_id=ops.vocab_size, eos_ids=ops.eos_ids, pad_id=ops.pad_id,
                              vocab_size=ops.vocab_size + 1, max_length=max_length)

    @property
    def device(self) -> torch.device:
        return self.ops.device

    @property
    def dtype(self) -> torch.dtype:
        return self.ops.embed_dtype

    def new_arena(self, slots: int, length: int) -> GemmaArena:
        return GemmaArena(slots)

    def forward_canvas(self, arena: GemmaArena, io: CanvasIO, canvas: Tensor) -> Tensor:
        ops, n = self.ops, len(io.slots)
        fresh = [i for i, p in enumerate(io.prompts) if p is not None]
        if fresh:  # first canvas: encode the prompts, left-padded together, one slot each
            width = max(len(io.prompts[i]) for i in fresh)  # type: ignore[arg-type]
            ids = torch.full((len(fresh), width), ops.pad_id, dtype=torch.long)
            mask = torch.zeros(len(fresh), width, dtype=torch.bool)
            for j, i in enumerate(fresh):
                row = io.prompts[i]
                assert row is not None
                ids[j, width - len(row):] = torch.tensor(row, dtype=torch.long)
                mask[j, width - len(row):] = True
            self._split(ops.encode(ids, mask), [io.slots[i] for i in fresh], arena)
        grown = [i for i, e in enumerate(io.extend) if e]
        if grown:  # a finished canvas into each of these rows' caches, once
            assert io.finished is not None
            state = self._merged(arena, [io.slots[i] for i in grown])
            sel = torch.tensor(grown, dtype=torch.long, device=io.finished.device)
            self._split(ops.extend(state, io.finished.index_select(0, sel)), [io.slots[i] for i in grown], arena)
        for i, start in enumerate(io.starts):
            if start:
                arena.conditioning[io.slots[i]] = None
        state = self._merged(arena, io.slots)
        cond = torch.stack([self._conditioning(arena, s) for s in io.slots]) if n > 1 else \
            self._conditioning(arena, io.slots[0]).unsqueeze(0)
        return ops.decode(state, canvas.to(ops.device), cond)

    def condition(self, arena: GemmaArena, slots: list[int], processed: Tensor) -> None:
        cond = self.ops.conditioning(processed)
        for i, s in enumerate(slots):
            arena.conditioning[s] = cond[i]

    def _conditioning(self, arena: GemmaArena, slot: int) -> Tensor:
        c = arena.conditioning[slot]
        return self.ops.initial_conditioning(1)[0] if c is None else c

    def _merged(self, arena: GemmaArena, slots: list[int]) -> EncoderState:
        first = torch.zeros(1, dtype=torch.long, device=self.device)
        parts = []
        for s in slots:
            state = arena.states[s]
            assert state is not None, f"slot {s} has no encoder state: its prompt was never encoded"
            parts.append((state, first))
        return self.ops.merge(parts)

    def _split(self, state: EncoderState, slots: list[int], arena: GemmaArena) -> None:
        for i, s in enumerate(slots):
            arena.states[s] = self.ops.merge([(state, torch.tensor([i], device=self.device))])


def load_gemma_denoiser(path: Any, *, device: Any = None, dtype: Any = None) -> tuple[DiffusionGemma, Any]:
    """A DiffusionGemma checkpoint as ``(engine denoiser, tokenizer or None)``."""
    from .diffusion_gemma import load_diffusion_gemma

    ops, tokenizer = load_diffusion_gemma(path, device=device, dtype=dtype)
    text = ops.model.config.text_config
    return DiffusionGemma(ops, int(getattr(text, "max_position_embeddings", 0)) or None), tokenizer


__all__ = ["DiffusionGemma", "GemmaArena", "load_gemma_denoiser"]
