"""The tuner's label-free search for a better fixed schedule, and its acceptance test on data it never saw.

Local search (:func:`~unmask.oracles.search_schedule`: one offset moved to
another call at a time) from the two best eligible fixed schedules with
exactly ``budget`` calls, on per-prompt losses (self KL when sampling,
disagreement with the reference when greedy). The minimum of many noisy
scores is biased low, so what the search ends on joins the candidates only if
it beats the best fixed candidate by ``ACCEPT_Z`` standard errors of the
paired difference on data the search never scored:

- sampling: the same calibration prompts with fresh seeds (fresh samples);
- greedy: a greedy output is a function of its prompt, so fresh seeds would
  repeat the search's own numbers: the calibration prompts are split, the
  first ``ceil(n / 2)`` drive the search and the other ``floor(n / 2)`` are
  held out for the acceptance test (:func:`search_split`), each part at least
  ``SEARCH_MIN_PROMPTS``.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..denoiser import Denoiser
from ..noise import derive_seed
from ..oracles.search import canonical, improves, search_schedule
from ..planners import Schedule, fixed_schedule
from .candidates import candidate
from .measure import Memo, row_losses, score_candidate
from .types import Decode, Score, TuneConfig

ACCEPT_Z = 2.0  # standard errors the schedule a search ends on must gain over the best fixed candidate
SEARCH_MIN_PROMPTS = 4  # greedy: calibration prompts in each part (search, held out)


def search_split(n: int, config: TuneConfig) -> tuple[list[int], list[int]]:
    """Calibration rows that drive the search and rows its acceptance test is measured on.

    Sampling: all rows for both (the test draws fresh seeds). Greedy: the first
    ``ceil(n / 2)`` and the rest, disjoint; ``ValueError`` when either part
    would hold fewer than ``SEARCH_MIN_PROMPTS`` prompts.
    """
    if config.sampled:
        return list(range(n)), list(range(n))
    if n < 2 * SEARCH_MIN_PROMPTS:
        raise ValueError(f"search={config.search_evals} with greedy decoding (temperature 0) needs at least "
                         f"{2 * SEARCH_MIN_PROMPTS} calibration prompts: the first half drives the search and the "
                         f"second half is held out for its acceptance test ({SEARCH_MIN_PROMPTS} at least each); "
                         f"got {n} (add prompts or set search to 0)")
    half = (n + 1) // 2
    return list(range(half)), list(range(half, n))


def search_candidate(den: Denoiser, prompts: Sequence[Sequence[int]], seeds: Sequence[int], scores: list[Score],
                     ref: Decode, config: TuneConfig, memo: Memo | None = None) -> Score | None:
    """A better fixed schedule than the candidates', found without labels, or None (module docstring)."""
    b = config.block_length
    fixed = [s for s in scores if s.eligible and s.candidate.fixed_calls == config.budget
             and fixed_schedule(s.candidate.planner, b) is not None]
    if not fixed:
        return None
    fixed.sort(key=(lambda s: s.kl) if config.sampled else (lambda s: -(s.agreement or 0.0)))
    starts = [fixed_schedule(s.candidate.planner, b) for s in fixed[:2]]
    on, held = search_split(len(prompts), config)
    p_on, s_on, ref_on = [prompts[i] for i in on], [seeds[i] for i in on], ref.rows(on)
    r = search_schedule(lambda levels: row_losses(den, p_on, s_on, Schedule(levels), ref_on, config), b,
                        config.budget, starts, exhaustive_limit=0, max_evals=config.search_evals, swaps=False)
    if r.levels in {canonical(s) for s in starts}:
        return None
    p_held, ref_held = [prompts[i] for i in held], ref.rows(held)
    check = ([derive_seed(config.seed, 2, i) for i in held] if config.sampled else [seeds[i] for i in held])
    new = row_losses(den, p_held, check, Schedule(r.levels), ref_held, config)
    old = row_losses(den, p_held, check, fixed[0].candidate.planner, ref_held, config)
    if not improves(new, old, ACCEPT_Z):
        return None
    found, _ = score_candidate(den, prompts, seeds, candidate("searched", f"schedule(groups={r.levels})", b,
                                                              config.num_blocks), ref, config, screen=False, memo=memo)
    return found
