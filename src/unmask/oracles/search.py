"""The best fixed schedule of a block under a call budget: exhaustive where feasible, local search beyond.

A fixed schedule is an ordered partition of the block offsets into ``calls``
groups (call t reveals group t). :func:`search_schedule` minimises any
objective over them: every ordered partition when there are at most
``exhaustive_limit`` of them (``k! S(B, k)``), else a first-improvement local
search from the best of the given seed schedules (moving one offset to another
call, or swapping the calls of two offsets), until a full pass improves
nothing or ``max_evals`` objectives were computed.

An objective returns a number, or a tensor of per-sample values drawn with
common random numbers (the same prompts and seeds for every schedule). With
tensors a move counts as an improvement only when the paired mean difference
is below ``-z`` standard errors (:func:`improves`): a search over noisy
estimates otherwise follows the noise, and its winner is worse than its start
as often as not. The objectives here:

- :func:`exact_objective`: :func:`~unmask.oracles.schedule_kl`, exact, for
  first-order Markov chains;
- any objective of the layers above that generate (the oracle benchmark's
  ``sampled_objective``: the mean :func:`~unmask.oracles.path_kl` of samples
  generated with the schedule, common random numbers across schedules); the
  minimum of a sampled objective over a search is biased low, so re-measure
  the winner on fresh seeds before quoting it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import Tensor

from .markov import MarkovOracle
from .metrics import ordered_partitions, schedule_kl

Levels = tuple[tuple[int, ...], ...]
Value = float | Tensor
Objective = Callable[[Levels], Value]


@dataclass(frozen=True)
class SearchResult:
    levels: Levels  # the best schedule found
    value: float  # its objective
    evaluations: int
    exhaustive: bool  # True: every ordered partition was scored, so ``levels`` is the optimum
    top: tuple[tuple[Levels, float], ...] = ()  # the best few scored, best first


def mean_value(value: Value) -> float:
    """A number, or the mean of per-sample values."""
    return float(value.double().mean()) if isinstance(value, Tensor) else float(value)


def improves(new: Value, old: Value, z: float = 0.0) -> bool:
    """``new`` is lower than ``old``: per-sample tensors by more than ``z`` standard errors of the paired difference."""
    if isinstance(new, Tensor) and isinstance(old, Tensor):
        if new.shape != old.shape:
            raise ValueError(f"paired values need equal shapes, got {tuple(new.shape)} and {tuple(old.shape)}")
        d = (new.double() - old.double()).reshape(-1)
        se = float(d.std()) / math.sqrt(d.numel()) if d.numel() > 1 else 0.0
        return float(d.mean()) < -z * se
    return mean_value(new) < mean_value(old)


def canonical(levels: Sequence[Sequence[int]]) -> Levels:
    return tuple(tuple(sorted(int(i) for i in level)) for level in levels)


def count_schedules(block_length: int, calls: int) -> int:
    """``k! S(B, k)``: the number of ordered partitions of B offsets into k non-empty calls."""
    return sum((-1) ** j * math.comb(calls, j) * (calls - j) ** block_length for j in range(calls + 1))


def _neighbours(levels: Levels, swaps: bool = True) -> list[Levels]:
    """Every schedule one move (an offset to another call) or, with ``swaps``, one swap (two offsets' calls) away."""
    call_of = {i: t for t, level in enumerate(levels) for i in level}
    k, out = len(levels), []

    def build(assign: dict[int, int]) -> Levels | None:
        groups = [sorted(i for i, t in assign.items() if t == c) for c in range(k)]
        return None if any(not g for g in groups) else canonical(groups)

    for i, t in call_of.items():
        for c in range(k):
            if c != t and (cand := build({**call_of, i: c})) is not None:
                out.append(cand)
    for i, j in itertools.combinations(sorted(call_of), 2) if swaps else ():
        if call_of[i] != call_of[j]:
            out.append(build({**call_of, i: call_of[j], j: call_of[i]}))  # type: ignore[arg-type]
    return out


def search_schedule(
    objective: Objective, block_length: int, calls: int, seeds: Sequence[Sequence[Sequence[int]]] = (),
    exhaustive_limit: int = 20_000, max_evals: int = 5_000, swaps: bool = True,
    advance: Callable[[], None] | None = None, z: float = 0.0,
) -> SearchResult:
    """The fixed schedule of ``calls`` calls over ``block_length`` offsets with the smallest ``objective``.

    ``z``: with per-sample objectives, how many standard errors a move must
    gain to be taken (0: any lower mean).
    """
    if not isinstance(block_length, int) or block_length < 1:
        raise ValueError(f"block_length must be a positive int, got {block_length!r}")
    if not isinstance(calls, int) or not 1 <= calls <= block_length:
        raise ValueError(f"calls must be an int in [1, block_length={block_length}], got {calls!r}")
    if not isinstance(z, (int, float)) or isinstance(z, bool) or not z >= 0:
        raise ValueError(f"z must be a number >= 0 (standard errors), got {z!r}")
    cache: dict[Levels, Value] = {}

    def score(levels: Levels) -> Value:
        if levels not in cache:
            cache[levels] = objective(levels)
            if advance is not None:
                advance()
        return cache[levels]

    if count_schedules(block_length, calls) <= exhaustive_limit:
        best = min(ordered_partitions(block_length, calls), key=lambda levels: mean_value(score(levels)))
        return SearchResult(best, mean_value(cache[best]), len(cache), True, _top(cache))
    starts = [canonical(s) for s in seeds if len(s) == calls]
    if not starts:
        raise ValueError(f"give at least one seed schedule with {calls} calls for a block of {block_length}")
    best = min(starts, key=lambda levels: mean_value(score(levels)))
    improved = True
    while improved and len(cache) < max_evals:
        improved = False
        for cand in _neighbours(best, swaps):
            if len(cache) >= max_evals:
                break
            if improves(score(cand), cache[best], z):
                best, improved = cand, True
                break
    return SearchResult(best, mean_value(cache[best]), len(cache), False, _top(cache))


def _top(cache: dict[Levels, Value], k: int = 4) -> tuple[tuple[Levels, float], ...]:
    means = {levels: mean_value(v) for levels, v in cache.items()}
    return tuple(sorted(means.items(), key=lambda kv: kv[1])[:k])


def exact_objective(oracle: MarkovOracle, context: str = "start") -> Objective:
    """Exact expected KL per token (:func:`~unmask.oracles.schedule_kl`) of a schedule on a first-order chain."""
    return lambda levels: schedule_kl(oracle, levels, context)
