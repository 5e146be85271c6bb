"""The native adapter's forward pass: a bidirectional decoder over transformers' own modules.

LLaDA runs in transformers' ``LlamaForCausalLM``, Dream/DiffuCoder in
``Qwen2ForCausalLM``, SDAR in ``Qwen3ForCausalLM`` and LLaDA2 in
``Glm4MoeForCausalLM`` (its rotary embedding covers part of each head: the
rest passes through); this file calls their embedding, rotary embedding,
norms, projections and MLPs, and writes only the attention core, because the
loop needs three things transformers' forward does not give together:

- bidirectional attention with a key mask (left padding), for queries that
  are any contiguous run of canvas columns; or, for block-diffusion models
  (SDAR, Fast-dLLM v2), block-causal attention: a query at position p sees
  the keys at positions p' with ``p' // block <= p // block`` (positions
  counted from each row's first real token);
- one static key/value arena per layer ``[S, H_kv, L + 1, D]`` of row slots:
  the queries' keys/values are written in place at their (slot, column) cells
  and every query attends to its row's slot, so a cached call has fixed
  shapes, needs no concatenation, and rows of different requests share it;
- the LM head only on the columns whose logits are used (shared, or per row).

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

from ..denoiser import ArenaIO


@dataclass(frozen=True)
class KVBuffers:
    """The key/value arena: per-layer buffers ``[S, H_kv, L + 1, D]`` (after the rotary embedding).

    ``S`` row slots of ``L`` canvas columns each, plus one scratch column
    (index ``L``) that the dummy queries of padded calls write and no query
    attends to. A row keeps its slot for as long as it is generated; a call
    writes its queries' keys/values at ``(slot, column)`` and attends to the
    first ``K`` columns of its rows' slots.
    """

    keys: tuple[Tensor, ...]
    values: tuple[Tensor, ...]

    @classmethod
    def allocate(cls, model: PreTrainedModel, slots: int, length: int) -> KVBuffers:
        heads, dim, layers = kv_shape(model)
        w = model.lm_head.weight
        shape = (slots, heads, length + 1, dim)
        return cls(tuple(w.new_zeros(shape) for _ in range(layers)), tuple(w.new_zeros(shape) for _ in range(layers)))

    @property
    def slots(self) -> int:
        return int(self.keys[0].shape[0])

    @property
    def length(self) -> int:
        """Canvas columns per slot (the scratch column not counted)."""
        return int(self.keys[0].shape[2]) - 1

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)


def kv_shape(model: PreTrainedModel) -> tuple[int, int, int]:
    """``(key/value heads, head dim, layers)`` of a decoder."""
    cfg = model.config
    dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)
    return int(cfg.num_key_value_heads), dim, int(cfg.num_hidden_layers)


def slot_bytes(model: PreTrainedModel, length: int) -> int:
    """Bytes of one arena slot of ``length`` columns (keys and values of every layer, scratch column included)."""
    heads, dim, layers = kv_shape(model)
    return 2 * layers * heads * (length + 1) * dim * model.lm_head.weight.element_size()


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


def _rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate-half RoPE (Su et al. 2021) on the first ``cos.shape[-1]`` dims of each head; the rest pass through."""
    rot = cos.shape[-1]
    if rot == x.shape[-1]:
        return x * cos + _rotate_half(x) * sin
    head, rest = x[..., :rot], x[..., rot:]
    return torch.cat((head * cos + _rotate_half(head) * sin, rest), dim=-1)


