"""Unmasking schedules as data: which block offsets (or how many) each call reveals.

Pure geometry, no model and no tensors: print them, test them, feed them to a
planner. Offsets are 0-based within a block of ``block_length`` positions.
"""

from __future__ import annotations

import math


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
