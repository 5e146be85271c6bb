"""The oracle frontier: every planner's error at 2 to 6 calls per 32-token block, the limit, and the tuner's pick.

On three oracles with exact posteriors (first- and second-order Markov
chains, a slow-mixing HMM) every candidate of ``unmask tune`` (DUS bases and
skips, interleave, farthest point, top-k scores, threshold and EB grids,
spaced hybrids) generates ``samples`` unconditional 32-token blocks at
temperature 1, and is measured two ways:

- *KL/token*, KL(q || p) per token: exact (:func:`~unmask.oracles.schedule_kl`)
  for fixed schedules on the first-order chain; otherwise the mean of
  :func:`~unmask.oracles.path_kl` with its standard error where that mean is
  exact in expectation, labelled an upper bound for random orders, and not
  shown where it is biased (:func:`~unmask.oracles.path_kl_status`);
- *pair KL*, the consistent pairwise-marginal measure
  (:func:`~unmask.oracles.pair_divergence`), for every planner, beside its
  sampling floor.

The *limit* row is the best fixed schedule found by
:func:`~unmask.oracles.search_schedule` (exact objective on the first-order
chain; sampled path KL elsewhere, re-measured on fresh seeds); the *tuner* row
is what ``unmask tune --model oracle:NAME --budget K --samples 1024 --search 300``
picks from its own samples (a different seed), measured like every other row.
"""

from __future__ import annotations

import argparse
import itertools
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor

from ..config import GenerationConfig
from ..loop import generate
from ..oracles import (
    BIASED, BOUND, ChainOracle, HMMOracle, MarkovOracle, enumerate_sampler, named_oracle, oracle_title, path_kl,
    path_kl_status, schedule_kl,
)
from ..oracles.pairs import exact_pair_marginals, pair_kl, sample_pair_marginals
from ..oracles.search import Levels, Objective, canonical, exact_objective, search_schedule
from ..planners import Planner, Schedule, fixed_schedule, parse_planner
from ..schedules import interleave_levels
from ..tune import TuneConfig, default_candidates, tune
from . import run_calls, write_report
from .args import BLOCK, ORACLE_FULL, ORACLE_QUICK, ORACLES, output_dir, quick_defaults
from .args import ORACLE_BUDGETS as BUDGETS
from .args import add_oracle_arguments as add_arguments
MAX_DISTANCE = 8


def sampled_path_kl(oracle: ChainOracle, levels: Levels, samples: int, seed: int) -> Tensor:
    """Per-sample path KL ``[samples]`` of unconditional blocks generated with the fixed schedule ``levels``."""
    b = sum(map(len, levels))
    prompts: list[list[int]] = [[] for _ in range(samples)]
    cfg = GenerationConfig(gen_length=b, block_length=b, planner=Schedule(levels), sampling={"temperature": 1.0},
                           early_exit=False, seed=seed)
    return path_kl(oracle, generate(oracle, prompts, cfg), prompts)


def sampled_objective(oracle: ChainOracle, samples: int = 1024, seed: int = 0) -> Objective:
    """Per-sample path KL per token ``[samples]`` of unconditional blocks generated with the schedule (temperature 1).

    The same seeds for every schedule: common random numbers, so that
    :func:`improves` compares schedules by their paired differences.
    """
    return lambda levels: sampled_path_kl(oracle, levels, samples, seed)


@dataclass(frozen=True)
class Measure:
    spec: str
    family: str
    calls: float  # mean calls per block
    kl: float | None  # per token; None where path KL is biased
    kl_se: float  # 0 for exact values
    kind: str  # "exact" (computed), "sampled" (mean of an exact-in-expectation estimate), "bound", "biased"
    pair: float  # mean pairwise KL, nats per pair


@dataclass(frozen=True)
class Limit:
    budget: int
    levels: tuple[tuple[int, ...], ...]
    kl: float
    kl_se: float
    evaluations: int
    exhaustive: bool
    found_by: str = "search"  # or the spec of the table's fixed schedule that beat the search


@dataclass
class OracleFrontier:
    name: str
    measures: dict[str, Measure]  # by spec
    floor: float  # pair KL of as many exact samples
    limits: dict[int, Limit]
    picks: dict[int, str]  # budget -> the tuner's spec


