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

from transformers import PretrainedConfig, Qwen2Config, Qwen3Config

_COMMON = (
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "vocab_size", "max_position_embeddings", "rms_norm_eps", "rope_theta", "tie_word_embeddings", "hidden_act",
)


def qwen_rename(name: str) -> str:
    """SDAR's and Fast-dLLM v2's tensor names are Qwen3's/Qwen2's: the identity; ``ValueError`` for others."""
    if name.startswith("model.") or name == "lm_head.weight":
        return name
    raise ValueError(f"unexpected tensor {name!r} in a Qwen-layout checkpoint (known: model.*, lm_head.weight)")


def _config(raw: dict[str, Any], cls: type[PretrainedConfig], extra: tuple[str, ...], label: str) -> PretrainedConfig:
    if raw.get("rope_scaling"):
        raise ValueError(f"{label} config rope_scaling={raw['rope_scaling']!r} is not supported by the native path; "
                         "load with native=False to run the checkpoint's own code")
    if raw.get("use_sliding_window"):
        raise ValueError(f"{label} config use_sliding_window=true is not supported by the native path; "
                         "load with native=False")
    missing = [k for k in _COMMON[:6] if k not in raw]
    if missing:
        raise ValueError(f"{label} config.json lacks {missing}")
    kwargs = {k: raw[k] for k in _COMMON + extra if k in raw}
    return cls(**kwargs, use_sliding_window=False)


def sdar_config(raw: dict[str, Any]) -> Qwen3Config:
    """A ``Qwen3Config`` equivalent to an SDAR ``config.json`` dict (the block size is the family's)."""
    return _config(raw, Qwen3Config, ("head_dim", "attention_bias"), "SDAR")  # type: ignore[return-value]


def fast_dllm_config(raw: dict[str, Any]) -> Qwen2Config:
    """A ``Qwen2Config`` equivalent to a Fast-dLLM v2 ``config.json`` dict (``bd_size`` is the family's)."""
    return _config(raw, Qwen2Config, (), "Fast-dLLM v2")  # type: ignore[return-value]
