"""Unmasking schedules as data: which block offsets (or how many) each call reveals.

Pure geometry, no model and no tensors: print them, test them, feed them to a
planner. Offsets are 0-based within a block of ``block_length`` positions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def _check_block(block_length: int) -> None:
    if not isinstance(block_length, int) or block_length < 1:
        raise ValueError(f"block_length must be a positive int, got {block_length!r}")


def dilated_levels(block_length: int, base: int = 2, skip_exp: int = 1) -> list[list[int]]:
    """The Dilated Unmasking Scheduler's groups (Luxembourg et al. 2025, arXiv 2506.19037, Sec. 3.5).

    The first stride is ``block_length // base**skip_exp``; each level takes the
    not-yet-revealed offsets at multiples of the stride, then divides the stride
    by ``base``. Offsets never reached are a final level, and a last level
    smaller than the one before it is merged into it. ``B=8`` gives
    ``[[0, 4], [2, 6], [1, 3, 5, 7]]``: far-apart anchors first, gaps last,
    ``log_base(B)`` calls for a power of the base.
    """
    _check_block(block_length)
    if not isinstance(base, int) or base < 2:
        raise ValueError(f"base must be an int >= 2, got {base!r}")
    if not isinstance(skip_exp, int) or skip_exp < 0:
        raise ValueError(f"skip_exp must be an int >= 0, got {skip_exp!r}")
    revealed = [False] * block_length
    levels: list[list[int]] = []
    stride = block_length // base**skip_exp
    while stride >= 1:
        level = [i for i in range(0, block_length, stride) if not revealed[i]]
        if level:
            levels.append(level)
            for i in level:
                revealed[i] = True
        stride //= base
    leftovers = [i for i in range(block_length) if not revealed[i]]
    if leftovers:
        levels.append(leftovers)
    return merge_small_last(levels)


def merge_small_last(levels: list[list[int]]) -> list[list[int]]:
    """Merge a last level smaller than the one before it into that level (one call fewer), as DUS's reference does."""
    if len(levels) >= 2 and len(levels[-1]) < len(levels[-2]):
        last = levels.pop()
        levels[-1] = sorted(levels[-1] + last)
    return levels


def binary_levels(block_length: int) -> list[list[int]]:
    """Binary-search order: the midpoint of the block, then the midpoints of each half, ...

    Level ``k`` holds at most ``2**k`` offsets; a last level smaller than the
    one before it is merged into it, as in DUS's reference (``B=8``:
    ``[[3], [1, 5], [0, 2, 4, 6, 7]]``), so ``floor(log2(B)) + 1`` levels.
    """
    _check_block(block_length)
    levels: list[list[int]] = []
    spans = [(0, block_length - 1)]
    while spans:
        level, nxt = [], []
        for lo, hi in spans:
            mid = (lo + hi) // 2
            level.append(mid)
            if lo <= mid - 1:
                nxt.append((lo, mid - 1))
            if mid + 1 <= hi:
                nxt.append((mid + 1, hi))
        levels.append(sorted(level))
        spans = nxt
    return merge_small_last(levels)


def linear_counts(n: int, steps: int) -> list[int]:
    """LLaDA's per-step counts: ``n // steps`` each, the remainder to the first steps."""
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    q, r = divmod(n, steps)
    return [q + (1 if i < r else 0) for i in range(steps)]


def level_sizes(levels: list[list[int]]) -> list[int]:
    """The number of offsets per level: a count schedule for top-k planners."""
    return [len(level) for level in levels]


def log_calls(block_length: int, base: int = 2) -> int:
    """``ceil(log_base(B))``: DUS's calls per block when ``B`` is a power of ``base``."""
    _check_block(block_length)
    return max(1, math.ceil(round(math.log(block_length, base), 9)))


def far_apart_order(k: int) -> list[int]:
    """The residues ``0..k-1`` ordered far apart on the cycle: each next one farthest from those before.

    Greedy maximin on the circle of ``k`` residues, starting at 0; ties go to
    the residue farthest from the one chosen last (so consecutive calls are far
    apart too), then to the smallest: ``k=4`` gives ``[0, 2, 1, 3]``, ``k=5``
    ``[0, 2, 4, 1, 3]``, ``k=6`` ``[0, 3, 1, 4, 2, 5]``.
    """
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")

    def gap(a: int, b: int) -> int:
        return min((a - b) % k, (b - a) % k)

    order = [0]
    while len(order) < k:
        rest = [r for r in range(k) if r not in order]
        order.append(max(rest, key=lambda r: (min(gap(r, c) for c in order), gap(r, order[-1]), -r)))
    return order


