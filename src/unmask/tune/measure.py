"""Decoding a prompt set with a planner, and the label-free scores of a decode against the reference."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from ..denoiser import Denoiser
from ..loop import generate
from ..oracles.metrics import path_kl_status
from ..output import Trace
from ..planners import Planner, TopK
from .candidates import Candidate
from .scoring import agreement, chain_loglik, sample_js, self_kl
from .types import Decode, Score, TuneConfig

MAX_JS_VOCAB = 64  # pairwise marginals need V*V cells per pair: only for small vocabularies


def reference_planner(config: TuneConfig) -> Planner:
    """One token per call: by confidence when greedy, in a random order (exact sampling) otherwise."""
    score = "random" if config.sampled else "confidence"
    return TopK(score=score, steps=config.gen_length)


def block_calls(trace: Trace, block_length: int, nfe_per_row: Tensor | None = None) -> Tensor:
    """``[N, blocks]`` long: calls each row spent in each block, from its block's first call to its last reveal,
    edit or re-mask there (0 for a block it never ran: filled after an early exit).

    A position's block is that of the call that revealed it (``block_of_call``), so the count holds for the
    block-diffusion layout too, where a row's prompt tail fills the start of block 0 and its tokens straddle the
    generated blocks (``block_length`` is then not needed; kept for the callers' signature). A revising planner
    can keep a row busy after its last reveal (``edit``'s post-fill calls, the calls that re-mask and
    re-reveal): its edits and re-masks are in ``trace.revisions``; a last call that changed nothing (``edit``
    asking once more) leaves no trace, so with ``nfe_per_row`` the calls the trace misses (its count minus the
    sum over blocks) are charged to the row's largest block: exact with one block, never below the truth.
    Summed over blocks: ``nfe_per_row``.
    """
    rc, boc = trace.reveal_call, trace.block_of_call.to(trace.reveal_call.device)
    n, calls = rc.shape[0], boc.numel()
    blocks = int(boc.max()) + 1 if calls else 0
    first = torch.full((blocks,), calls, dtype=torch.long, device=rc.device)
    first.scatter_reduce_(0, boc, torch.arange(calls, device=rc.device), "amin")
    revealed = rc >= 0
    block = torch.where(revealed, boc[rc.clamp_min(0)] if calls else rc, blocks)  # filled: a spare column
    last = torch.full((n, blocks + 1), -1, dtype=torch.long, device=rc.device)
    last.scatter_reduce_(1, block, torch.where(revealed, rc, -1), "amax")
    if trace.revisions is not None and trace.revisions.numel():
        call, row = (t.to(rc.device) for t in trace.revisions[:, :2].T)
        flat = last.reshape(-1).clone().scatter_reduce_(0, row * (blocks + 1) + boc[call], call, "amax")
        last = flat.view(n, blocks + 1)
    last = last[:, :blocks]
    out = torch.where(last >= 0, last - first + 1, 0)
    if nfe_per_row is not None and blocks:
        missed = nfe_per_row.to(out.device).long() - out.sum(-1)  # [N] >= 0
        assert bool((missed >= 0).all()), "the trace holds more calls than nfe_per_row"
        out = out.scatter_add(1, out.argmax(-1, keepdim=True), missed.unsqueeze(-1))
    return out


def decode(den: Denoiser, prompts: Sequence[Sequence[int]], seeds: Sequence[int], planner: Planner,
           config: TuneConfig) -> Decode:
    """Decode every prompt in chunks of ``config.batch_size``; calls per block count only blocks a row ran."""
    cfg, parts = config.generation(planner), []
    t0 = time.perf_counter()
    for i in range(0, len(prompts), config.batch_size):
        out = generate(den, list(prompts[i : i + config.batch_size]), cfg, seeds=list(seeds[i : i + config.batch_size]))
        per_block = block_calls(out.trace, cfg.block_length, out.nfe_per_row).cpu()  # [n, blocks]
        blocks = (per_block > 0).sum(-1)
        parts.append((out.generated.cpu(), out.trace.token_logq.cpu(),
                      out.nfe_per_row.cpu().double() / blocks.clamp_min(1), per_block.max(-1).values))
    gen, logq, calls, most = (torch.cat(t) for t in zip(*parts))
    return Decode(gen, logq, calls, most, time.perf_counter() - t0)


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


def rescore_greedy(den: Denoiser, prompts: Sequence[Sequence[int]], scores: list[Score], memo: Memo,
                    ref: Decode, config: TuneConfig) -> None:
    """Likelihood of the near-best eligible candidates (within one standard error of the best agreement)."""
    ok = sorted((s for s in scores if s.eligible), key=lambda s: -(s.agreement or 0.0))
    if not ok:
        return
    best, n = ok[0].agreement or 0.0, len(prompts)
    se = math.sqrt(max(best * (1 - best), 1.0 / n) / n)
    for s in [s for s in ok if (s.agreement or 0.0) >= best - se][: config.rescore]:
        spec = s.candidate.spec
        if spec not in memo.loglik:
            d = memo.full[spec][1]
            agree = agreement(d.generated, ref.generated, den.spec.eos_ids)
            memo.loglik[spec] = greedy_loglik(den, prompts, d, ref, agree, config)
        s.loglik = memo.loglik[spec]


def row_losses(den: Denoiser, prompts: Sequence[Sequence[int]], seeds: Sequence[int], planner: Planner,
               ref: Decode | None, config: TuneConfig) -> Tensor:
    """``[N]`` float64 per-prompt loss of a planner: self KL per token when sampling, 1 - agreement when greedy."""
    d = decode(den, prompts, seeds, planner, config)
    if config.sampled:
        return self_kl(d.token_logq, chain_loglik(den, prompts, d.generated, config.batch_size))
    assert ref is not None, "greedy agreement needs the reference decode"
    return (~agreement(d.generated, ref.generated, den.spec.eos_ids)).double()


@dataclass
class Memo:
    """Decodes and scores of one prompt set, shared by the budgets of one run (they depend on the budget only
    through eligibility): full measurements, screen decodes, and greedy likelihoods, by planner spec."""

    full: dict[str, tuple[Score, Decode]] = field(default_factory=dict)
    screen: dict[str, Decode] = field(default_factory=dict)
    loglik: dict[str, float] = field(default_factory=dict)


def score_candidate(den: Denoiser, prompts: Sequence[Sequence[int]], seeds: Sequence[int], c: Candidate,
                    ref: Decode | None, config: TuneConfig, screen: bool = True, pair_js: bool = True,
                    memo: Memo | None = None) -> tuple[Score, Decode | None]:
    """Decode and score one candidate; an adaptive one clearly over budget on the screen prompts stops there.

    ``ref`` is the reference decode of the same prompts (greedy agreement and
    pair JS need it; a sampled score without ``pair_js`` does not). With a
    ``memo`` (same prompts, seeds and settings but the budget) a decode made
    for another budget is reused: a full measurement only gets its eligibility
    (and, greedy, its likelihood cleared for :func:`rescore_greedy`).
    """
    memo = memo if memo is not None else Memo()
    within = config.budget + 1e-9
    if c.spec in memo.full:
        s, d = memo.full[c.spec]
        return replace(s, candidate=c, eligible=s.calls <= within,
                       loglik=s.loglik if config.sampled else None), d
    if screen and c.fixed_calls is None and len(prompts) > config.screen:
        if c.spec not in memo.screen:
            memo.screen[c.spec] = decode(den, prompts[: config.screen], seeds[: config.screen], c.planner, config)
        d = memo.screen[c.spec]
        calls = float(d.calls_per_block.mean())
        if calls > 1.25 * config.budget:
            return Score(c, calls, int(d.calls_max.max()), False, seconds=d.seconds, screened=config.screen), None
    d = decode(den, prompts, seeds, c.planner, config)
    calls = float(d.calls_per_block.mean())
    s = Score(c, calls, int(d.calls_max.max()), calls <= within, seconds=d.seconds)
    if config.sampled:
        sampling_scores(den, prompts, d, ref if pair_js else None, config, s)
    else:
        assert ref is not None, "greedy agreement needs the reference decode"
        s.agreement = float(agreement(d.generated, ref.generated, den.spec.eos_ids).double().mean())
    memo.full[c.spec] = (replace(s), d)
    return s, d
