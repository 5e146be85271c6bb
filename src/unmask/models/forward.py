"""The native adapter's forward pass: a bidirectional decoder over transformers' own modules.

LLaDA runs in transformers' ``LlamaForCausalLM`` and Dream/DiffuCoder in
``Qwen2ForCausalLM``; this file calls their embedding, rotary embedding,
norms, projections and MLPs, and writes only the attention core, because the
loop needs three things transformers' forward does not give together:

- bidirectional attention with a key mask (left padding), for queries that
  are any contiguous run of canvas columns;
- a static key/value buffer per layer ``[N, H_kv, K, D]``: the queries'
  keys/values are written in place at given buffer columns (``index_copy_``)
  and every query attends to the whole buffer, so a cached call has fixed
  shapes and needs no concatenation;
- the LM head only on the columns whose logits are used.

Every shape depends only on the input shapes, and nothing reads a value back
to the host, so the same function runs eagerly, under ``torch.compile`` and
inside a captured CUDA graph (:mod:`unmask.models.runner`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import PreTrainedModel


@dataclass(frozen=True)
class KVBuffers:
    """Per-layer key and value buffers ``[N, H_kv, K, D]`` (after the rotary embedding)."""

    keys: tuple[Tensor, ...]
    values: tuple[Tensor, ...]

    @classmethod
    def allocate(cls, model: PreTrainedModel, batch: int, length: int) -> KVBuffers:
        cfg = model.config
        heads = int(cfg.num_key_value_heads)
        dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)
        w = model.lm_head.weight
        shape = (batch, heads, length, dim)
        layers = range(int(cfg.num_hidden_layers))
        return cls(tuple(w.new_zeros(shape) for _ in layers), tuple(w.new_zeros(shape) for _ in layers))

    @property
    def batch(self) -> int:
        return int(self.keys[0].shape[0])

    @property
    def length(self) -> int:
        return int(self.keys[0].shape[2])


def check_supported(model: PreTrainedModel) -> None:
    """Raise ``ValueError`` for configurations the forward below does not implement."""
    cfg = model.config
    if getattr(cfg, "use_sliding_window", False):
        raise ValueError("checkpoints with sliding-window attention are not supported by the native adapter")
    for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
        if not hasattr(model.model.layers[0].self_attn, name):
            raise ValueError(f"the native adapter expects Llama/Qwen2 attention with {name}")


def _rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _attention(attn: torch.nn.Module, x: Tensor, cos: Tensor, sin: Tensor, bias: Tensor,
               kv: tuple[Tensor, Tensor] | None, cols: Tensor | None) -> Tensor:
    """One attention block on ``x [N, q, d]``; ``bias [N, 1, 1, K]`` bool (True = attend)."""
    n, q, _ = x.shape
    dim = attn.head_dim
    query = attn.q_proj(x).view(n, q, -1, dim).transpose(1, 2)  # [N, H, q, D]
    key = attn.k_proj(x).view(n, q, -1, dim).transpose(1, 2)  # [N, H_kv, q, D]
    value = attn.v_proj(x).view(n, q, -1, dim).transpose(1, 2)
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # [N, 1, q, D]
    query = query * cos + _rotate_half(query) * sin
    key = key * cos + _rotate_half(key) * sin
    if kv is not None:
        assert cols is not None
        kv[0].index_copy_(2, cols, key)  # the queries' own columns of the buffer, in place
        kv[1].index_copy_(2, cols, value)
        key, value = kv
    groups = query.shape[1] // key.shape[1]
    if groups > 1:  # grouped-query attention: repeat the key/value heads (SDPA's enable_gqa has no masked kernel)
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=bias, scale=attn.scaling)  # [N, H, q, D]
    return attn.o_proj(out.transpose(1, 2).reshape(n, q, -1))


def decoder_forward(
    model: PreTrainedModel,
    input_ids: Tensor,
    position_ids: Tensor,
    key_mask: Tensor | None,
    out_index: Tensor | None,
    keys: tuple[Tensor, ...] | None = None,
    values: tuple[Tensor, ...] | None = None,
    cols: Tensor | None = None,
) -> Tensor:
    """Raw LM-head logits ``[N, n_out, V]`` of the queries ``out_index [n_out]`` (all if None).

    ``input_ids, position_ids [N, q]``. Without ``keys``/``values`` (a
    :class:`KVBuffers`' tuples) the queries attend to each other, with
    ``key_mask [N, q]``; with them they write their keys/values at buffer
    columns ``cols [q]`` and attend to the whole buffer with ``key_mask [N, K]``.
    ``key_mask=None`` attends to every key.
    """
    inner = model.model
    hidden = inner.embed_tokens(input_ids)  # [N, q, d]
    cos, sin = inner.rotary_emb(hidden, position_ids)  # [N, q, D]
    bias = None if key_mask is None else key_mask[:, None, None, :]  # [N, 1, 1, K] bool
    for i, layer in enumerate(inner.layers):
        layer_kv = None if keys is None or values is None else (keys[i], values[i])
        hidden = hidden + _attention(layer.self_attn, layer.input_layernorm(hidden), cos, sin, bias, layer_kv, cols)
        hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
    if out_index is not None:
        hidden = hidden.index_select(1, out_index)
    return model.lm_head(inner.norm(hidden))