def interleave_levels(block_length: int, k: int, order: Sequence[int] | None = None) -> list[list[int]]:
    """Residue-class interleaving: call t reveals the offsets ``i`` with ``i % k == order[t]``.

    Tokens revealed together are exactly ``k`` apart, so on a chain whose
    direct dependence reaches ``k - 1`` places no call reveals two directly
    dependent tokens. ``order`` (a permutation of ``range(k)``) defaults to
    :func:`far_apart_order`. Classes with no offset (``k > block_length``)
    are skipped, so the schedule has ``min(k, block_length)`` calls.
    """
    _check_block(block_length)
    order = far_apart_order(k) if order is None else [int(r) for r in order]
    if sorted(order) != list(range(k)):
        raise ValueError(f"order must be a permutation of range(k={k}), got {order!r}")
    levels = [[i for i in range(r, block_length, k)] for r in order]
    return [level for level in levels if level]


def geometric_sizes(total: int, calls: int, growth: float = 2.0) -> list[int]:
    """``calls`` positive group sizes summing to ``total``, growing by ``growth`` per call.

    Ideal sizes ``total * growth**t / sum(growth**j)`` rounded by largest
    remainders, then raised to at least 1 (taken from the largest group).
    ``growth=1`` gives even groups; 2 gives DUS-like doubling.
    """
    if not isinstance(total, int) or total < 1:
        raise ValueError(f"total must be a positive int, got {total!r}")
    if not isinstance(calls, int) or isinstance(calls, bool) or not 1 <= calls <= total:
        raise ValueError(f"calls must be an int in [1, {total}], got {calls!r}")
    if not isinstance(growth, (int, float)) or not 1.0 <= growth < math.inf:
        raise ValueError(f"growth must be a finite number >= 1, got {growth!r}")
    weights = [float(growth) ** t for t in range(calls)]
    ideal = [total * w / sum(weights) for w in weights]
    sizes = [math.floor(x) for x in ideal]
    for t in sorted(range(calls), key=lambda t: (sizes[t] - ideal[t], -t))[: total - sum(sizes)]:
        sizes[t] += 1
    for t in range(calls):
        while sizes[t] < 1:
            sizes[t] += 1
            sizes[max(range(calls), key=lambda j: sizes[j])] -= 1
    return sizes


def farthest_order(block_length: int) -> list[int]:
    """Offsets in farthest-point order: each next offset farthest from the revealed ones.

    The position just before the block (the prompt or the previous block)
    counts as revealed, the one after it does not; ties go to the smallest
    offset. ``B=8`` gives ``[7, 3, 1, 5, 0, 2, 4, 6]``.
    """
    _check_block(block_length)
    order: list[int] = []
    dist = [i + 1 for i in range(block_length)]  # distance to the nearest revealed position (-1 at first)
    for _ in range(block_length):
        best = max(range(block_length), key=lambda i: (dist[i], -i))
        order.append(best)
        dist = [0 if i == best else min(d, abs(i - best)) for i, d in enumerate(dist)]
    return order


def farthest_levels(block_length: int, calls: int, growth: float = 2.0) -> list[list[int]]:
    """The farthest-point order cut into ``calls`` groups of :func:`geometric_sizes` offsets."""
    order = farthest_order(block_length)
    levels, start = [], 0
    for size in geometric_sizes(block_length, calls, growth):
        levels.append(sorted(order[start : start + size]))
        start += size
    return levels


def check_levels(levels: Sequence[Sequence[int]], block_length: int, name: str = "levels") -> None:
    """Raise ``ValueError`` (naming the argument ``name``) unless ``levels`` partition ``range(block_length)``."""
    flat = sorted(int(i) for level in levels for i in level)
    if not levels or any(len(level) == 0 for level in levels) or flat != list(range(block_length)):
        raise ValueError(
            f"{name} must be non-empty groups that partition the block offsets 0..{block_length - 1}, got {levels!r}"
        )
