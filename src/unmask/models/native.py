"""The native denoiser: a transformers decoder run bidirectionally, with a static key/value cache.

The weights live in transformers' own ``LlamaForCausalLM`` (LLaDA) or
``Qwen2ForCausalLM`` (Dream, DiffuCoder); :func:`~unmask.models.forward.decoder_forward`
runs them without a causal mask, with padded keys hidden by a key mask, and
computes the LM head only on the columns the caller asks for. Dream's logits
are shifted (position i-1 predicts token i): ``family.logit_shift`` realigns
them here, and cached segments start ``lookbehind`` columns before the block
so that the block's first position still gets its aligned logits.

The cache of a generation is one :class:`~unmask.models.forward.KVBuffers`
over the whole canvas. :meth:`NativeDenoiser.compiled` gives the same model
with static shapes, compiled and (on CUDA) captured as graphs
(:mod:`unmask.models.runner`).
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformers import PreTrainedModel

from ..denoiser import CachingDenoiser, TokenSpec, Window
from .families import Family, align_shifted
from .forward import KVBuffers, check_supported, decoder_forward


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


class NativeDenoiser(CachingDenoiser):
    """A :class:`~unmask.denoiser.CachingDenoiser` over a transformers decoder with bidirectional attention."""

    def __init__(self, model: PreTrainedModel, spec: TokenSpec, family: Family, add_bos: bool | None = None) -> None:
        check_supported(model)
        self.model = model  # used as given: generation runs under no_grad, and the forward has no dropout
        self.spec = spec
        self.family = family
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
        q = input_ids.shape[1]
        a, b = logit_columns(0, q, window, self.lookbehind)
        key_mask = None if bool(attention_mask.all()) else attention_mask.bool()  # no mask: fastest SDPA kernels
        index = torch.arange(a, b, device=input_ids.device)
        raw = decoder_forward(self.model, input_ids, position_ids, key_mask, index)
        width = q if window is None else window[1] - window[0]
        return align(raw, position_ids, a, b, width, self.lookbehind)

    def new_cache(self, batch: int, length: int) -> KVBuffers:
        return KVBuffers.allocate(self.model, batch, length)

    def forward_cached(
        self, input_ids: Tensor, position_ids: Tensor, key_mask: Tensor | None, cache: KVBuffers, start: int,
        window: Window,
    ) -> Tensor:
        n, q = input_ids.shape
        if cache.batch != n or cache.length < start + q or (key_mask is not None and key_mask.shape != (n, cache.length)):
            mask_shape = None if key_mask is None else tuple(key_mask.shape)
            raise ValueError(f"a cache of {cache.batch} rows x {cache.length} columns and key_mask {mask_shape} "
                             f"do not fit queries [{start}, {start + q}) of {n} rows")
        a, b = logit_columns(start, q, window, self.lookbehind)
        cols = torch.arange(start, start + q, device=input_ids.device)
        index = torch.arange(a, b, device=input_ids.device)
        raw = decoder_forward(self.model, input_ids, position_ids, key_mask, index, cache.keys, cache.values, cols)
        return align(raw, position_ids, a, b, window[1] - window[0], self.lookbehind)

    def compiled(self) -> CachingDenoiser:
        """This model with static shapes, compiled once per shape and kept (graphs are reused across calls)."""
        if self._compiled is None:
            from .runner import CompiledDenoiser

            self._compiled = CompiledDenoiser(self)
        return self._compiled
