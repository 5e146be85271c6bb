"""The planners ``unmask tune`` compares at a call budget, as spec strings.

Fixed schedules are listed only if they fit the budget (calls per block <=
budget); adaptive planners (threshold, EB and their spaced hybrids) are
listed over a grid of settings and kept or dropped once their mean calls per
block on the calibration set are known.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..planners import Planner, parse_planner
from ..schedules import dilated_levels

TAUS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99)
GAMMAS = (0.1, 0.5, 1.0, 2.0, 4.0, 8.0)
SPACED = ("threshold(tau=0.7)", "threshold(tau=0.9)", "eb(gamma=2.0)", "eb(gamma=8.0)")
SCORES = ("confidence", "margin", "entropy", "random")
# planners that revise or keep per-row history: ReMDM-style remasking and WINO capped at the budget, token
# editing with one post-fill call, a stability gate (adaptive: kept or dropped by their measured calls)
REMASK_TAUS = (0.7, 0.9)
MAX_DUS = 4  # dilated variants kept per budget: those closest to it


@dataclass(frozen=True)
class Candidate:
    family: str
    spec: str
    planner: Planner
    fixed_calls: int | None  # calls per block when fixed in advance (None for adaptive planners)


def candidate(family: str, spec: str, block_length: int, num_blocks: int = 1) -> Candidate:
    """A candidate from a spec string (``ValueError`` for a bad spec)."""
    planner = parse_planner(spec)
    return Candidate(family, spec, planner, planner.calls_per_block(block_length, num_blocks))


def family_of(planner: Planner) -> str:
    """A short family label for a planner (used for user-given candidates)."""
    name = type(planner).name
    if name == "topk":
        return f"top-k {planner.score}"  # type: ignore[attr-defined]
    if name == "spaced":
        return f"spaced {type(planner.inner).name}"  # type: ignore[attr-defined]
    return {"dilated": "DUS"}.get(name, name)


def dus_specs(block_length: int, budget: int) -> list[str]:
    """``dilated(base, skip_exp)`` settings with at most ``budget`` calls, distinct schedules, closest to it first."""
    found: dict[tuple[tuple[int, ...], ...], tuple[int, int, int]] = {}
    for base in range(2, block_length + 1):
        for skip in range(0, max(1, math.ceil(math.log(block_length, base))) + 1):
            levels = tuple(map(tuple, dilated_levels(block_length, base, skip)))
            if len(levels) <= budget and levels not in found:
                found[levels] = (len(levels), base, skip)
    best = sorted(found.values(), key=lambda t: (-t[0], t[1], t[2]))[:MAX_DUS]
    return [f"dilated(base={b}, skip_exp={s})" for _, b, s in best]


def paired_order(k: int) -> tuple[int, ...]:
    """Residue classes ``0, k - 1, 1, 2, ..., k - 2``: after two calls every class-0 token has a revealed neighbour."""
    return (0, k - 1, *range(1, k - 1))


def default_candidates(budget: int, block_length: int, gen_length: int) -> list[Candidate]:
    """DUS bases, interleave (classes far apart, and adjacent classes first), farthest point, top-k scores,
    threshold and EB grids, spaced hybrids, and the revising planners (remask and wino capped at the budget,
    edit, stable)."""
    if not isinstance(budget, int) or isinstance(budget, bool) or not 1 <= budget <= block_length:
        raise ValueError(f"budget must be an int in [1, block_length={block_length}] (calls per block), got {budget!r}")
    num_blocks = gen_length // block_length

    def make(family: str, spec: str) -> Candidate:
        return candidate(family, spec, block_length, num_blocks)

    out = [make("DUS", s) for s in dus_specs(block_length, budget)]
    if budget >= 2:
        out.append(make("interleave", f"interleave(k={budget})"))
        if budget >= 3:  # adjacent classes first: two calls reveal neighbouring pairs, which cut a second-order chain
            out.append(make("interleave", f"interleave(k={budget}, order={paired_order(budget)})"))
        out.append(make("farthest", f"farthest(calls={budget})"))
    out += [make(f"top-k {s}", f"topk(score='{s}', steps={budget * num_blocks})") for s in SCORES]
    out += [make("threshold", f"threshold(tau={t})") for t in TAUS]
    out += [make("EB", f"eb(gamma={g})") for g in GAMMAS]
    out += [make(f"spaced {s.split('(')[0]}", f"spaced({s}, start_stride=8)") for s in SPACED]
    out += [make("remask", f"remask(threshold(tau={t}), eta=0.1, max_calls={budget})") for t in REMASK_TAUS]
    out.append(make("wino", f"wino(wide=0.7, narrow=0.9, max_calls={budget})"))
    out.append(make("edit", "edit(threshold(tau=0.9), threshold=0.95, max_edit_calls=1)"))
    out.append(make("stable", "stable(threshold(tau=0.7), window=2)"))
    return out


def user_candidates(specs: Sequence[str], block_length: int, num_blocks: int = 1) -> list[Candidate]:
    """Candidates from spec strings given by the user, labelled by family."""
    if not specs:
        raise ValueError("candidates must hold at least one planner spec")
    return [candidate(family_of(parse_planner(s)), s, block_length, num_blocks) for s in specs]
