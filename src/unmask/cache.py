"""Cache policies: how each call of the loop obtains the current block's logits.

``none`` runs the whole canvas every call. ``prefix`` and ``dual`` (Fast-dLLM,
Wu et al. 2025) run one full forward at the start of each block and then only a
segment over cached keys/values; they need a :class:`CachingDenoiser`.
Every policy counts its full and partial forwards.

Key/value state is what ``forward_kv`` returns: a tuple over layers of
``(K, V)`` tensors ``[N, H, T, D]`` along the canvas (after rotary embedding,
so a key keeps its position wherever it is stored). Attention is
bidirectional, so the order of cached keys does not matter: ``dual`` keeps
``[prefix ; suffix]`` and the key mask follows the same order.

A denoiser whose logits at position i come from the hidden state at i-1
(Dream) sets ``lookbehind = 1``: segments then start that many positions
before the block, the extra query tokens are recomputed rather than cached,
and their logits are dropped.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .denoiser import CachingDenoiser, Denoiser

KV = tuple[tuple[Tensor, Tensor], ...]


def kv_slice(kv: KV, lo: int, hi: int) -> KV:
    """Keys/values of canvas columns ``[lo, hi)`` (views, no copy)."""
    return tuple((k[:, :, lo:hi], v[:, :, lo:hi]) for k, v in kv)


def kv_cat(*parts: KV) -> KV:
    """Join key/value states along the sequence (one copy)."""
    return tuple(
        (torch.cat([p[i][0] for p in parts], 2), torch.cat([p[i][1] for p in parts], 2)) for i in range(len(parts[0]))
    )


class Forward:
    """Base policy: subclasses return ``[N, hi - lo, V]`` logits for block ``[lo, hi)``."""

    def __init__(self, denoiser: Denoiser, attention_mask: Tensor, position_ids: Tensor) -> None:
        self.denoiser = denoiser
        self.attention_mask = attention_mask  # [N, T] bool, False on left padding
        self.position_ids = position_ids  # [N, T] long
        self.full = 0
        self.partial = 0

    def full_logits(self, x: Tensor) -> Tensor:
        self.full += 1
        return self.denoiser(x, self.attention_mask, self.position_ids)

    def block_logits(self, x: Tensor, lo: int, hi: int, call: int) -> Tensor:
        raise NotImplementedError


class NoCache(Forward):
    def block_logits(self, x: Tensor, lo: int, hi: int, call: int) -> Tensor:
        return self.full_logits(x)[:, lo:hi]


class _Cached(Forward):
    """Shared logic of ``prefix`` and ``dual``: a full forward at block start, segments after it.

    ``refresh``: also run a full forward every ``refresh`` calls within a block
    (None: only at block start). ``refresh = 1`` is exact (every call is a full
    forward) and exists for testing and for measuring the cache's error.
    """

    refresh: int | None = None

    def __init__(self, denoiser: Denoiser, attention_mask: Tensor, position_ids: Tensor) -> None:
        super().__init__(denoiser, attention_mask, position_ids)
        self.caching: CachingDenoiser = denoiser  # type: ignore[assignment]
        self.lookbehind = int(getattr(denoiser, "lookbehind", 0))
        self.past: KV | None = None
        self.key_mask: Tensor | None = None  # [N, k_past + q] for the segment calls of this block

    def block_logits(self, x: Tensor, lo: int, hi: int, call: int) -> Tensor:
        start = max(lo - self.lookbehind, 0)  # first query column of a segment
        if call == 0 or (self.refresh is not None and call % self.refresh == 0):
            self.full += 1
            logits, kv = self.caching.forward_kv(x, self.position_ids, self.attention_mask, None)  # [N, T, V]
            self.past, self.key_mask = self.keep(kv, start, hi)
            return logits[:, lo:hi]
        end = self.segment_end(hi, x.shape[1])
        self.partial += 1
        logits, _ = self.caching.forward_kv(x[:, start:end], self.position_ids[:, start:end], self.key_mask, self.past)
        return logits[:, lo - start : hi - start]  # drop the lookbehind queries

    def segment_end(self, hi: int, total: int) -> int:
        raise NotImplementedError

    def keep(self, kv: KV, start: int, hi: int) -> tuple[KV, Tensor]:
        """The cached keys/values for this block and the key mask ``[N, k_past + q]`` of its segments."""
        raise NotImplementedError


class Prefix(_Cached):
    """Fast-dLLM prefix cache: later calls run ``x[:, lo:]`` over the cached keys/values before the block."""

    def segment_end(self, hi: int, total: int) -> int:
        return total

    def keep(self, kv: KV, start: int, hi: int) -> tuple[KV, Tensor]:
        # keys: [prefix (cached) ; block and suffix (queries)] = the canvas order
        return kv_slice(kv, 0, start), self.attention_mask


class Dual(_Cached):
    """Fast-dLLM dual cache: later calls run only the block over cached prefix and suffix keys/values."""

    def segment_end(self, hi: int, total: int) -> int:
        return hi

    def keep(self, kv: KV, start: int, hi: int) -> tuple[KV, Tensor]:
        total = self.attention_mask.shape[1]
        past = kv_cat(kv_slice(kv, 0, start), kv_slice(kv, hi, total))
        am = self.attention_mask
        return past, torch.cat([am[:, :start], am[:, hi:], am[:, start:hi]], 1)  # [prefix ; suffix ; block]


POLICIES: dict[str, type[Forward]] = {"none": NoCache, "prefix": Prefix, "dual": Dual}


def can_cache(denoiser: Any) -> bool:
    """True if ``denoiser`` (and every denoiser it wraps, e.g. CFG's) implements ``forward_kv``."""
    while denoiser is not None:
        if not isinstance(denoiser, CachingDenoiser):
            return False
        denoiser = getattr(denoiser, "inner", None)
    return True


def make_forward(mode: str, denoiser: Denoiser, attention_mask: Tensor, position_ids: Tensor) -> Forward:
    """The policy for ``mode``; raises ``ValueError`` if the denoiser cannot cache."""
    if mode not in POLICIES:
        raise ValueError(f"cache must be one of {sorted(POLICIES)}, got {mode!r}")
    if mode != "none" and not can_cache(denoiser):
        inner = getattr(denoiser, "inner", denoiser)
        raise ValueError(
            f"cache={mode!r} needs a denoiser with forward_kv (a transformer adapter); "
            f"{type(inner).__name__} supports only cache='none'"
        )
    return POLICIES[mode](denoiser, attention_mask, position_ids)
