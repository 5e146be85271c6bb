"""``tune``: the best planner for a model and a call budget, chosen without labels.

1. Decode the calibration prompts (and the disjoint report prompts) one token
   per call: the reference (greedy: the most confident position each call;
   sampling: a random position, which samples the model exactly).
2. Decode the calibration prompts with every candidate; adaptive candidates
   whose mean calls per block exceed the budget are not eligible.
3. Score each against the reference, from the model alone:
   - greedy (temperature 0): *agreement*, the share of prompts whose output
     equals the reference's, and for the candidates within one standard
     error of the best, the model's own chain-rule log-likelihood of their
     outputs relative to the reference's (``loglik``, nats per token);
   - sampling (temperature > 0): *self KL*, the per-token path KL against the
     model's chain-rule likelihood (exact in expectation for planners that
     choose from the state alone, an upper bound for random orders, biased
     low otherwise), and *pair JS*, the Jensen-Shannon divergence between the
     candidate's and the reference's pairwise marginals (consistent for every
     planner), beside its floor (the same between the calibration and report
     references).
4. Pick the winner: greedy, the highest agreement (near ties: the highest
   loglik, then fewer calls); sampling, the lowest self KL among planners
   for which it is exact or a bound, replaced by a biased-estimate planner only
   where its pair JS is lower by more than the floor.
5. Decode the report prompts with the winner and score it there, so the
   quoted figures are not those it was selected on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..config import CACHE_MODES, GenerationConfig
from ..denoiser import Denoiser
from ..loop import generate
from ..noise import derive_seed
from ..oracles.metrics import BIASED, path_kl_status
from ..output import FILLED
from ..planners import Planner, TopK
from ..progress import make_progress
from .candidates import Candidate
from .scoring import agreement, chain_loglik, sample_js, self_kl

MAX_JS_VOCAB = 64  # pairwise marginals need V*V cells per pair: only for small vocabularies


@dataclass(frozen=True)
class TuneConfig:
    budget: int  # calls per block
    gen_length: int = 32
    block_length: int = 32
    temperature: float = 0.0
    seed: int = 0
    batch_size: int = 256
    cache: str = "none"
    max_distance: int = 8  # pairs up to this far apart (pair JS)
    rescore: int = 4  # greedy: at most this many near-best candidates get their likelihood computed
    screen: int = 32  # adaptive candidates run first on this many prompts; clearly over budget there, they stop

    def __post_init__(self) -> None:
        GenerationConfig(gen_length=self.gen_length, block_length=self.block_length,
                         sampling={"temperature": self.temperature}, cache=self.cache, seed=self.seed)  # the shared checks
        for name in ("budget", "batch_size", "max_distance", "rescore", "screen"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.budget > self.block_length:
            raise ValueError(f"budget must be <= block_length={self.block_length} calls per block, got {self.budget}")
        if self.cache not in CACHE_MODES:
            raise ValueError(f"cache must be one of {CACHE_MODES}, got {self.cache!r}")

    @property
    def sampled(self) -> bool:
        """True when decoding samples (temperature > 0), False for greedy decoding."""
        return self.temperature > 0

    @property
    def num_blocks(self) -> int:
        return self.gen_length // self.block_length

    def generation(self, planner: Planner | str) -> GenerationConfig:
        return GenerationConfig(gen_length=self.gen_length, block_length=self.block_length, planner=planner,
                                sampling={"temperature": self.temperature}, cache=self.cache,
                                early_exit=not self.sampled, seed=self.seed)


@dataclass(frozen=True)
class Decode:
    generated: Tensor  # [N, G]
    token_logq: Tensor  # [N, G]
    calls_per_block: Tensor  # [N] float: calls per block the row ran
    seconds: float


@dataclass
class Score:
    candidate: Candidate
    calls: float  # mean calls per block on the calibration set
    calls_max: float  # the most any row took
    eligible: bool
    agreement: float | None = None  # greedy
    loglik: float | None = None  # greedy: mean (log p(output) - log p(reference)) per token; sampling: log p per token
    kl: float | None = None  # sampling: self KL per token
    kl_se: float | None = None
    kl_status: str | None = None  # "exact", "upper bound" or "biased"
    js: float | None = None  # sampling: pair JS against the reference
    seconds: float = 0.0
    screened: int | None = None  # over budget on the first ``screened`` prompts: not run on the rest


@dataclass
class TuneResult:
    config: TuneConfig
    scores: list[Score]
    winner: Score
    report: Score  # the winner scored on the report prompts
    n_calibration: int
    n_report: int
    js_floor: float | None = None
    seconds: float = 0.0
    files: list = field(default_factory=list)

    @property
    def spec(self) -> str:
        return self.winner.candidate.spec


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


def _check_sets(calibration: Sequence[Sequence[int]], report: Sequence[Sequence[int]], config: TuneConfig) -> None:
    if len(calibration) < 2 or len(report) < 1:
        raise ValueError(f"need at least 2 calibration and 1 report prompts, got {len(calibration)} and {len(report)}")
    if not config.sampled:  # greedy outputs of a shared prompt are identical: the sets would not be disjoint
        shared = {tuple(p) for p in calibration} & {tuple(p) for p in report}
        if shared:
            raise ValueError(f"calibration and report prompts must be disjoint, {len(shared)} prompts are in both")


def _sampling_scores(den: Denoiser, prompts: Sequence[Sequence[int]], d: Decode, ref: Decode, config: TuneConfig,
                     score: Score) -> None:
    """Self KL (with its status and standard error) and pair JS of a sampled decode."""
    ll = chain_loglik(den, prompts, d.generated, config.batch_size)
    kl = self_kl(d.token_logq, ll)
    score.loglik = float(ll.mean()) / config.gen_length
    score.kl, score.kl_se = float(kl.mean()), float(kl.std() / math.sqrt(kl.numel()))
    score.kl_status = path_kl_status(score.candidate.planner)
    v = den.spec.vocab_size
    if v <= MAX_JS_VOCAB + 2:
        score.js = sample_js(d.generated, ref.generated, v, config.max_distance)


def _greedy_loglik(den: Denoiser, prompts: Sequence[Sequence[int]], d: Decode, ref: Decode, agree: Tensor,
                   config: TuneConfig) -> float:
    """Mean over all rows of (log p(output) - log p(reference)) per token: only differing rows are scored."""
    rows = (~agree).nonzero().squeeze(-1).tolist()
    if not rows:
        return 0.0
    both = torch.cat([d.generated[rows], ref.generated[rows]])
    ll = chain_loglik(den, [prompts[r] for r in rows] * 2, both, config.batch_size)
    return float((ll[: len(rows)] - ll[len(rows) :]).sum()) / len(agree) / config.gen_length


def pick(scores: list[Score], sampling: bool, n: int, js_floor: float | None) -> Score:
    """The winner among eligible scores (see the module docstring for the rule)."""
    ok = [s for s in scores if s.eligible]
    if not ok:
        raise ValueError("no candidate fits the budget; raise --budget or add candidates with fewer calls")
    if not sampling:
        best = max(s.agreement or 0.0 for s in ok)
        se = math.sqrt(max(best * (1 - best), 1.0 / n) / n)
        near = [s for s in ok if (s.agreement or 0.0) >= best - se]
        return max(near, key=lambda s: (s.loglik if s.loglik is not None else -math.inf, -s.calls))
    trusted = [s for s in ok if s.kl_status != BIASED and s.kl is not None]
    if not trusted:
        return min(ok, key=lambda s: (s.js if s.js is not None else math.inf, s.calls))
    winner = min(trusted, key=lambda s: (s.kl, s.calls))  # type: ignore[arg-type,return-value]
    margin = js_floor or 0.0
    better = [s for s in ok if s.kl_status == BIASED and s.js is not None and winner.js is not None
              and s.js < winner.js - margin]
    return min(better, key=lambda s: s.js) if better else winner  # type: ignore[arg-type,return-value]


def tune(den: Denoiser, calibration: Sequence[Sequence[int]], report: Sequence[Sequence[int]],
         candidates: Sequence[Candidate], config: TuneConfig, progress: bool = False) -> TuneResult:
    """Score every candidate against the one-token-per-call reference and pick the best at ``config.budget``."""
    _check_sets(calibration, report, config)
    for c in candidates:
        c.planner.check(config.gen_length, config.block_length)
    t0 = time.perf_counter()
    cal_seeds = [derive_seed(config.seed, 0, i) for i in range(len(calibration))]
    rep_seeds = [derive_seed(config.seed, 1, i) for i in range(len(report))]
    scores: list[Score] = []
    bar = make_progress(transient=True)
    bar.disable = not progress
    with bar:
        task = bar.add_task("reference (one token per call)", total=len(candidates) + 3)
        ref = decode(den, calibration, cal_seeds, reference_planner(config), config)
        ref_rep = decode(den, report, rep_seeds, reference_planner(config), config)
        bar.advance(task, 2)
        decodes = {}
        for c in candidates:
            bar.update(task, description=c.spec)
            s, d = _score_candidate(den, calibration, cal_seeds, c, ref, config)
            if d is not None:
                decodes[c.spec] = d
            scores.append(s)
            bar.advance(task)
        js_floor = None
        if config.sampled and den.spec.vocab_size <= MAX_JS_VOCAB + 2:
            js_floor = sample_js(ref.generated, ref_rep.generated, den.spec.vocab_size, config.max_distance)
        else:
            _rescore_greedy(den, calibration, scores, decodes, ref, config)
        winner = pick(scores, config.sampled, len(calibration), js_floor)
        bar.update(task, description=f"report set: {winner.candidate.spec}")
        rep, _ = _score_candidate(den, report, rep_seeds, winner.candidate, ref_rep, config, screen=False)
        bar.advance(task)
    return TuneResult(config, scores, winner, rep, len(calibration), len(report), js_floor, time.perf_counter() - t0)


def _rescore_greedy(den: Denoiser, prompts: Sequence[Sequence[int]], scores: list[Score], decodes: dict,
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
        s.loglik = _greedy_loglik(den, prompts, d, ref, agree, config)


def _score_candidate(den: Denoiser, prompts: Sequence[Sequence[int]], seeds: Sequence[int], c: Candidate, ref: Decode,
                     config: TuneConfig, screen: bool = True) -> tuple[Score, Decode | None]:
    """Decode and score one candidate; an adaptive one clearly over budget on the screen prompts stops there."""
    if screen and c.fixed_calls is None and len(prompts) > config.screen:
        d = decode(den, prompts[: config.screen], seeds[: config.screen], c.planner, config)
        calls = float(d.calls_per_block.mean())
        if calls > 1.25 * config.budget:
            return Score(c, calls, float(d.calls_per_block.max()), False, seconds=d.seconds, screened=config.screen), None
    d = decode(den, prompts, seeds, c.planner, config)
    calls = float(d.calls_per_block.mean())
    s = Score(c, calls, float(d.calls_per_block.max()), calls <= config.budget + 1e-9, seconds=d.seconds)
    if config.sampled:
        _sampling_scores(den, prompts, d, ref, config, s)
    else:
        s.agreement = float(agreement(d.generated, ref.generated, den.spec.eos_ids).double().mean())
    return s, d
