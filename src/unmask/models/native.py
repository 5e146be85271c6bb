"""The native denoiser: a transformers decoder run bidirectionally (or block-causally), with a static key/value cache.

The weights live in transformers' own ``LlamaForCausalLM`` (LLaDA) or
``Qwen2ForCausalLM`` (Dream, DiffuCoder); :func:`~unmask.models.forward.decoder_forward`
runs them without a causal mask, with padded keys hidden by a key mask, and
computes the LM head only on the columns the caller asks for. Dream's logits
are shifted (position i-1 predicts token i): ``family.logit_shift`` realigns
them here, and cached segments start ``lookbehind`` columns before the block
so that the block's first position still gets its aligned logits.
Block-diffusion families (SDAR in ``Qwen3ForCausalLM``, Fast-dLLM v2 in
``Qwen2ForCausalLM``) declare ``attention_block``, the model's own block size,
and every call runs with the block-causal mask.

The key/value cache is one :class:`~unmask.models.forward.KVBuffers` arena of
row slots, owned by the engine that generates with it. :meth:`NativeDenoiser.compiled` gives the same model
with static shapes, compiled and (on CUDA) captured as graphs
(:mod:`unmask.models.runner`).
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformers import PreTrainedModel

from ..denoiser import ArenaIO, CachingDenoiser, TokenSpec, Want, Window
from .families import Family, align_shifted
from .forward import KVBuffers, check_supported, decoder_forward, slot_bytes


def logit_columns(start: int, q: int, window: Window | None, shift: int) -> tuple[int, int]:
    """Query indices ``[a, b)`` whose raw logits give the aligned logits of ``window``.

    The queries are canvas columns ``[start, start + q)``. With a shift, the
    window's first column needs the raw logits of the column before it when
    that column is among the queries.
    """
    lo, hi = (start, start + q) if window is None else window
    if not start <= lo < hi <= start + q:
        raise ValueError(f"window {window} must lie within the query columns [{start}, {start + q})")
    return max(lo - shift, start) - start, hi - start


def align(raw: Tensor, position_ids: Tensor, a: int, b: int, width: int, shift: int) -> Tensor:
    """The last ``width`` aligned columns from raw logits of query indices ``[a, b)``."""
    if shift:
        raw = align_shifted(raw, position_ids[:, a:b])
    return raw[:, raw.shape[1] - width :]


def source_index(want: Tensor, position_ids: Tensor, shift: int) -> Tensor:
    """Per-row query indices ``[N, W]`` whose raw logits are the aligned logits of ``want [N, W]``.

    With a shift, query j is predicted from query j - 1, except at a row's
    position 0, which keeps its own (as :func:`~unmask.models.families.align_shifted`).
    """
    if not shift:
        return want
    return want - shift * (position_ids.gather(1, want) > 0).long()


def run_want(model: PreTrainedModel, ids: Tensor, pos: Tensor, key_mask: Tensor | None, want: Want, shift: int,
             arena: KVBuffers | None = None, io: ArenaIO | None = None, block: int | None = None) -> Tensor:
    """Aligned logits of the query indices ``want`` (shared window or ``[N, W]``) from one decoder forward."""
    if isinstance(want, tuple):
        a, b = logit_columns(0, ids.shape[1], want, shift)
        index = torch.arange(a, b, device=ids.device)
        raw = decoder_forward(model, ids, pos, key_mask, index, arena, io, block)
        return align(raw, pos, a, b, want[1] - want[0], shift)
    return decoder_forward(model, ids, pos, key_mask, source_index(want, pos, shift), arena, io, block)


class NativeDenoiser(CachingDenoiser):
    """A :class:`~unmask.denoiser.CachingDenoiser` over a transformers decoder, bidirectional or, with
    ``attention_block`` (block-diffusion families), block-causal."""

    def __init__(self, model: PreTrainedModel, spec: TokenSpec, family: Family, add_bos: bool | None = None,
                 attention_block: int | None = None) -> None:
        check_supported(model)
        if (attention_block is None) != (family.attention == "full"):
            raise ValueError(f"the {family.name} family has {family.attention} attention: attention_block must be "
                             f"{'None' if family.attention == 'full' else 'its block size'}, got {attention_block!r}")
        self.model = model  # used as given: generation runs under no_grad, and the forward has no dropout
        self.spec = spec
        self.family = family
        self.attention_block = attention_block
        self.add_bos = family.add_bos if add_bos is None else add_bos
        self.lookbehind = family.logit_shift
        self._compiled: CachingDenoiser | None = None

    @property
    def device(self) -> torch.device:
        return self.model.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.lm_head.weight.dtype

    def __call__(
        self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, window: Window | None = None
    ) -> Tensor:
        want = (0, input_ids.shape[1]) if window is None else window
        return run_want(self.model, input_ids, position_ids, attention_mask.bool(), want, self.lookbehind,
                        block=self.attention_block)

    def logits_at(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, want: Want,
                  padded: bool = True) -> Tensor:
        key_mask = attention_mask.bool() if padded else None  # no mask: the fastest attention kernels
        return run_want(self.model, input_ids, position_ids, key_mask, want, self.lookbehind, block=self.attention_block)

    def new_arena(self, slots: int, length: int) -> KVBuffers:
        return KVBuffers.allocate(self.model, slots, length)

    def arena_slot_bytes(self, length: int) -> int:
        return slot_bytes(self.model, length)

    def forward_arena(self, input_ids: Tensor, position_ids: Tensor, key_mask: Tensor | None, arena: KVBuffers,
                      io: ArenaIO, want: Want) -> Tensor:
        if io.keys > arena.length or (key_mask is not None and key_mask.shape != (input_ids.shape[0], io.keys)):
            raise ValueError(f"an arena of {arena.length} columns and key_mask "
                             f"{None if key_mask is None else tuple(key_mask.shape)} do not fit {io.keys} keys")
        io = ArenaIO(io.slots, torch.where(io.cols < 0, arena.length, io.cols), io.keys)  # -1: the scratch column
        return run_want(self.model, input_ids, position_ids, key_mask, want, self.lookbehind, arena, io,
                        self.attention_block)

    def compiled(self) -> CachingDenoiser:
        """This model with static shapes, compiled once per shape and kept (graphs are reused across calls)."""
        if self._compiled is None:
            from .runner import CompiledDenoiser

            self._compiled = CompiledDenoiser(self)
        return self._compiled
