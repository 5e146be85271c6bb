"""The Denoiser protocol: what the generation loop needs from a model.

A denoiser maps a canvas of token ids (some of them the mask id) to logits
*aligned to positions*: ``logits[n, i]`` is the model's distribution for the
token at position ``i``. Model quirks (Dream's one-position logit shift, token
ids, chat templates, KV layout) live in adapters that implement this protocol;
the loop never sees them.

Logits may contain ``-inf`` (probability zero) but never NaN or ``+inf``; the
loop checks this on every call and raises ``ValueError`` otherwise. The
returned tensor belongs to the caller, which may modify it in place (the loop
sets the mask id's logit to ``-inf``), so a denoiser must not keep it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor


@dataclass(frozen=True)
class TokenSpec:
    """The special token ids and limits of a denoiser's vocabulary."""

    mask_id: int
    eos_ids: tuple[int, ...]
    pad_id: int
    vocab_size: int
    max_length: int | None = None  # longest canvas (prompt + generation); None = unbounded

    def __post_init__(self) -> None:
        if not 0 <= self.mask_id < self.vocab_size:
            raise ValueError(f"mask_id must lie in [0, vocab_size={self.vocab_size}), got {self.mask_id}")
        if self.mask_id in self.eos_ids:
            raise ValueError(f"mask_id {self.mask_id} must not be one of eos_ids {self.eos_ids}")
        if self.max_length is not None and self.max_length < 1:
            raise ValueError(f"max_length must be a positive int or None, got {self.max_length}")


@runtime_checkable
class Denoiser(Protocol):
    """Anything the loop can call: full-sequence, bidirectional, aligned logits.

    ``input_ids``: ``[N, T]`` long; ``attention_mask``: ``[N, T]`` bool, False on
    left padding; ``position_ids``: ``[N, T]`` long, counting from 0 at the first
    real token of each row. Returns logits ``[N, T, V]`` with ``V >= spec.vocab_size``.
    """

    spec: TokenSpec

    def __call__(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor) -> Tensor: ...


@runtime_checkable
class CachingDenoiser(Denoiser, Protocol):
    """A denoiser that can also run a segment of the canvas over cached keys/values.

    ``forward_kv`` runs the query tokens ``input_ids [N, q]`` at ``position_ids
    [N, q]`` attending (bidirectionally) to ``past`` (keys/values of other
    positions, or None) and to themselves; ``key_mask [N, k_past + q]`` is False
    on keys that must be ignored (padding). Returns the query logits ``[N, q, V]``
    and the key/value state of the query tokens, as an opaque object that
    :func:`unmask.cache` knows how to slice and join.
    """

    def forward_kv(
        self, input_ids: Tensor, position_ids: Tensor, key_mask: Tensor, past: Any | None
    ) -> tuple[Tensor, Any]: ...


def canvas_positions(attention_mask: Tensor) -> Tensor:
    """Position ids ``[N, T]`` that ignore left padding: 0 at each row's first real token."""
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)


def device_of(denoiser: Denoiser) -> torch.device:
    """The device a denoiser's inputs should live on (CPU for plain callables)."""
    dev = getattr(denoiser, "device", None)
    return torch.device(dev) if dev is not None else torch.device("cpu")
