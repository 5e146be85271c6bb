"""Block-diffusion checkpoints in transformers' own modules: SDAR in ``Qwen3ForCausalLM``, Fast-dLLM v2 in
``Qwen2ForCausalLM``.

SDAR (JetLM, ``modeling_sdar.py``) is Qwen3's block with its tensor names
(``model.layers.{i}.self_attn.{q,k,v,o}_proj``, per-head ``q_norm``/``k_norm``,
no q/k/v bias); Fast-dLLM v2 (NVlabs) keeps Qwen2.5's block and names (q/k/v
biases). Both differ from their AR base only in the attention mask, which
:func:`~unmask.models.forward.decoder_forward` builds from the family's block
size (:meth:`~unmask.models.families.Family.block_size`).
"""

from __future__ import annotations

from typing import Any

from transformers import Qwen2Config, Qwen3Config

from .dream import qwen_config


def qwen_rename(name: str) -> str:
    """SDAR's and Fast-dLLM v2's tensor names are Qwen3's/Qwen2's: the identity; ``ValueError`` for others."""
    if name.startswith("model.") or name == "lm_head.weight":
        return name
    raise ValueError(f"unexpected tensor {name!r} in a Qwen-layout checkpoint (known: model.*, lm_head.weight)")


def sdar_config(raw: dict[str, Any]) -> Qwen3Config:
    """A ``Qwen3Config`` equivalent to an SDAR ``config.json`` dict (the block size is the family's)."""
    return qwen_config(raw, Qwen3Config, ("head_dim", "attention_bias"), "SDAR")  # type: ignore[return-value]


def fast_dllm_config(raw: dict[str, Any]) -> Qwen2Config:
    """A ``Qwen2Config`` equivalent to a Fast-dLLM v2 ``config.json`` dict (``bd_size`` is the family's)."""
    return qwen_config(raw, Qwen2Config, (), "Fast-dLLM v2")  # type: ignore[return-value]
