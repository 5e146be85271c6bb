"""Random-weight native denoisers of any shape, for speed benchmarks (no checkpoint needed)."""

from __future__ import annotations

import torch

from ..denoiser import TokenSpec
from .families import LLADA
from .loading import default_device, default_dtype, finish_model, hf_config, meta_model
from .native import NativeDenoiser


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
    dev = default_device(device)
    dt = default_dtype(dtype, dev)
    raw = {  # a LLaDA config.json, so the model is built exactly as a real checkpoint's
        "d_model": hidden, "n_heads": heads, "n_kv_heads": heads, "n_layers": layers, "mlp_hidden_size": intermediate,
        "vocab_size": vocab, "max_sequence_length": max_length, "rope_theta": 500000.0, "weight_tying": False,
    }
    model = meta_model(hf_config(raw, LLADA), LLADA).to(dtype=dt).to_empty(device=dev)
    g = torch.Generator(device=dev).manual_seed(seed)
    for name, p in model.named_parameters():
        if name == "model.norm.weight" and logit_std is not None:
            p.fill_(logit_std / (0.02 * hidden**0.5))  # logits = norm(h) @ W.T, W ~ N(0, 0.02)
        elif name.endswith("norm.weight"):
            p.fill_(1.0)
        else:
            p.normal_(0.0, 0.02, generator=g)
    model = finish_model(model, dev)
    spec = TokenSpec(mask_id=vocab - 1, eos_ids=(vocab - 2,), pad_id=vocab - 2, vocab_size=vocab, max_length=max_length)
    return NativeDenoiser(model, spec, LLADA)
