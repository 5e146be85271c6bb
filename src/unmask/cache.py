"""Cache policies: which canvas columns each call of the loop runs, and against what.

``none`` runs the whole canvas every call. ``prefix`` and ``dual`` (Fast-dLLM,
Wu et al. 2025) run one full forward at the start of each block, which fills
the denoiser's key/value cache for every column, and then only a segment:
``prefix`` the columns from the block to the end, ``dual`` the block alone.
A segment's keys/values are written into the cache at their own columns and
its queries attend to the whole cache, so the keys before (and, for ``dual``,
after) the block are those of the block's start. Every policy asks only for
the block's logits, and counts its full and partial forwards.

A denoiser whose logits at column i come from the hidden state at i-1 (Dream)
declares ``lookbehind = 1``: segments then start that many columns before the
block (recomputed, not cached), so the block's first column keeps its logits.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from .canvas import Canvas
from .denoiser import CachingDenoiser, Denoiser


class Forward:
    """Base policy: subclasses return ``[N, hi - lo, V]`` logits for block ``[lo, hi)``."""

    def __init__(self, denoiser: Denoiser, canvas: Canvas) -> None:
        self.denoiser = denoiser
        self.canvas = canvas
        self.full = 0
        self.partial = 0

    def block_logits(self, x: Tensor, lo: int, hi: int, call: int) -> Tensor:
        raise NotImplementedError


class NoCache(Forward):
    def block_logits(self, x: Tensor, lo: int, hi: int, call: int) -> Tensor:
        self.full += 1
        return self.denoiser(x, self.canvas.attention_mask, self.canvas.positions, window=(lo, hi))


class _Cached(Forward):
    """Shared logic of ``prefix`` and ``dual``: a full forward at block start, segments after it.

    ``refresh``: also run a full forward every ``refresh`` calls within a block
    (None: only at block start). ``refresh = 1`` is exact (every call is a full
    forward) and exists for testing and for measuring the cache's error.
    """

    refresh: int | None = None

    def __init__(self, denoiser: Denoiser, canvas: Canvas) -> None:
        super().__init__(denoiser, canvas)
        assert isinstance(denoiser, CachingDenoiser)
        self.caching = denoiser
        n, total = canvas.ids.shape
        self.cache: Any = denoiser.new_cache(n, total)

    def block_logits(self, x: Tensor, lo: int, hi: int, call: int) -> Tensor:
        c = self.canvas
        if call == 0 or (self.refresh is not None and call % self.refresh == 0):
            self.full += 1
            return self.caching.forward_cached(x, c.positions, c.key_mask, self.cache, 0, (lo, hi))
        start = max(lo - self.caching.lookbehind, 0)  # first query column of the segment
        end = self.segment_end(hi, x.shape[1])
        self.partial += 1
        return self.caching.forward_cached(x[:, start:end], c.positions[:, start:end], c.key_mask, self.cache, start,
                                           (lo, hi))

    def segment_end(self, hi: int, total: int) -> int:
        raise NotImplementedError


class Prefix(_Cached):
    """Fast-dLLM prefix cache: later calls run ``x[:, lo:]`` against the cached keys/values before the block."""

    def segment_end(self, hi: int, total: int) -> int:
        return total


class Dual(_Cached):
    """Fast-dLLM dual cache: later calls run only the block against cached prefix and suffix keys/values."""

    def segment_end(self, hi: int, total: int) -> int:
        return hi


POLICIES: dict[str, type[Forward]] = {"none": NoCache, "prefix": Prefix, "dual": Dual}


def make_forward(mode: str, denoiser: Denoiser, canvas: Canvas) -> Forward:
    """The policy for ``mode``; raises ``ValueError`` if the denoiser cannot cache."""
    if mode not in POLICIES:
        raise ValueError(f"cache must be one of {sorted(POLICIES)}, got {mode!r}")
    if mode != "none" and not denoiser.can_cache():
        inner = getattr(denoiser, "inner", denoiser)
        raise ValueError(
            f"cache={mode!r} needs a denoiser with a key/value cache (the native transformer adapter); "
            f"{type(inner).__name__} supports only cache='none'"
        )
    return POLICIES[mode](denoiser, canvas)
