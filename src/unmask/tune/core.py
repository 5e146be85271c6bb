"""``tune``: the best planner for a model and a call budget, chosen without labels.

1. Decode the calibration prompts (and the disjoint report prompts) one token
   per call: the reference (greedy: the most confident position each call;
   sampling: a random position, which samples the model exactly).
2. Decode the calibration prompts with every candidate; adaptive candidates
   whose mean calls per block exceed the budget are not eligible (the most
   calls any row spent in one block is kept beside the mean: a batch waits
   for its slowest row).
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
   Then, by default when sampling (``TuneConfig.search``), a local search
   from the two best fixed schedules looks for a better one, scored the same
   way per prompt with common random numbers; what it ends on must beat the
   best fixed candidate by two standard errors of the paired difference on
   data the search never scored (sampling: fresh seeds; greedy: the second
   half of the calibration prompts, held out from the search, see
   :mod:`unmask.tune.search`) before it joins the candidates as
   ``schedule(groups=...)``: the best of many noisy scores is biased low, and
   without the check the search replaces an optimal schedule by a worse one
   that scored lower by chance.
4. Pick the winner: greedy, the highest agreement (near ties: the highest
   loglik, then fewer calls); sampling, the lowest self KL plus one standard
   error (so that an exactly known 0 beats a noisy estimate near 0) among
   planners for which it is exact or a bound, replaced by a biased-estimate
   planner only where its pair JS is lower by more than the floor.
5. Decode the report prompts with the winner and score it there, so the
   quoted figures are not those it was selected on.

:func:`tune_budgets` runs 2-5 at several budgets after one reference decode.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from ..denoiser import Denoiser
from ..noise import derive_seed
from ..oracles.metrics import BIASED
from ..progress import make_progress
from .candidates import Candidate
from .measure import (
    MAX_JS_VOCAB,
    Memo,
    decode,
    reference_planner,
    rescore_greedy,
    score_candidate,
)
from .scoring import sample_js
from .search import search_candidate, search_split
from .types import Score, TuneConfig, TuneResult


def _check_sets(calibration: Sequence[Sequence[int]], report: Sequence[Sequence[int]], config: TuneConfig) -> None:
    if len(calibration) < 2 or len(report) < 1:
        raise ValueError(f"need at least 2 calibration and 1 report prompts, got {len(calibration)} and {len(report)}")
    if not config.sampled:  # greedy outputs of a shared prompt are identical: the sets would not be disjoint
        shared = {tuple(p) for p in calibration} & {tuple(p) for p in report}
        if shared:
            raise ValueError(f"calibration and report prompts must be disjoint, {len(shared)} prompts are in both")


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
    winner = min(trusted, key=lambda s: (s.kl + (s.kl_se or 0.0), s.calls))  # type: ignore[operator,return-value]
    margin = js_floor or 0.0
    better = [s for s in ok if s.kl_status == BIASED and s.js is not None and winner.js is not None
              and s.js < winner.js - margin]
    return min(better, key=lambda s: s.js) if better else winner  # type: ignore[arg-type,return-value]


CandidateList = Sequence[Candidate] | Callable[[int], Sequence[Candidate]]


def tune(den: Denoiser, calibration: Sequence[Sequence[int]], report: Sequence[Sequence[int]],
         candidates: Sequence[Candidate], config: TuneConfig, progress: bool = False) -> TuneResult:
    """Score every candidate against the one-token-per-call reference and pick the best at ``config.budget``."""
    return tune_budgets(den, calibration, report, candidates, config, (config.budget,), progress)[0]


def tune_budgets(den: Denoiser, calibration: Sequence[Sequence[int]], report: Sequence[Sequence[int]],
                 candidates: CandidateList, config: TuneConfig, budgets: Sequence[int],
                 progress: bool = False) -> list[TuneResult]:
    """:func:`tune` at each of ``budgets`` (ascending in the result), with one reference decode for them all.

    ``candidates``: one list for every budget, or a function of the budget
    (:func:`~unmask.tune.default_candidates` fits). Decodes and scores that do
    not depend on the budget are made once and reused; each result is the one
    :func:`tune` gives at that budget alone.
    """
    budgets = sorted(budgets)
    if not budgets or len(set(budgets)) != len(budgets):
        raise ValueError(f"budgets must be one or more distinct calls per block, got {list(budgets)}")
    configs = [replace(config, budget=b) for b in budgets]  # each validates its budget
    lists = [list(candidates(b) if callable(candidates) else candidates) for b in budgets]
    _check_sets(calibration, report, config)
    if config.search_evals:
        search_split(len(calibration), config)
    for c in {c.spec: c for cands in lists for c in cands}.values():
        c.planner.check(config.gen_length, config.block_length)
    cal_seeds = [derive_seed(config.seed, 0, i) for i in range(len(calibration))]
    rep_seeds = [derive_seed(config.seed, 1, i) for i in range(len(report))]
    memo, memo_rep = Memo(), Memo()
    bar = make_progress(transient=True)
    bar.disable = not progress
    out = []
    with bar:
        task = bar.add_task("reference (one token per call)", total=2 + sum(len(c) + 1 for c in lists))
        t0 = time.perf_counter()
        ref = decode(den, calibration, cal_seeds, reference_planner(config), config)
        ref_rep = decode(den, report, rep_seeds, reference_planner(config), config)
        ref_seconds = time.perf_counter() - t0
        bar.advance(task, 2)
        js_floor = None
        if config.sampled and den.spec.vocab_size <= MAX_JS_VOCAB + 2:
            js_floor = sample_js(ref.generated, ref_rep.generated, den.spec.vocab_size, config.max_distance)
        for cfg, cands in zip(configs, lists):
            t0 = time.perf_counter()
            scores: list[Score] = []
            for c in cands:
                bar.update(task, description=f"budget {cfg.budget}: {c.spec}")
                scores.append(score_candidate(den, calibration, cal_seeds, c, ref, cfg, memo=memo)[0])
                bar.advance(task)
            if cfg.search_evals:
                bar.update(task, description=f"budget {cfg.budget}: searching fixed schedules "
                                             f"({cfg.search_evals} at most)")
                found = search_candidate(den, calibration, cal_seeds, scores, ref, cfg, memo)
                if found is not None:
                    scores.append(found)
            if not cfg.sampled:
                rescore_greedy(den, calibration, scores, memo, ref, cfg)
            winner = pick(scores, cfg.sampled, len(calibration), js_floor)
            bar.update(task, description=f"budget {cfg.budget}: report set: {winner.candidate.spec}")
            rep, _ = score_candidate(den, report, rep_seeds, winner.candidate, ref_rep, cfg, screen=False,
                                     memo=memo_rep)
            bar.advance(task)
            out.append(TuneResult(cfg, scores, winner, rep, len(calibration), len(report), js_floor,
                                  time.perf_counter() - t0, ref_seconds))
    return out
