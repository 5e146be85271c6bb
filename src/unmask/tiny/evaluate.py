"""Solve held-out problems with :func:`unmask.generate` and score them."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch

from ..config import GenerationConfig
from ..denoiser import Denoiser
from ..loop import generate
from ..planners import Planner, TopK
from ..text import decode_rows
from .data import EOS_ID, GEN_LENGTH, VOCAB, Problem, encode, heldout, score


def heldout_problems(n: int, split: str = "test") -> list[tuple[str, str]]:
    """The first ``n`` held-out problems as ``(prompt, answer)`` strings (``split``: ``"test"`` or ``"val"``)."""
    return [(p.prompt, p.answer) for p in heldout(n, split)]


def encode_prompts(tokenizer: Any, prompts: Sequence[str]) -> list[list[int]]:
    """Token ids of each prompt (no special tokens); ``tokenizer`` may be None for the built-in char map."""
    if isinstance(prompts, str):
        raise ValueError("prompts must be a sequence of strings, got a single string")
    if tokenizer is None:
        return [encode(p) for p in prompts]
    from ..models.tokenizer import encode_prompts as encode_texts

    return encode_texts(tokenizer, prompts, chat=False, add_bos=False)  # unknown characters refused


class _CharTokenizer:
    """Decoding without a tokenizer file (used during training)."""

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return "".join(VOCAB[i] for i in ids if not (skip_special_tokens and VOCAB[i].startswith("<")))


def one_token_per_call(gen_length: int = GEN_LENGTH) -> GenerationConfig:
    """The reference decoding: greedy, one block, the most confident position each call."""
    return GenerationConfig(gen_length=gen_length, block_length=gen_length,
                            planner=TopK(score="confidence", steps=gen_length))


def solve(denoiser: Denoiser, items: Sequence[Problem] | Sequence[tuple[str, str]], config: GenerationConfig,
          batch_size: int = 250, tokenizer: Any | None = None, keep: bool = False) -> dict[str, Any]:
    """Generate for every problem in batches; return accuracy, exact match, NFE and speed.

    ``keep`` also returns the texts, generated ids ``[N, G]`` and reveal calls ``[N, G]``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size}")
    pairs = [(p.prompt, p.answer) if isinstance(p, Problem) else (p[0], p[1]) for p in items]
    if not pairs:
        raise ValueError("items must hold at least one problem")
    texts: list[str] = []
    nfe_rows: list[torch.Tensor] = []
    calls, seconds, tokens = 0, 0.0, 0
    gen_ids, reveal = [], []
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i : i + batch_size]
        t0 = time.perf_counter()
        out = generate(denoiser, encode_prompts(tokenizer, [p for p, _ in chunk]), config)
        seconds += time.perf_counter() - t0
        texts += decode_rows(tokenizer or _CharTokenizer(), out.generated, (EOS_ID,), config.stop)
        nfe_rows.append(out.nfe_per_row.cpu())
        calls += out.nfe
        tokens += out.generated.numel()
        if keep:
            gen_ids.append(out.generated.cpu())
            reveal.append(out.trace.reveal_call.cpu())
    acc, exact = score(texts, [a for _, a in pairs])
    res: dict[str, Any] = {
        "n": len(pairs), "answer_acc": acc, "exact_match": exact,
        "mean_nfe": float(torch.cat(nfe_rows).float().mean()), "batched_calls": calls,
        "seconds": seconds, "tokens_per_s": tokens / seconds if seconds > 0 else float("nan"),
    }
    if keep:
        res.update(texts=texts, generated=torch.cat(gen_ids), reveal_call=torch.cat(reveal))
    return res


def evaluate(denoiser: Denoiser, n: int = 1000, split: str = "test", planner: Planner | None = None,
             block_length: int | None = None, batch_size: int = 250, tokenizer: Any | None = None) -> dict[str, Any]:
    """Score ``planner`` (default: one token per call) on the first ``n`` held-out problems of ``split``."""
    if planner is None:
        config = one_token_per_call()
    else:
        config = GenerationConfig(gen_length=GEN_LENGTH, block_length=block_length or GEN_LENGTH, planner=planner)
    return solve(denoiser, heldout(n, split), config, batch_size, tokenizer)