def _attention(attn: torch.nn.Module, x: Tensor, cos: Tensor, sin: Tensor, bias: Tensor | None,
               kv: tuple[Tensor, Tensor] | None, io: ArenaIO | None) -> Tensor:
    """One attention block on ``x [N, q, d]``; ``bias [N, 1, 1, K]`` bool (True = attend)."""
    n, q, _ = x.shape
    dim = attn.head_dim
    query = attn.q_proj(x).view(n, q, -1, dim)  # [N, q, H, D]
    key = attn.k_proj(x).view(n, q, -1, dim)  # [N, q, H_kv, D]
    if hasattr(attn, "q_norm"):  # Qwen3: RMSNorm over each head's dimension before the rotary embedding
        query, key = attn.q_norm(query), attn.k_norm(key)
    query, key = query.transpose(1, 2), key.transpose(1, 2)  # [N, H, q, D], [N, H_kv, q, D]
    value = attn.v_proj(x).view(n, q, -1, dim).transpose(1, 2)
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # [N, 1, q, R]: R = D, or fewer (partial rotary: GLM, LLaDA2)
    query, key = _rotary(query, cos, sin), _rotary(key, cos, sin)
    if kv is not None:
        assert io is not None
        rows = io.slots.unsqueeze(-1)  # [N, 1]: with cols [N, q], indexes [N, q] cells of [S, :, L + 1]
        kv[0][rows, :, io.cols] = key.transpose(1, 2)  # [N, q, H_kv, D]: the queries' own cells, in place
        kv[1][rows, :, io.cols] = value.transpose(1, 2)
        key = kv[0][:, :, : io.keys].index_select(0, io.slots)  # [N, H_kv, K, D]: a copy of the rows' keys only
        value = kv[1][:, :, : io.keys].index_select(0, io.slots)
    groups = query.shape[1] // key.shape[1]
    if groups > 1:  # grouped-query attention: repeat the key/value heads (SDPA's enable_gqa has no masked kernel)
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=bias, scale=attn.scaling)  # [N, H, q, D]
    return attn.o_proj(out.transpose(1, 2).reshape(n, q, -1))


def block_causal_mask(position_ids: Tensor, key_mask: Tensor | None, key_positions: Tensor, block: int) -> Tensor:
    """``[N, 1, q, K]`` bool (True = attend): key block ``<=`` query block, block = position // ``block``.

    ``position_ids [N, q]`` of the queries, ``key_positions [N or 1, K]`` of the
    keys, ``key_mask [N, K]`` (None: every key is real).
    """
    allowed = (key_positions // block).unsqueeze(1) <= (position_ids // block).unsqueeze(-1)  # [N, q, K]
    if key_mask is not None:
        allowed = allowed & key_mask.unsqueeze(1)
    return allowed.unsqueeze(1)


def arena_key_positions(key_mask: Tensor | None, keys: int, device: torch.device) -> Tensor:
    """Positions of a row's arena columns ``[0, keys)``: counted from its first real key (``key_mask``),
    or the column itself without a mask (no left padding)."""
    if key_mask is None:
        return torch.arange(keys, device=device).unsqueeze(0)
    return (key_mask.long().cumsum(-1) - 1).clamp_min(0)


def decoder_forward(
    model: PreTrainedModel,
    input_ids: Tensor,
    position_ids: Tensor,
    key_mask: Tensor | None,
    out_index: Tensor | None,
    arena: KVBuffers | None = None,
    io: ArenaIO | None = None,
    block: int | None = None,
) -> Tensor:
    """Raw LM-head logits ``[N, n_out, V]`` of the queries ``out_index`` (``[n_out]`` shared, ``[N, n_out]``
    per row, or None for all).

    ``input_ids, position_ids [N, q]``. Without an ``arena`` the queries attend
    to each other, with ``key_mask [N, q]``; with one they write their
    keys/values into it where ``io`` says and attend to their rows' first
    ``io.keys`` columns, with ``key_mask [N, io.keys]``. ``key_mask=None``
    attends to every key. ``block``: block-causal attention with blocks of
    that many positions (None: bidirectional); the keys' positions are the
    queries' own without an arena, and come from ``key_mask`` with one.
    """
    inner = model.model
    hidden = inner.embed_tokens(input_ids)  # [N, q, d]
    cos, sin = inner.rotary_emb(hidden, position_ids)  # [N, q, D]
    if block is None:
        bias = None if key_mask is None else key_mask[:, None, None, :]  # [N, 1, 1, K] bool
    else:
        keys = position_ids if arena is None else arena_key_positions(key_mask, io.keys, input_ids.device)  # type: ignore[union-attr]
        bias = block_causal_mask(position_ids, key_mask, keys, block)  # [N, 1, q, K]
    for i, layer in enumerate(inner.layers):
        layer_kv = None if arena is None else (arena.keys[i], arena.values[i])
        hidden = hidden + _attention(layer.self_attn, layer.input_layernorm(hidden), cos, sin, bias, layer_kv, io)
        hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
    if out_index is not None:
        if out_index.dim() == 1:
            hidden = hidden.index_select(1, out_index)
        else:
            hidden = hidden.gather(1, out_index.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
    return model.lm_head(inner.norm(hidden))
