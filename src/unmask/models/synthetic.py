"""Random-weight native denoisers of any shape, for speed benchmarks (no checkpoint needed)."""

from __future__ import annotations

import torch

from ..denoiser import TokenSpec
from .families import LLADA, LLADA2, SDAR, Family
from .loading import default_device, default_dtype, finish_model, hf_config, meta_model
from .native import NativeDenoiser


def _random(raw: dict, family: Family, *, vocab: int, max_length: int, device: str | torch.device | None,
            dtype: torch.dtype | str | None, seed: int, final_norm: float = 1.0) -> NativeDenoiser:
    """The model of config.json ``raw`` built on the meta device and materialised once on ``device`` in
    ``dtype``: linear weights ~ N(0, 0.02), norms 1 (the final norm ``final_norm``), routing biases 0; the mask
    id is the last id and EOS the one before it, so any vocabulary size works."""
    dev = default_device(device)
    dt = default_dtype(dtype, dev)
    model = meta_model(hf_config(raw, family), family).to(dtype=dt).to_empty(device=dev)
    g = torch.Generator(device=dev).manual_seed(seed)
    for name, p in model.named_parameters():
        if name == "model.norm.weight":
            p.fill_(final_norm)
        elif name.endswith("norm.weight"):
            p.fill_(1.0)
        else:
            p.normal_(0.0, 0.02, generator=g)
    for module in model.modules():
        bias = getattr(module, "e_score_correction_bias", None)  # MoE routers (LLaDA2): a buffer, not a parameter
        if isinstance(bias, torch.Tensor):
            module.e_score_correction_bias = torch.zeros_like(bias, device=dev)
    model = finish_model(model, dev)
    spec = TokenSpec(mask_id=vocab - 1, eos_ids=(vocab - 2,), pad_id=vocab - 2, vocab_size=vocab, max_length=max_length)
    return NativeDenoiser(model, spec, family, attention_block=family.block_size(raw))


@torch.no_grad()
def random_llada(
    *,
    hidden: int = 4096,
    layers: int = 32,
    heads: int = 32,
    intermediate: int = 12288,
    vocab: int = 126464,
    max_length: int = 4096,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    seed: int = 0,
    logit_std: float | None = None,
) -> NativeDenoiser:
    """A LLaDA-shaped :class:`NativeDenoiser` (defaults: LLaDA-8B) with random weights.

    Built on the meta device and materialised once on ``device`` in ``dtype``;
    linear weights ~ N(0, 0.02), norms 1. ``logit_std`` sets the final norm so
    that logits have about that standard deviation (0.02 * sqrt(hidden) by
    default): about 12 makes the random model as confident as a trained one, so
    adaptive planners reveal several tokens per call. The mask id is the last id
    and EOS the one before it, so any vocabulary size works.
    """
    raw = {  # a LLaDA config.json, so the model is built exactly as a real checkpoint's
        "d_model": hidden, "n_heads": heads, "n_kv_heads": heads, "n_layers": layers, "mlp_hidden_size": intermediate,
        "vocab_size": vocab, "max_sequence_length": max_length, "rope_theta": 500000.0, "weight_tying": False,
    }
    final = 1.0 if logit_std is None else logit_std / (0.02 * hidden**0.5)  # logits = norm(h) @ W.T, W ~ N(0, 0.02)
    return _random(raw, LLADA, vocab=vocab, max_length=max_length, device=device, dtype=dtype, seed=seed,
                   final_norm=final)


@torch.no_grad()
def random_sdar(
    *,
    hidden: int = 2048,
    layers: int = 28,
    heads: int = 16,
    kv_heads: int = 8,
    head_dim: int = 128,
    intermediate: int = 6144,
    vocab: int = 151936,
    block: int = 4,
    max_length: int = 4096,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    seed: int = 0,
) -> NativeDenoiser:
    """An SDAR-shaped :class:`NativeDenoiser` (defaults: SDAR-1.7B: Qwen3 with q/k norms, GQA, blocks of 4)
    with random weights, block-causal; built as :func:`random_llada` (linear weights ~ N(0, 0.02), norms 1)."""
    raw = {  # an SDAR config.json
        "hidden_size": hidden, "intermediate_size": intermediate, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv_heads, "head_dim": head_dim, "vocab_size": vocab,
        "max_position_embeddings": max_length, "rope_theta": 1000000.0, "tie_word_embeddings": False,
        "block_size": block,
    }
    return _random(raw, SDAR, vocab=vocab, max_length=max_length, device=device, dtype=dtype, seed=seed)


@torch.no_grad()
def random_llada2(
    *,
    hidden: int = 512,
    layers: int = 4,
    heads: int = 8,
    kv_heads: int = 4,
    head_dim: int = 64,
    intermediate: int = 1536,
    experts: int = 16,
    top_k: int = 4,
    groups: int = 4,
    top_groups: int = 2,
    expert_intermediate: int = 256,
    vocab: int = 32768,
    block: int = 32,
    max_length: int = 4096,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    seed: int = 0,
) -> NativeDenoiser:
    """A LLaDA2-shaped :class:`NativeDenoiser` (``Glm4MoeForCausalLM``: q/k norms, half the head dims rotated,
    the first layer dense and the others grouped sigmoid-routed experts plus one shared expert, blocks of
    ``block``) with random weights, block-causal; built as :func:`random_llada`, the routing bias 0."""
    raw = {  # a LLaDA2 config.json
        "hidden_size": hidden, "intermediate_size": intermediate, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv_heads, "head_dim": head_dim, "vocab_size": vocab,
        "max_position_embeddings": max_length, "rope_theta": 600000.0, "partial_rotary_factor": 0.5,
        "num_experts": experts, "num_experts_per_tok": top_k, "n_group": groups, "topk_group": top_groups,
        "moe_intermediate_size": expert_intermediate, "num_shared_experts": 1, "first_k_dense_replace": 1,
        "routed_scaling_factor": 2.5, "block_size": block,
    }
    return _random(raw, LLADA2, vocab=vocab, max_length=max_length, device=device, dtype=dtype, seed=seed)
