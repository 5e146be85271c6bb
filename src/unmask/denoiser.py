"""The denoiser contract: what the generation loop needs from a model, and nothing else.

A denoiser maps a canvas of token ids (some of them the mask id) to logits
*aligned to positions*: ``logits[n, i]`` is the model's distribution for the
token at canvas column ``i``. Model quirks (Dream's one-position logit shift,
token ids, chat templates, the key/value layout) live in the classes that
implement this contract; the loop never sees them.

- :class:`Denoiser`: full-canvas calls; ``window=(lo, hi)`` asks for the
  logits of columns ``lo..hi-1`` only (the loop needs one block's, and the LM
  head over the whole canvas would cost more than the rest of a cached call).
- :meth:`Denoiser.logits_at`: the engine's full call, over rows that may
  want different columns (rows of different requests in one call).
- :class:`CachingDenoiser`: also runs any run of columns of each row against
  a key/value *arena* it allocated itself (:meth:`~CachingDenoiser.new_arena`):
  row slots of a fixed number of columns; the queries' keys/values are written
  at their (slot, column) cells and every query attends to its row's slot, so
  the cache policies (:mod:`unmask.cache`) only choose which columns to run.

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
Want = Window | Tensor  # a window shared by every row, or per-row columns [N, W] (long)


@dataclass(frozen=True)
class ArenaIO:
    """Where a call's queries write in a key/value arena and what they attend to."""

    slots: Tensor  # [N] long: each row's slot
    cols: Tensor  # [N, q] long: the arena column each query writes (-1: a dummy query, written to a scratch column)
    keys: int  # each row attends to columns [0, keys) of its slot


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
    attention_block: int | None = None  # block-diffusion models: their block size (causal across blocks); None: full
    # "mask": uncommitted positions hold the mask id (absorbing); "uniform": they hold fresh random tokens, which
    # the engine draws before each call (CanvasDenoiser; DESIGN.md, "Uniform-state corruption")
    corruption: str = "mask"

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

    def logits_at(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, want: Want,
                  padded: bool = True) -> Tensor:
        """Logits ``[N, W, V]`` of the columns ``want``: a window ``(lo, hi)`` shared by every row, or per-row
        columns ``[N, W]``. ``padded=False`` promises that ``attention_mask`` is all True (so an adapter needs
        no host read to know it). The default runs the whole canvas and gathers."""
        if isinstance(want, tuple):
            return self(input_ids, attention_mask, position_ids, window=want)
        return gather_columns(self(input_ids, attention_mask, position_ids), want)

    def can_cache(self) -> bool:
        """Whether the cache policies ``prefix`` and ``dual`` can run on this denoiser."""
        return isinstance(self, CachingDenoiser)

    def compiled(self) -> Denoiser:
        """The same model with every call a replayed graph of static shapes (``GenerationConfig(compile=True)``)."""
        raise ValueError(f"compile=True needs a denoiser with a compiled path (the native adapter); "
                         f"{type(self).__name__} has none: use compile=False")


class CachingDenoiser(Denoiser):
    """A denoiser that can also run columns of each row against a key/value arena."""

    @abstractmethod
    def new_arena(self, slots: int, length: int) -> Any:
        """An opaque key/value arena of ``slots`` rows of ``length`` canvas columns each (plus a scratch column)."""

    def arena_slot_bytes(self, length: int) -> int:
        """Bytes one slot of ``length`` columns takes (0 when unknown): sizes arenas from a memory budget."""
        return 0

    @abstractmethod
    def forward_arena(
        self, input_ids: Tensor, position_ids: Tensor, key_mask: Tensor | None, arena: Any, io: ArenaIO, want: Want
    ) -> Tensor:
        """Run the queries ``input_ids, position_ids [N, q]`` against ``arena``.

        Each query's keys/values are written at ``(io.slots[n], io.cols[n, j])``,
        then every query attends to columns ``[0, io.keys)`` of its row's slot
        where ``key_mask [N, io.keys]`` is True (None: all). Returns the aligned
        logits of the query indices ``want`` (a shared ``(a, b)``, or ``[N, W]``):
        ``[N, W, V]``. A denoiser with ``lookbehind`` needs the query before each
        wanted one (unless that one is at position 0).
        """


@dataclass(frozen=True)
class CanvasIO:
    """Which rows of a :class:`CanvasDenoiser` call start a canvas, and what their encoder reads first."""

    slots: list[int]  # each row's arena slot
    prompts: list[list[int] | None]  # a row whose first canvas starts now: its prompt (the slot is taken afresh)
    finished: Tensor | None  # [N, C]: each row's previous canvas, final now (read for rows in ``extend``)
    extend: list[bool]  # rows whose previous canvas is encoded before this call (their next canvas starts)

    @property
    def starts(self) -> list[bool]:
        """Rows whose canvas starts at this call (self-conditioning from zeros)."""
        return [p is not None or e for p, e in zip(self.prompts, self.extend, strict=True)]


class CanvasDenoiser(Denoiser):
    """A uniform-state, encoder-decoder, block-autoregressive denoiser (DiffusionGemma).

    Generation runs one canvas of ``canvas_length`` tokens at a time after
    everything final (the prompt, finished canvases), which an encoder has
    read once into the row's arena slot; a decoder call denoises the canvas
    given that cache and the row's self-conditioning state (also in the slot).
    The engine fills uncommitted positions with fresh uniform tokens before
    each call and hands the decision's processed logits back with
    :meth:`condition`.
    """

    corruption = "uniform"
    canvas_length: int

    def __call__(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor,
                 window: Window | None = None) -> Tensor:
        raise ValueError(f"{type(self).__name__} is an encoder-decoder uniform-state model: it runs through the "
                         "engine (unmask.generate), not as a full-canvas denoiser")

    def can_cache(self) -> bool:
        return True

    def arena_slot_bytes(self, length: int) -> int:
        return 0

    @abstractmethod
    def new_arena(self, slots: int, length: int) -> Any:
        """An opaque store of ``slots`` rows: each row's encoder cache and self-conditioning state."""

    @abstractmethod
    def forward_canvas(self, arena: Any, io: CanvasIO, canvas: Tensor) -> Tensor:
        """Encode what ``io`` says is final now, then one decoder call on ``canvas [N, C]``: logits ``[N, C, V]``."""

    @abstractmethod
    def condition(self, arena: Any, slots: list[int], processed: Tensor) -> None:
        """Keep the next self-conditioning state of ``slots`` from this call's processed logits ``[N, C, V]``."""


def gather_columns(logits: Tensor, columns: Tensor) -> Tensor:
    """``logits [N, T, V]`` at per-row columns ``[N, W]``: ``[N, W, V]``."""
    return logits.gather(1, columns.unsqueeze(-1).expand(-1, -1, logits.shape[-1]))


def select_window(logits: Tensor, window: Window | None) -> Tensor:
    """The columns ``window`` of full-canvas logits ``[N, T, V]`` (all of them for None)."""
    return logits if window is None else logits[:, window[0] : window[1]]


def canvas_positions(attention_mask: Tensor) -> Tensor:
    """Position ids ``[N, T]`` that ignore left padding: 0 at each row's first real token."""
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)