@dataclass
class FrontierResult:
    oracles: list[OracleFrontier]
    samples: int
    seed: int
    budgets: tuple[int, ...]
    checks: list[Check] = field(default_factory=list)  # path KL against exact KL, by enumeration
    seconds: float = 0.0
    files: list[Path] = field(default_factory=list)
    search_evals: int = 300  # per limit search, and per tuner run
    tune_samples: int = 1024  # per set, for the tuner's picks


def _exact_levels(oracle: ChainOracle, planner: Planner) -> list[list[int]] | None:
    """The schedule of a fixed-schedule planner on a first-order chain (where schedule_kl is exact), else None."""
    if isinstance(oracle, MarkovOracle) and oracle.order == 1:
        return fixed_schedule(planner, BLOCK)
    return None


def measure(oracle: ChainOracle, spec: str, family: str, samples: int, seed: int, exact_pairs: torch.Tensor) -> Measure:
    """Both measures of one planner on ``samples`` unconditional blocks at temperature 1."""
    planner = parse_planner(spec)
    cfg = GenerationConfig(gen_length=BLOCK, block_length=BLOCK, planner=planner, sampling={"temperature": 1.0},
                           early_exit=False, seed=seed)
    prompts: list[list[int]] = [[] for _ in range(samples)]
    out = generate(oracle, prompts, cfg)
    pair = pair_kl(sample_pair_marginals(out.generated, oracle.num_tokens, MAX_DISTANCE), exact_pairs)
    calls = float(out.nfe_per_row.double().mean())
    status = path_kl_status(planner)
    levels = _exact_levels(oracle, planner)
    if levels is not None:
        return Measure(spec, family, calls, schedule_kl(oracle, levels, "start"), 0.0, "exact", pair)
    if status == BIASED:
        return Measure(spec, family, calls, None, 0.0, "biased", pair)
    kl = path_kl(oracle, out, prompts, planner=planner)
    kind = "bound" if status == BOUND else "sampled"
    return Measure(spec, family, calls, float(kl.mean()), float(kl.std() / math.sqrt(samples)), kind, pair)


