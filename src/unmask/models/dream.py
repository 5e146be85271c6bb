"""Dream and DiffuCoder checkpoints in transformers' own ``Qwen2ForCausalLM``.

Dream-7B (Ye et al. 2025) and DiffuCoder-7B keep Qwen2.5's block and tensor
names (``model.layers.{i}.self_attn.{q,k,v,o}_proj`` with q/k/v biases,
``model.embed_tokens``, ``model.norm``, ``lm_head``) and run it
bidirectionally. Their logits are shifted (position i-1 predicts token i);
the adapter realigns them (``Family.logit_shift``).
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig, Qwen2Config

_FIELDS = (
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "vocab_size", "max_position_embeddings", "rms_norm_eps", "rope_theta", "tie_word_embeddings", "hidden_act",
)


def dream_rename(name: str) -> str:
    """Dream's tensor names are Qwen2's: the identity; ``ValueError`` for a name outside that layout."""
    if name.startswith("model.") or name == "lm_head.weight":
        return name
    raise ValueError(f"unexpected tensor {name!r} in a Dream checkpoint (known: model.*, lm_head.weight)")


def qwen_config(raw: dict[str, Any], cls: type[PretrainedConfig], extra: tuple[str, ...],
                label: str) -> PretrainedConfig:
    """A ``cls`` (``Qwen2Config``, ``Qwen3Config``) from a Qwen-layout ``config.json`` dict: its common fields and
    ``extra``; ``ValueError`` naming ``label`` for what the native path does not run."""
    if raw.get("rope_scaling"):
        raise ValueError(f"{label} config rope_scaling={raw['rope_scaling']!r} is not supported by the native path; "
                         "load with native=False to run the checkpoint's own code")
    if raw.get("use_sliding_window"):
        raise ValueError(f"{label} config use_sliding_window=true is not supported by the native path; "
                         "load with native=False")
    missing = [k for k in _FIELDS[:6] if k not in raw]
    if missing:
        raise ValueError(f"{label} config.json lacks {missing}")
    kwargs = {k: raw[k] for k in _FIELDS + extra if k in raw}
    return cls(**kwargs, use_sliding_window=False)


def dream_config(raw: dict[str, Any]) -> Qwen2Config:
    """A bidirectional ``Qwen2Config`` equivalent to a Dream ``config.json`` dict."""
    return qwen_config(raw, Qwen2Config, (), "Dream")  # type: ignore[return-value]
