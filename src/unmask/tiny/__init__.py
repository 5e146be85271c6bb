"""tiny-arith: a bundled 3M-parameter MDLM for small arithmetic problems, on any CPU.

A LLaDA-style bidirectional Llama trained (SFT objective) on seeded
GSM8K-like problems with a local chain of thought, e.g. ``Q:15*8-43;`` ->
``15*8=080+40=120;-43=077;A:77``. It ships in ``unmask/assets/tiny-arith``
(float16 safetensors + char tokenizer) so demos, tests and benchmarks run
without a download::

    from unmask import generate, GenerationConfig, Dilated
    from unmask.tiny import load_tiny, heldout_problems, encode_prompts, score

    denoiser, tok = load_tiny()
    probs = heldout_problems(8)
    out = generate(denoiser, encode_prompts(tok, [p for p, _ in probs]),
                   GenerationConfig(gen_length=32, block_length=32, planner=Dilated()), tokenizer=tok)
    print(score(out.texts, [a for _, a in probs]))
"""

from __future__ import annotations

from typing import Any

import torch

from .data import GEN_LENGTH, Problem, final_answer, heldout, score
from .evaluate import encode_prompts, evaluate, heldout_problems, one_token_per_call, solve
from .model import ASSET_DIR, tiny_denoiser


def load_tiny(device: str = "cpu") -> tuple[Any, Any]:
    """The bundled tiny-arith model as ``(denoiser, tokenizer)``, offline, through ``unmask.load``.

    It takes the same loading, batching and KV-cache path as the 8B checkpoints
    (float16 weights upcast to float32).
    """
    from ..models import load

    return load("tiny-arith", device=device, dtype=torch.float32)


__all__ = [
    "ASSET_DIR", "GEN_LENGTH", "Problem", "encode_prompts", "evaluate", "final_answer", "heldout",
    "heldout_problems", "load_tiny", "one_token_per_call", "score", "solve", "tiny_denoiser",
]