def find_limit(oracle: ChainOracle, budget: int, seeds: list[list[list[int]]], samples: int, seed: int,
               max_evals: int, advance: Callable[[], None] | None = None) -> Limit:
    """The best fixed schedule with ``budget`` calls: exact search on a first-order chain, sampled elsewhere.

    A sampled search runs on ``samples // 2`` blocks of another seed; its four
    best schedules and the seeds are then measured on the frontier's own
    ``samples`` blocks (``seed``), like every planner in the table, and the
    best of them is the limit (so it is never above a fixed schedule of the table).
    """
    if isinstance(oracle, MarkovOracle) and oracle.order == 1:
        r = search_schedule(exact_objective(oracle), BLOCK, budget, seeds, max_evals=10 * max_evals, advance=advance)
        return Limit(budget, r.levels, r.value, 0.0, r.evaluations, r.exhaustive)
    r = search_schedule(sampled_objective(oracle, samples // 2, seed + 1), BLOCK, budget, seeds, max_evals=max_evals,
                        swaps=False, advance=advance)
    finalists = dict.fromkeys([levels for levels, _ in r.top] + [canonical(s) for s in seeds[:8]])
    kls = {levels: sampled_path_kl(oracle, levels, samples, seed) for levels in finalists}
    best = min(kls, key=lambda levels: float(kls[levels].mean()))
    kl = kls[best]
    return Limit(budget, best, float(kl.mean()), float(kl.std() / math.sqrt(kl.numel())), r.evaluations, False)


def limit_seeds(budget: int) -> list[list[list[int]]]:
    """Start points of the search: the fixed candidates, and every class order of interleave when k <= 6."""
    out = [levels for c in default_candidates(budget, BLOCK, BLOCK)
           if c.fixed_calls == budget and (levels := fixed_schedule(c.planner, BLOCK)) is not None]
    if budget <= 6:
        out += [interleave_levels(BLOCK, budget, (0,) + p) for p in itertools.permutations(range(1, budget))]
    return list({canonical(s): s for s in out}.values())


SMALL_ORACLES = {  # V = 3, so that every output of 6 tokens can be enumerated
    "Markov order 1": lambda: MarkovOracle(3, order=1, concentration=0.5, seed=1),
    "Markov order 2": lambda: MarkovOracle(3, order=2, concentration=0.5, seed=2),
    "HMM": lambda: HMMOracle(3, 3, persistence=0.8, concentration=0.5, seed=3),
}
CHECK_SPECS = (
    "dilated", "topk(score='margin', counts='dilated')", "eb(gamma=1.0)", "topk(score='random', counts='dilated')",
    "topk(score='confidence', counts='dilated')", "threshold(tau=0.5)", "binary(confidence_threshold=0.5)",
)
CHECK_LENGTH = 6


@dataclass(frozen=True)
class Check:
    oracle: str
    spec: str
    status: str
    kl: float  # exact KL(q || p) per token, by enumeration
    path: float  # exact expected value of path_kl's estimate
    nfe: float


def check_path_kl(oracle_name: str) -> list[Check]:
    """Exact KL against the exact mean of path_kl's estimate, by enumeration, on a small oracle (one block of 6)."""
    oracle = SMALL_ORACLES[oracle_name]()
    out = []
    for spec in CHECK_SPECS:
        planner = parse_planner(spec)
        law = enumerate_sampler(oracle, planner, CHECK_LENGTH, CHECK_LENGTH)
        out.append(Check(oracle_name, spec, path_kl_status(planner), law.kl, law.expected_path_kl, law.expected_nfe))
    return out


@dataclass(frozen=True)
class Settings:
    samples: int
    seed: int
    search_evals: int
    tune_samples: int


@lru_cache(maxsize=8)
def _oracle(name: str, seed: int) -> tuple[ChainOracle, torch.Tensor]:
    """A named oracle and its exact pair marginals, built once per process."""
    oracle = named_oracle(name, seed)
    return oracle, exact_pair_marginals(oracle, BLOCK, MAX_DISTANCE)


def _unit(kind: str, name: str, arg: object, s: Settings) -> object:
    """One independent piece of the frontier (so pieces can run in parallel processes)."""
    torch.set_num_threads(1)  # the oracles' small ops are several times slower when threads contend
    if kind == "check":
        return check_path_kl(name)
    oracle, exact_pairs = _oracle(name, s.seed)
    if kind == "floor":
        truth = oracle.sample(s.samples, BLOCK, torch.Generator().manual_seed(s.seed))
        return pair_kl(sample_pair_marginals(truth, oracle.num_tokens, MAX_DISTANCE), exact_pairs)
    if kind == "measure":
        spec, family = arg  # type: ignore[misc]
        return measure(oracle, spec, family, s.samples, s.seed, exact_pairs)
    if kind == "limit":
        return find_limit(oracle, arg, limit_seeds(arg), s.samples, s.seed, s.search_evals)  # type: ignore[arg-type]
    cfg = TuneConfig(budget=arg, gen_length=BLOCK, block_length=BLOCK, temperature=1.0, seed=s.seed + 7,  # type: ignore[arg-type]
                     batch_size=s.tune_samples, search=s.search_evals)  # the limit's search effort
    empty: list[list[int]] = [[] for _ in range(s.tune_samples)]
    spec = tune(oracle, empty, empty, default_candidates(arg, BLOCK, BLOCK), cfg).spec  # type: ignore[arg-type]
    return spec, measure(oracle, spec, "tuner's search", s.samples, s.seed, exact_pairs)  # a searched schedule is new


def _units(oracles: tuple[str, ...], budgets: tuple[int, ...]) -> list[tuple[str, str, object]]:
    """Every piece of work, the longest (searches, tuner runs) first."""
    out: list[tuple[str, str, object]] = []
    for name in oracles:
        out += [("limit", name, b) for b in budgets] + [("tune", name, b) for b in budgets]
    for name in oracles:
        specs: dict[str, str] = {f"topk(score='random', steps={BLOCK})": "one token per call"}
        for b in budgets:
            specs.update({c.spec: c.family for c in default_candidates(b, BLOCK, BLOCK)})
        out += [("floor", name, None)] + [("measure", name, item) for item in specs.items()]
    return out + [("check", name, None) for name in SMALL_ORACLES]


def run_oracle_frontier(samples: int = 2048, seed: int = 0, budgets: tuple[int, ...] = BUDGETS,
                        oracles: tuple[str, ...] = ORACLES, search_evals: int = 300, tune_samples: int = 1024,
                        out_dir: str | Path | None = None, progress: bool = True, jobs: int = 1) -> FrontierResult:
    """Run the frontier (``jobs`` processes); write ``oracle_frontier.md`` and ``.png`` into ``out_dir`` (None: no files)."""
    if not isinstance(samples, int) or samples < 2:
        raise ValueError(f"samples must be an int >= 2, got {samples!r}")
    if not budgets or any(not isinstance(b, int) or not 2 <= b <= BLOCK for b in budgets):
        raise ValueError(f"budgets must be ints in [2, {BLOCK}], got {budgets!r}")
    if not oracles or any(o not in ORACLES for o in oracles):
        raise ValueError(f"oracles must be names from {ORACLES}, got {oracles!r}")
    t0, threads = time.perf_counter(), torch.get_num_threads()
    settings, units = Settings(samples, seed, search_evals, tune_samples), _units(oracles, budgets)
    try:
        values = run_calls([(_unit, (*u, settings)) for u in units], jobs, "oracle frontier", progress)
    finally:
        torch.set_num_threads(threads)
    done = {(u[0], u[1], _key(u[2])): v for u, v in zip(units, values)}
    result = FrontierResult([_collect(name, done, budgets) for name in oracles], samples, seed, tuple(budgets),
                            [c for name in SMALL_ORACLES for c in done[("check", name, None)]],
                            search_evals=search_evals, tune_samples=tune_samples)
    result.seconds = time.perf_counter() - t0
    if out_dir is not None:
        from .oracle_report import plot_frontier, render_markdown

        result.files = write_report(out_dir, "oracle_frontier", render_markdown(result),
                                    lambda path: plot_frontier(result, path))
    return result


def _key(arg: object) -> object:
    return arg[0] if isinstance(arg, tuple) else arg  # measures are keyed by spec


def _collect(name: str, done: dict, budgets: tuple[int, ...]) -> OracleFrontier:  # type: ignore[type-arg]
    measures = {k[2]: v for k, v in done.items() if k[0] == "measure" and k[1] == name}
    picks = {b: done[("tune", name, b)] for b in budgets}
    for spec, m in picks.values():  # the tuner's own searched schedules join the table
        measures.setdefault(spec, m)
    limits = {b: best_known(done[("limit", name, b)], measures.values()) for b in budgets}
    return OracleFrontier(oracle_title(name), measures, done[("floor", name, None)], limits,
                          {b: spec for b, (spec, _) in picks.items()})


def best_known(limit: Limit, measures: Iterable[Measure]) -> Limit:
    """The search's limit, or a fixed schedule of the table (measured on the same samples) with a lower KL."""
    best = limit
    for m in measures:
        levels = fixed_schedule(parse_planner(m.spec), BLOCK)
        if levels is not None and m.kl is not None and m.calls <= limit.budget + 1e-9 and m.kl < best.kl:
            best = Limit(limit.budget, canonical(levels), m.kl, m.kl_se, limit.evaluations, False, found_by=m.spec)
    return best


def main(args: argparse.Namespace) -> int:
    """Run the frontier from parsed arguments and print it."""
    from .oracle_report import print_frontier

    quick_defaults(args, ORACLE_FULL, ORACLE_QUICK)
    result = run_oracle_frontier(args.samples, args.seed, tuple(args.budgets), tuple(args.oracles), args.search_evals,
                                 args.tune_samples, output_dir(args.out, "oracle"), jobs=args.jobs)
    print_frontier(result)
    return 0


__all__ = ["Check", "FrontierResult", "Limit", "Measure", "OracleFrontier", "add_arguments", "check_path_kl", "main",
           "run_oracle_frontier"]
