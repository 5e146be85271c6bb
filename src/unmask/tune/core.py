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
   Then, by default when sampling (``TuneConfig.search``), a local search
   from the two best fixed schedules looks for a better one, scored the same
   way per prompt with common random numbers; what it ends on must beat the
   best fixed candidate by two standard errors of the paired difference on
   fresh seeds (greedy: on the same prompts) before it joins the candidates
   as ``schedule(groups=...)``: the best of many noisy scores is biased low,
   and without the check the search replaces an optimal schedule by a worse
   one that scored lower by chance.
4. Pick the winner: greedy, the highest agreement (near ties: the highest
   loglik, then fewer calls); sampling, the lowest self KL plus one standard
   error (so that an exactly known 0 beats a noisy estimate near 0) among
   planners for which it is exact or a bound, replaced by a biased-estimate
   planner only where its pair JS is lower by more than the floor.
5. Decode the report prompts with the winner and score it there, so the
   quoted figures are not those it was selected on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

from ..denoiser import Denoiser
from ..noise import derive_seed
from ..oracles.metrics import BIASED
from ..oracles.search import canonical, improves, search_schedule
from ..planners import Schedule, fixed_schedule
from ..progress import make_progress
from .candidates import Candidate, candidate
from .measure import MAX_JS_VOCAB, decode, reference_planner, rescore_greedy, row_losses, score_candidate
from .scoring import sample_js
from .types import Decode, Score, TuneConfig, TuneResult


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
        decodes: dict[str, Decode] = {}
        for c in candidates:
            bar.update(task, description=c.spec)
            s, d = score_candidate(den, calibration, cal_seeds, c, ref, config)
            if d is not None:
                decodes[c.spec] = d
            scores.append(s)
            bar.advance(task)
        js_floor = None
        if config.sampled and den.spec.vocab_size <= MAX_JS_VOCAB + 2:
            js_floor = sample_js(ref.generated, ref_rep.generated, den.spec.vocab_size, config.max_distance)
        if config.search_evals:
            bar.update(task, description=f"searching fixed schedules ({config.search_evals} at most)")
            found = search_candidate(den, calibration, cal_seeds, scores, ref, config)
            if found is not None:
                scores.append(found)
        if not config.sampled:
            rescore_greedy(den, calibration, scores, decodes, ref, config)
        winner = pick(scores, config.sampled, len(calibration), js_floor)
        bar.update(task, description=f"report set: {winner.candidate.spec}")
        rep, _ = score_candidate(den, report, rep_seeds, winner.candidate, ref_rep, config, screen=False)
        bar.advance(task)
    return TuneResult(config, scores, winner, rep, len(calibration), len(report), js_floor, time.perf_counter() - t0)


ACCEPT_Z = 2.0  # standard errors the schedule a search ends on must gain over the best fixed candidate


def search_candidate(den: Denoiser, prompts: Sequence[Sequence[int]], seeds: Sequence[int], scores: list[Score],
                     ref: Decode, config: TuneConfig) -> Score | None:
    """A better fixed schedule than the candidates', found without labels, or None.

    Local search (:func:`~unmask.oracles.search_schedule`: one offset moved
    to another call at a time) from the two best eligible fixed schedules with
    exactly ``budget`` calls, on per-prompt losses (self KL when sampling,
    disagreement when greedy) of the calibration prompts, at most
    ``config.search_evals`` schedules; then the acceptance test against the
    best fixed candidate (module docstring).
    """
    b = config.block_length
    fixed = [s for s in scores if s.eligible and s.candidate.fixed_calls == config.budget
             and fixed_schedule(s.candidate.planner, b) is not None]
    if not fixed:
        return None
    fixed.sort(key=(lambda s: s.kl) if config.sampled else (lambda s: -(s.agreement or 0.0)))
    starts = [fixed_schedule(s.candidate.planner, b) for s in fixed[:2]]
    r = search_schedule(lambda levels: row_losses(den, prompts, seeds, Schedule(levels), ref, config), b,
                        config.budget, starts, exhaustive_limit=0, max_evals=config.search_evals, swaps=False)
    if r.levels in {canonical(s) for s in starts}:
        return None
    check = [derive_seed(config.seed, 2, i) for i in range(len(prompts))] if config.sampled else list(seeds)
    new = row_losses(den, prompts, check, Schedule(r.levels), ref, config)
    old = row_losses(den, prompts, check, fixed[0].candidate.planner, ref, config)
    if not improves(new, old, ACCEPT_Z):
        return None
    found, _ = score_candidate(den, prompts, seeds, candidate("searched", f"schedule(groups={r.levels})", b,
                                                              config.num_blocks), ref, config, screen=False)
    return found
