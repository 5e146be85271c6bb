"""The native denoiser: a transformers decoder run bidirectionally, with a key/value API.

The model is transformers' own ``LlamaForCausalLM`` (LLaDA) or
``Qwen2ForCausalLM`` (Dream, DiffuCoder), run bidirectionally: every call
passes ``is_causal=False`` down to the SDPA kernel, and a call with padding
adds an additive 4-D mask ``[N, 1, q, k]`` that hides padded keys from every
query (a 4-D mask bypasses transformers' causal-mask builder; eager attention
would not honour a bool one). ``config.is_causal`` is also False, so a 2-D
mask would build a bidirectional mask too.

Key/value state (see :mod:`unmask.cache`) is a tuple over layers of ``(K, V)``,
each ``[N, H_kv, T, D]`` after rotary embedding, so cached keys keep their
positions and their order does not matter.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import Tensor
from transformers import PreTrainedModel
from transformers.cache_utils import Cache, DynamicLayer

from ..cache import KV
from ..denoiser import TokenSpec
from .families import Family, align_shifted


class _SegmentLayer(DynamicLayer):
    """One layer's keys/values for a segment call: the past (read-only) followed by the query tokens.

    ``keys``/``values`` are ``[N, H_kv, k_past + q, D]`` buffers whose first
    ``k_past`` slots hold the past; ``update`` writes the queries' K/V into the
    last ``q`` slots only, so the past is never copied again nor modified.
    """

    def __init__(self, keys: Tensor | None, values: Tensor | None, k_past: int) -> None:
        super().__init__()
        self.keys, self.values, self.k_past = keys, values, k_past
        self.new: tuple[Tensor, Tensor] | None = None
        self.is_initialized = True

    def update(self, key_states: Tensor, value_states: Tensor, *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor]:
        self.new = (key_states, value_states)  # [N, H_kv, q, D]
        if self.keys is None or self.values is None:
            return key_states, value_states
        self.keys[:, :, self.k_past :] = key_states
        self.values[:, :, self.k_past :] = value_states
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.k_past


def _release_scratch(owner: weakref.ref[NativeDenoiser], token: int) -> None:
    den = owner()
    if den is not None and den._scratch is not None and id(den._scratch[2]) == token:
        den._scratch = None


class NativeDenoiser:
    """A :class:`~unmask.denoiser.CachingDenoiser` over a transformers decoder with bidirectional attention.

    ``family.logit_shift`` realigns Dream-style logits (position i-1 predicts
    token i) so that ``logits[:, i]`` is always the distribution of token i;
    for segments, the cache policies send ``lookbehind`` extra leading query
    tokens so that the first real position still gets its aligned logits.
    """

    def __init__(self, model: PreTrainedModel, spec: TokenSpec, family: Family, add_bos: bool | None = None) -> None:
        self.model = model.eval().requires_grad_(False)
        self.spec = spec
        self.family = family
        self.add_bos = family.add_bos if add_bos is None else add_bos  # the prompt rule for encode_prompts
        self.lookbehind = family.logit_shift  # leading query tokens a segment needs (read by unmask.cache)
        self.num_layers = int(model.config.num_hidden_layers)
        # per-layer [past ; queries] buffers for the last past seen: the calls of one block share a past,
        # so it is copied into them once per block instead of concatenated on every call; they are
        # released when that past is (weak reference to its first key tensor)
        self._scratch: tuple[weakref.ref[Tensor], int, list[tuple[Tensor, Tensor]]] | None = None

    @property
    def device(self) -> torch.device:
        return self.model.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.lm_head.weight.dtype

    def __call__(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor) -> Tensor:
        """Logits ``[N, T, V]`` of the whole canvas; ``attention_mask [N, T]`` is False on padding."""
        logits, _ = self._run(input_ids, position_ids, attention_mask, None, record=False)
        return logits

    def forward_kv(
        self, input_ids: Tensor, position_ids: Tensor, key_mask: Tensor, past: KV | None
    ) -> tuple[Tensor, KV]:
        """Run queries ``[N, q]`` over ``past`` keys; ``key_mask [N, k_past + q]`` (past first, then queries).

        Returns the query logits ``[N, q, V]`` and the queries' own ``(K, V)`` per layer.
        """
        logits, kv = self._run(input_ids, position_ids, key_mask, past, record=True)
        assert kv is not None
        return logits, kv

    def _run(
        self, input_ids: Tensor, position_ids: Tensor, key_mask: Tensor, past: KV | None, record: bool
    ) -> tuple[Tensor, KV | None]:
        n, q = input_ids.shape
        k_past = 0 if past is None else int(past[0][0].shape[-2])
        if key_mask.shape != (n, k_past + q):
            raise ValueError(f"key_mask must be [N, k_past + q] = {[n, k_past + q]}, got {list(key_mask.shape)}")
        if past is not None and k_past == 0:
            past = None
        mask = None  # no padding: no mask at all, so SDPA may pick its fastest kernels
        if not bool(key_mask.all()):
            # additive mask [N, 1, q, k]: 0 on real keys, the dtype's minimum on padded keys, for every query
            bias = torch.zeros(key_mask.shape, dtype=self.dtype, device=key_mask.device)
            bias = bias.masked_fill(~key_mask.bool(), torch.finfo(self.dtype).min)
            mask = bias[:, None, None, :].expand(n, 1, q, k_past + q)
        cache = self._segment_cache(past, q) if (record or past is not None) else None
        hidden = self.model.model(
            input_ids=input_ids, attention_mask=mask, position_ids=position_ids, past_key_values=cache,
            use_cache=False, is_causal=False,  # is_causal reaches the attention kernel: bidirectional without a mask
        ).last_hidden_state  # [N, q, d]
        logits = self.model.lm_head(hidden)  # [N, q, V]
        if self.family.logit_shift:
            logits = align_shifted(logits, position_ids)  # Dream: raw[:, i - 1] predicts token i
        kv = None
        if record:
            assert cache is not None
            kv = tuple(layer.new for layer in cache.layers)  # type: ignore[attr-defined]
        return logits, kv

    def _segment_cache(self, past: KV | None, q: int) -> Cache:
        if past is None:
            return Cache(layers=[_SegmentLayer(None, None, 0) for _ in range(self.num_layers)])
        if len(past) != self.num_layers:
            raise ValueError(f"past must hold (K, V) for {self.num_layers} layers, got {len(past)}")
        key, k_past = past[0][0], int(past[0][0].shape[-2])
        if self._scratch is None or self._scratch[0]() is not key or self._scratch[1] != q:
            buffers = []
            for k, v in past:  # [N, H_kv, k_past, D] -> [N, H_kv, k_past + q, D], past in front
                kb = k.new_empty(*k.shape[:2], k_past + q, k.shape[-1])
                vb = v.new_empty(*v.shape[:2], k_past + q, v.shape[-1])
                kb[:, :, :k_past], vb[:, :, :k_past] = k, v
                buffers.append((kb, vb))
            self._scratch = (weakref.ref(key), q, buffers)
            weakref.finalize(key, _release_scratch, weakref.ref(self), id(buffers))
        return Cache(layers=[_SegmentLayer(kb, vb, k_past) for kb, vb in self._scratch[2]])
