"""Cache policies: how each call of the loop obtains the current block's logits.

``none`` runs the whole canvas every call. ``prefix`` and ``dual`` (Fast-dLLM
semantics) run one full forward at the start of each block and then only a
segment over cached keys/values; they need a :class:`CachingDenoiser`.
Every policy counts its full and partial forwards.
"""

from __future__ import annotations

from torch import Tensor

from .denoiser import CachingDenoiser, Denoiser


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


POLICIES: dict[str, type[Forward]] = {"none": NoCache}


def make_forward(mode: str, denoiser: Denoiser, attention_mask: Tensor, position_ids: Tensor) -> Forward:
    """The policy for ``mode``; raises ``ValueError`` if the denoiser cannot cache."""
    if mode not in POLICIES:
        raise ValueError(f"cache must be one of {sorted(POLICIES)}, got {mode!r}")
    if mode != "none" and not isinstance(denoiser, CachingDenoiser):
        raise ValueError(
            f"cache={mode!r} needs a denoiser with forward_kv (a transformer adapter); "
            f"{type(denoiser).__name__} supports only cache='none'"
        )
    return POLICIES[mode](denoiser, attention_mask, position_ids)
