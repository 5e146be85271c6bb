"""Decoding a prompt set with a planner, and the label-free scores of a decode against the reference."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import torch
from torch import Tensor

from ..denoiser import Denoiser
from ..loop import generate
from ..oracles.metrics import path_kl_status
from ..output import FILLED
from ..planners import Planner, TopK
from .candidates import Candidate
from .scoring import agreement, chain_loglik, sample_js, self_kl
from .types import Decode, Score, TuneConfig

MAX_JS_VOCAB = 64  # pairwise marginals need V*V cells per pair: only for small vocabularies


def reference_planner(config: TuneConfig) -> Planner:
    """One token per call: by confidence when greedy, in a random order (exact sampling) otherwise."""
    score = "random" if config.sampled else "confidence"
    return TopK(score=score, steps=config.gen_length)


def decode(den: Denoiser, prompts: Sequence[Sequence[int]], seeds: Sequence[int], planner: Planner,
           config: TuneConfig) -> Decode:
    """Decode every prompt in chunks of ``config.batch_size``; calls per block count only blocks a row ran."""
    cfg, parts = config.generation(planner), []
    t0 = time.perf_counter()
    for i in range(0, len(prompts), config.batch_size):
        out = generate(den, list(prompts[i : i + config.batch_size]), cfg, seeds=list(seeds[i : i + config.batch_size]))
        blocks = ((out.trace.reveal_call != FILLED).sum(-1) + cfg.block_length - 1) // cfg.block_length
        parts.append((out.generated.cpu(), out.trace.token_logq.cpu(),
                      out.nfe_per_row.cpu().double() / blocks.cpu().clamp_min(1)))
    gen, logq, calls = (torch.cat(t) for t in zip(*parts))
    return Decode(gen, logq, calls, time.perf_counter() - t0)


def sampling_scores(den: Denoiser, prompts: Sequence[Sequence[int]], d: Decode, ref: Decode | None, config: TuneConfig,
                     score: Score) -> None:
    """Self KL (with its status and standard error) and pair JS of a sampled decode."""
    ll = chain_loglik(den, prompts, d.generated, config.batch_size)
    kl = self_kl(d.token_logq, ll)
    score.loglik = float(ll.mean()) / config.gen_length
    score.kl, score.kl_se = float(kl.mean()), float(kl.std() / math.sqrt(kl.numel()))
    score.kl_status = path_kl_status(score.candidate.planner)
    v = den.spec.vocab_size
    if ref is not None and v <= MAX_JS_VOCAB + 2:
        score.js = sample_js(d.generated, ref.generated, v, config.max_distance)


def greedy_loglik(den: Denoiser, prompts: Sequence[Sequence[int]], d: Decode, ref: Decode, agree: Tensor,
                   config: TuneConfig) -> float:
    """Mean over all rows of (log p(output) - log p(reference)) per token: only differing rows are scored."""
    rows = (~agree).nonzero().squeeze(-1).tolist()
    if not rows:
        return 0.0
    both = torch.cat([d.generated[rows], ref.generated[rows]])
    ll = chain_loglik(den, [prompts[r] for r in rows] * 2, both, config.batch_size)
    return float((ll[: len(rows)] - ll[len(rows) :]).sum()) / len(agree) / config.gen_length


def rescore_greedy(den: Denoiser, prompts: Sequence[Sequence[int]], scores: list[Score], decodes: dict,
                    ref: Decode, config: TuneConfig) -> None:
    """Likelihood of the near-best eligible candidates (within one standard error of the best agreement)."""
    ok = sorted((s for s in scores if s.eligible), key=lambda s: -(s.agreement or 0.0))
    if not ok:
        return
    best, n = ok[0].agreement or 0.0, len(prompts)
    se = math.sqrt(max(best * (1 - best), 1.0 / n) / n)
    for s in [s for s in ok if (s.agreement or 0.0) >= best - se][: config.rescore]:
        d = decodes[s.candidate.spec]
        agree = agreement(d.generated, ref.generated, den.spec.eos_ids)
        s.loglik = greedy_loglik(den, prompts, d, ref, agree, config)


def row_losses(den: Denoiser, prompts: Sequence[Sequence[int]], seeds: Sequence[int], planner: Planner,
               ref: Decode | None, config: TuneConfig) -> Tensor:
    """``[N]`` float64 per-prompt loss of a planner: self KL per token when sampling, 1 - agreement when greedy."""
    d = decode(den, prompts, seeds, planner, config)
    if config.sampled:
        return self_kl(d.token_logq, chain_loglik(den, prompts, d.generated, config.batch_size))
    assert ref is not None, "greedy agreement needs the reference decode"
    return (~agreement(d.generated, ref.generated, den.spec.eos_ids)).double()


def score_candidate(den: Denoiser, prompts: Sequence[Sequence[int]], seeds: Sequence[int], c: Candidate,
                    ref: Decode | None, config: TuneConfig, screen: bool = True,
                    pair_js: bool = True) -> tuple[Score, Decode | None]:
    """Decode and score one candidate; an adaptive one clearly over budget on the screen prompts stops there.

    ``ref`` is the reference decode of the same prompts (greedy agreement and
    pair JS need it; a sampled score without ``pair_js`` does not).
    """
    if screen and c.fixed_calls is None and len(prompts) > config.screen:
        d = decode(den, prompts[: config.screen], seeds[: config.screen], c.planner, config)
        calls = float(d.calls_per_block.mean())
        if calls > 1.25 * config.budget:
            return Score(c, calls, float(d.calls_per_block.max()), False, seconds=d.seconds, screened=config.screen), None
    d = decode(den, prompts, seeds, c.planner, config)
    calls = float(d.calls_per_block.mean())
    s = Score(c, calls, float(d.calls_per_block.max()), calls <= config.budget + 1e-9, seconds=d.seconds)
    if config.sampled:
        sampling_scores(den, prompts, d, ref if pair_js else None, config, s)
    else:
        assert ref is not None, "greedy agreement needs the reference decode"
        s.agreement = float(agreement(d.generated, ref.generated, den.spec.eos_ids).double().mean())
    return s, d
