"""LLaDA checkpoints in transformers' own ``LlamaForCausalLM``.

LLaDA-8B (Nie et al. 2025, ``modeling_llada.py``, ``block_type: llama``) is a
LLaMA block run bidirectionally: RMSNorm, rotary embeddings (``rope_theta``,
500000 for LLaDA-8B, the rotate-half convention of HF Llama), attention
without bias, and SwiGLU ``ff_out(silu(ff_proj(x)) * up_proj(x))``, so
``ff_proj`` is the gate. Only the tensor names and config fields differ.
"""

from __future__ import annotations

import re
from typing import Any

from transformers import LlamaConfig

# LLaDA block tensor -> LlamaDecoderLayer tensor
_BLOCK = {
    "attn_norm": "input_layernorm",
    "q_proj": "self_attn.q_proj",
    "k_proj": "self_attn.k_proj",
    "v_proj": "self_attn.v_proj",
    "attn_out": "self_attn.o_proj",
    "ff_norm": "post_attention_layernorm",
    "ff_proj": "mlp.gate_proj",  # the gate: silu(ff_proj(x)) * up_proj(x)
    "up_proj": "mlp.up_proj",
    "ff_out": "mlp.down_proj",
}
_TOP = {
    "model.transformer.wte.weight": "model.embed_tokens.weight",
    "model.transformer.ln_f.weight": "model.norm.weight",
    "model.transformer.ff_out.weight": "lm_head.weight",  # absent when weight_tying
}
_BLOCK_RE = re.compile(r"model\.transformer\.blocks\.(\d+)\.(\w+)\.weight")

# config fields whose value must be the one below for the native path to be exact
_REQUIRED = {
    "block_type": "llama",
    "layer_norm_type": "rms",
    "activation_type": "silu",
    "alibi": False,
    "rope": True,
    "include_bias": False,
    "include_qkv_bias": False,
    "attention_layer_norm": False,
    "scale_logits": False,
    "clip_qkv": None,
}


def llada_rename(name: str) -> str:
    """The ``LlamaForCausalLM`` name of a LLaDA checkpoint tensor; ``ValueError`` for an unknown one."""
    if name in _TOP:
        return _TOP[name]
    m = _BLOCK_RE.fullmatch(name)
    if m and m.group(2) in _BLOCK:
        return f"model.layers.{m.group(1)}.{_BLOCK[m.group(2)]}.weight"
    raise ValueError(
        f"unexpected tensor {name!r} in a LLaDA checkpoint (known: model.transformer.wte/blocks/ln_f/ff_out)"
    )


def llada_config(raw: dict[str, Any]) -> LlamaConfig:
    """A bidirectional ``LlamaConfig`` equivalent to a LLaDA ``config.json`` dict."""
    for key, want in _REQUIRED.items():
        got = raw.get(key, want)
        if got != want:
            raise ValueError(
                f"LLaDA config {key}={got!r} is not supported by the native path (it needs {want!r}); "
                "load with native=False to run the checkpoint's own code"
            )
    d_model, n_heads = int(raw["d_model"]), int(raw["n_heads"])
    n_kv = raw.get("n_kv_heads") or (1 if raw.get("multi_query_attention") else n_heads)
    mlp = raw.get("mlp_hidden_size") or int(raw.get("mlp_ratio", 4)) * d_model
    return LlamaConfig(
        hidden_size=d_model,
        num_attention_heads=n_heads,
        num_key_value_heads=int(n_kv),
        intermediate_size=int(mlp),
        num_hidden_layers=int(raw["n_layers"]),
        vocab_size=int(raw.get("embedding_size") or raw["vocab_size"]),  # rows of wte and of the LM head
        max_position_embeddings=int(raw.get("max_sequence_length", 4096)),
        rms_norm_eps=float(raw.get("rms_norm_eps", 1e-5)),
        rope_theta=float(raw.get("rope_theta", 10000.0)),
        tie_word_embeddings=bool(raw.get("weight_tying", False)),
        hidden_act="silu",
        attention_bias=False,
        mlp_bias=False,
    )
