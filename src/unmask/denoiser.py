"""The denoiser contract: what the generation loop needs from a model, and nothing else.

A denoiser maps a canvas of token ids (some of them the mask id) to logits
*aligned to positions*: ``logits[n, i]`` is the model's distribution for the
token at canvas column ``i``. Model quirks (Dream's one-position logit shift,
token ids, chat templates, the key/value layout) live in the classes that
implement this contract; the loop never sees them.

- :class:`Denoiser`: full-canvas calls; ``window=(lo, hi)`` asks for the
  logits of columns ``lo..hi-1`` only (the loop needs one block's, and the LM
  head over the whole canvas would cost more than the rest of a cached call).
- :class:`CachingDenoiser`: also runs a *segment* of the canvas against a
  key/value cache it allocated itself (:meth:`~CachingDenoiser.new_cache`):
  the queries' keys/values are written into the cache at their own columns and
  every query attends to the whole cache, so the cache policies
  (:mod:`unmask.cache`) only choose which columns to run.

Logits may contain ``-inf`` (probability zero) but never NaN or ``+inf``; the
loop checks. The returned tensor belongs to the caller, which may modify it in
place (the loop sets the mask id's logit to ``-inf``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

Window = tuple[int, int]  # canvas columns [lo, hi) whose logits are wanted


@dataclass(frozen=True)
class TokenSpec:
    """The special token ids and limits of a denoiser's vocabulary."""

    mask_id: int
    eos_ids: tuple[int, ...]
    pad_id: int
    vocab_size: int
    max_length: int | None = None  # longest canvas (prompt + generation); None = unbounded

    def __post_init__(self) -> None:
        for name in ("mask_id", "pad_id", "vocab_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{name} must be an int, got {value!r}")
        if not 0 <= self.mask_id < self.vocab_size:
            raise ValueError(f"mask_id must lie in [0, vocab_size={self.vocab_size}), got {self.mask_id}")
        if not isinstance(self.eos_ids, tuple) or not self.eos_ids:
            raise ValueError(f"eos_ids must be a non-empty tuple of token ids, got {self.eos_ids!r}")
        bad = [e for e in self.eos_ids if not isinstance(e, int) or isinstance(e, bool) or not 0 <= e < self.vocab_size]
        if bad:
            raise ValueError(f"eos_ids must be ints in [0, vocab_size={self.vocab_size}), got {bad[0]!r}")
        if self.mask_id in self.eos_ids:
            raise ValueError(f"mask_id {self.mask_id} must not be one of eos_ids {self.eos_ids}")
        if self.max_length is not None and (not isinstance(self.max_length, int) or self.max_length < 1):
            raise ValueError(f"max_length must be a positive int or None, got {self.max_length!r}")


class Denoiser(ABC):
    """Anything the loop can call: full-canvas, bidirectional, aligned logits.

    Subclasses set ``spec`` and implement :meth:`__call__`; the other members
    have defaults that fit a plain function of the canvas on the CPU.
    """

    spec: TokenSpec
    lookbehind: int = 0  # leading query columns a cached segment needs (Dream: 1, its logits are shifted)
    add_bos: bool | None = None  # prompt rule for encode_prompts: one BOS (True), none (False), the tokenizer's (None)

    @property
    def device(self) -> torch.device:
        """Where input ids must live."""
        return torch.device("cpu")

    @abstractmethod
    def __call__(
        self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, window: Window | None = None
    ) -> Tensor:
        """Logits ``[N, T, V]`` (``V >= spec.vocab_size``), or ``[N, hi - lo, V]`` for ``window=(lo, hi)``.

        ``input_ids [N, T]`` long; ``attention_mask [N, T]`` bool, False on left
        padding; ``position_ids [N, T]`` long, 0 at each row's first real token.
        """

    def can_cache(self) -> bool:
        """Whether the cache policies ``prefix`` and ``dual`` can run on this denoiser."""
        return isinstance(self, CachingDenoiser)

    def compiled(self) -> Denoiser:
        """The same model with every call a replayed graph of static shapes (``GenerationConfig(compile=True)``)."""
        raise ValueError(f"compile=True needs a denoiser with a compiled path (the native adapter); "
                         f"{type(self).__name__} has none: use compile=False")


class CachingDenoiser(Denoiser):
    """A denoiser that can also run a segment of the canvas against a key/value cache."""

    @abstractmethod
    def new_cache(self, batch: int, length: int) -> Any:
        """An opaque key/value cache for ``batch`` rows of a ``length``-column canvas."""

    @abstractmethod
    def forward_cached(
        self, input_ids: Tensor, position_ids: Tensor, key_mask: Tensor | None, cache: Any, start: int, window: Window
    ) -> Tensor:
        """Run canvas columns ``[start, start + q)`` (``input_ids, position_ids [N, q]``) against ``cache``.

        The queries' keys/values are written into ``cache`` at their columns,
        then every query attends to all columns of the cache whose
        ``key_mask [N, length]`` is True (None: all). Returns the logits of the
        canvas columns ``window=(lo, hi)``, which must lie among the queries
        (after the first ``lookbehind``): ``[N, hi - lo, V]``.
        """


def select_window(logits: Tensor, window: Window | None) -> Tensor:
    """The columns ``window`` of full-canvas logits ``[N, T, V]`` (all of them for None)."""
    return logits if window is None else logits[:, window[0] : window[1]]


def canvas_positions(attention_mask: Tensor) -> Tensor:
    """Position ids ``[N, T]`` that ignore left padding: 0 at each row's first real token."""
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)
