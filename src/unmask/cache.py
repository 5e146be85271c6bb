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

``committed`` is for block-diffusion models (block-causal attention): a
finished model block's keys/values depend on nothing after it, so they are
written once and never recomputed, exactly as an autoregressive KV cache.
Each call runs, per request, the columns from the *committed frontier* (the
first column whose keys are not final in every row) to the end of each row's
current model block; a block that has just been finished is written by the
first call of the next block, which runs it as extra queries (the prompt's
whole blocks likewise by the first call), so the commit costs no call of its
own (JetLM's SDAR ``generate.py`` and Fast-dLLM v2 spend one more forward per
block on it, ``store_kv`` / ``update_past_key_values``). The frontier then
moves to the earliest current model block. Exact by construction: every
query sees only final keys of earlier blocks and fresh keys of its own.

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


def plan_committed(lo: int, committed: int, starts: list[int], ends: list[int], lookbehind: int) -> CallPlan:
    """A ``committed``-cache call of the block starting at column ``lo``: queries from the committed frontier
    (or the earliest current model block start ``starts``, or the lookbehind column) to the latest current
    model block end ``ends`` (one per row); every query writes its keys/values into the arena."""
    return CallPlan("segment", max(min(committed, min(starts), lo - lookbehind), 0), max(ends))


def check_layout(block_length: int, denoiser: Denoiser) -> None:
    """Raise ``ValueError`` when ``block_length`` does not divide a block-causal model's own block size.

    A generated block must lie within one model block (Fast-dLLM v2 runs
    sub-blocks of 8 inside its blocks of 32): the model attends causally across
    its blocks, so a generated block spanning two would see only half of itself.
    """
    if denoiser.corruption == "uniform":
        canvas = denoiser.canvas_length  # type: ignore[attr-defined]
        if block_length != canvas:
            raise ValueError(f"block_length must equal the model's canvas length {canvas} (a uniform-state "
                             f"model denoises one canvas at a time), got {block_length}")
        return
    block = denoiser.attention_block
    if block is not None and block % block_length:
        allowed = [d for d in range(1, block + 1) if block % d == 0]
        raise ValueError(f"block_length must divide the model's attention block size {block} "
                         f"(one of {allowed}), got {block_length}")


def resolve_cache(mode: str, denoiser: Denoiser) -> str:
    """``auto``: ``committed`` for a block-causal denoiser with a key/value arena, else ``none``; other modes
    as given."""
    if mode != "auto":
        return mode
    if denoiser.corruption == "uniform":  # finished canvases are encoded once: the committed cache
        return "committed"
    return "committed" if denoiser.attention_block is not None and denoiser.can_cache() else "none"


def check_cache(mode: str, denoiser: Denoiser) -> None:
    """Raise ``ValueError`` for an unknown mode, or a cached mode on a denoiser without a key/value arena."""
    if mode not in CACHE_MODES:
        raise ValueError(f"cache must be one of {list(CACHE_MODES)}, got {mode!r}")
    if mode == "auto":
        return
    if denoiser.corruption == "uniform":
        if mode != "committed":
            raise ValueError(f"cache={mode!r}: {type(denoiser).__name__} (uniform-state, encoder-decoder) encodes "
                             "each finished canvas once: use cache='auto' or 'committed'")
        return
    if mode == "committed" and denoiser.attention_block is None:
        raise ValueError("cache='committed' needs a block-causal model (SDAR, Fast-dLLM v2: attention_block set); "
                         f"{type(denoiser).__name__} attends to the whole canvas: use 'none', 'prefix' or 'dual'")
    if mode != "none" and not denoiser.can_cache():
        raise ValueError(
            f"cache={mode!r} needs a denoiser with a key/value cache (the native transformer adapter); "
            f"{type(denoiser).__name__} supports only cache='none'"
        )
