"""Cache policies: which columns of a row each call runs, and against what.

``none`` runs the whole canvas every call. ``prefix`` and ``dual`` (Fast-dLLM,
Wu et al. 2025) run the whole canvas at the start of each block, writing
every column's keys/values into the row's slot of the engine's key/value
arena, and then only a segment: ``prefix`` the columns from the block to the
end, ``dual`` the block alone. A segment's keys/values are written at its own
columns and its queries attend to the row's whole slot, so the keys before
(and, for ``dual``, after) the block are those of the block's start.

A denoiser whose logits at column i come from the hidden state at i-1 (Dream)
declares ``lookbehind = 1``: segments then start that many columns before the
block (recomputed, not cached), so the block's first column keeps its logits.

A policy is a pure function of the call: the engine asks :func:`plan_call`
for each row's *call kind* (``full``: no cache; ``start``: the whole canvas
into the arena; ``segment``: some columns against it) and query columns, and
runs one denoiser call per kind over every row that needs it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .denoiser import Denoiser
from .names import CACHE_MODES

KINDS = ("full", "start", "segment")
REFRESH: int | None = None  # also rerun the whole canvas every REFRESH calls of a block (1 = exact; for tests)


@dataclass(frozen=True)
class CallPlan:
    """One row's part of a call: its kind and the canvas columns ``[start, end)`` it runs as queries."""

    kind: str
    start: int
    end: int


def plan_call(mode: str, call: int, lo: int, hi: int, total: int, lookbehind: int) -> CallPlan:
    """The call ``call`` of the block ``[lo, hi)`` of a ``total``-column canvas under cache ``mode``."""
    if mode == "none":
        return CallPlan("full", 0, total)
    if call == 0 or (REFRESH is not None and call % REFRESH == 0):
        return CallPlan("start", 0, total)
    return CallPlan("segment", max(lo - lookbehind, 0), total if mode == "prefix" else hi)


def check_cache(mode: str, denoiser: Denoiser) -> None:
    """Raise ``ValueError`` for an unknown mode, or a cached mode on a denoiser without a key/value arena."""
    if mode not in CACHE_MODES:
        raise ValueError(f"cache must be one of {list(CACHE_MODES)}, got {mode!r}")
    if mode != "none" and not denoiser.can_cache():
        raise ValueError(
            f"cache={mode!r} needs a denoiser with a key/value cache (the native transformer adapter); "
            f"{type(denoiser).__name__} supports only cache='none'"
        )
