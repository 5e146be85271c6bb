"""The compiled runner: the native model with static shapes, compiled once per shape and replayed.

An eager transformer call at batch 1 is bound by Python and kernel launches,
not by the GPU: it costs the same for 32 tokens as for 384, so a cached block
call saves nothing. Here every call of a generation is one of a few *kinds*
of fixed shape, each compiled once (``torch.compile``, fusing the small
kernels) and, on CUDA, captured as a CUDA graph and replayed:

- ``full``: the uncached call over the whole canvas;
- ``cached``: queries written into the key/value buffers and attending to all
  of them (the block-start call runs every column, a segment the block alone
  or, for ``prefix``, the columns from the block on).

Shapes come from buckets, so graphs are reused across generations and across
lm-eval batches: the batch is padded up to 1, 2, 4, ..., 64 rows (then
multiples of 64) with dummy rows; the canvas is padded on the left up to a
multiple of ``length_multiple`` columns with padding columns (hidden by the key
mask); prefix segments, which shrink block by block, are padded up to a power
of two with dummy queries that write their keys/values into one scratch column
after the canvas, which no query attends to. The key/value buffers of a
(batch, length) bucket belong to the runner and are reused by every generation
of that bucket, because a captured graph reads and writes fixed addresses.

The wrapped :class:`~unmask.models.native.NativeDenoiser` stays the
reference: the same forward function runs in both, so the compiled path gives
the same tokens up to the compiler's floating-point reassociation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..denoiser import CachingDenoiser, Window
from .forward import KVBuffers, decoder_forward
from .native import NativeDenoiser, align, logit_columns

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


def batch_bucket(n: int) -> int:
    """The padded batch size for ``n`` rows: the next of 1, 2, 4, ..., 64, then a multiple of 64."""
    return next((b for b in BATCH_BUCKETS if b >= n), -(-n // 64) * 64)


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def query_bucket(q: int) -> int:
    """The padded length of a prefix segment: the next power of two (at least 8)."""
    return max(8, 1 << (q - 1).bit_length())


def _raise_recompile_limit(limit: int = 512) -> None:
    """Every shape is its own compiled graph: let dynamo keep more than its default 8 per function."""
    cfg = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(cfg, name) and getattr(cfg, name) < limit:
            setattr(cfg, name, limit)


@dataclass
class _Shape:
    """A shape a call was padded to, and the map from canvas columns to runner columns."""

    rows: int  # real rows
    batch: int  # padded rows
    length: int  # real canvas columns
    padded_length: int  # canvas columns after left padding
    scratch: int  # scratch key/value columns after the canvas (cached calls)

    @property
    def offset(self) -> int:
        return self.padded_length - self.length


class StaticCall:
    """One kind of call at one shape: static input tensors, compiled, and on CUDA a captured graph.

    ``graphs`` False runs the compiled function on fresh inputs each time; True
    captures a CUDA graph on the first call and replays it (inputs copied into
    the static tensors, the output read from a static tensor); ``"emulate"``
    does the same copies without a graph (CPU tests of the static-buffer logic).
    """

    def __init__(self, fn: Callable[..., Tensor], graphs: bool | str, pool: Any) -> None:
        self.fn, self.graphs, self.pool = fn, graphs, pool
        self.inputs: tuple[Tensor, ...] | None = None
        self.output: Tensor | None = None
        self.graph: Any = None
        self.warmup_seconds = 0.0

    def __call__(self, *inputs: Tensor) -> Tensor:
        if not self.graphs:
            if self.output is None:  # first call compiles: time it
                t0 = time.perf_counter()
                self.output = self.fn(*inputs)
                self.warmup_seconds = time.perf_counter() - t0
                return self.output
            return self.fn(*inputs)
        if self.inputs is None:
            t0 = time.perf_counter()
            self.inputs = tuple(t.clone() for t in inputs)
            self._capture()
            self.warmup_seconds = time.perf_counter() - t0
        else:
            for static, new in zip(self.inputs, inputs, strict=True):
                static.copy_(new)
        if self.graph is not None:
            self.graph.replay()
        else:  # emulation: the same static tensors, no graph
            assert self.output is not None
            self.output.copy_(self.fn(*self.inputs))
        assert self.output is not None
        return self.output

    def _capture(self) -> None:
        assert self.inputs is not None
        if self.graphs == "emulate":
            self.output = self.fn(*self.inputs)
            return
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # compile and warm up outside the capture (the writes are idempotent)
            for _ in range(2):
                self.fn(*self.inputs)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=self.pool):
            self.output = self.fn(*self.inputs)


class CompiledDenoiser(CachingDenoiser):
    """:class:`NativeDenoiser`'s contract with bucketed static shapes, compiled and (on CUDA) graph-replayed."""

    def __init__(self, native: NativeDenoiser, *, length_multiple: int = 64, graphs: bool | str | None = None,
                 backend: str = "inductor") -> None:
        self.native = native
        self.spec = native.spec
        self.lookbehind = native.lookbehind
        self.add_bos = native.add_bos
        self.length_multiple = length_multiple
        self.graphs = native.device.type == "cuda" if graphs is None else graphs
        _raise_recompile_limit()
        model = native.model
        self._fn = torch.compile(
            lambda ids, pos, mask, index, keys, values, cols: decoder_forward(model, ids, pos, mask, index, keys, values, cols),
            backend=backend, dynamic=True, fullgraph=True,  # one graph per kind: buckets only re-capture
        )
        self._pool = torch.cuda.graph_pool_handle() if self.graphs is True else None
        self.calls: dict[tuple, StaticCall] = {}
        self.buffers: dict[tuple[int, int], KVBuffers] = {}

    @property
    def device(self) -> torch.device:
        return self.native.device

    @property
    def warmup_seconds(self) -> dict[tuple, float]:
        """Seconds each shape took to compile (and capture) on its first call."""
        return {key: call.warmup_seconds for key, call in self.calls.items()}

    def _static(self, key: tuple, kv: KVBuffers | None) -> StaticCall:
        """The call of one kind and shape; a cached kind's buffers are fixed by its shape, so bound here."""
        if key not in self.calls:
            fn = self._fn
            if kv is None:
                call = lambda ids, pos, mask, index: fn(ids, pos, mask, index, None, None, None)  # noqa: E731
            else:
                call = lambda ids, pos, mask, index, cols: fn(ids, pos, mask, index, kv.keys, kv.values, cols)  # noqa: E731
            self.calls[key] = StaticCall(call, self.graphs, self._pool)
        return self.calls[key]

    def _shape(self, n: int, length: int, scratch: int) -> _Shape:
        return _Shape(n, batch_bucket(n), length, round_up(length, self.length_multiple), scratch)

    def _pad(self, shape: _Shape, ids: Tensor, pos: Tensor, width: int, at: int) -> tuple[Tensor, Tensor]:
        """``[N, q]`` ids and positions placed at columns ``[at, at + q)`` of ``[batch, width]``; the rest dummies."""
        n, q = ids.shape
        out_ids = ids.new_full((shape.batch, width), self.spec.pad_id)
        out_pos = pos.new_zeros((shape.batch, width))
        out_ids[:n, at : at + q], out_pos[:n, at : at + q] = ids, pos
        return out_ids, out_pos

    def _key_mask(self, shape: _Shape, key_mask: Tensor | None, device: torch.device) -> Tensor:
        """``[batch, padded_length + scratch]`` bool: real keys; dummy rows see every canvas key."""
        mask = torch.zeros((shape.batch, shape.padded_length + shape.scratch), dtype=torch.bool, device=device)
        mask[:, shape.offset : shape.padded_length] = True
        if key_mask is not None:
            mask[: shape.rows, shape.offset : shape.padded_length] = key_mask
        mask[shape.rows :, : shape.padded_length] = True
        return mask

    def __call__(
        self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, window: Window | None = None
    ) -> Tensor:
        n, length = input_ids.shape
        shape = self._shape(n, length, 0)
        a, b = logit_columns(0, length, window, self.lookbehind)
        ids, pos = self._pad(shape, input_ids, position_ids, shape.padded_length, shape.offset)  # padding on the left
        index = torch.arange(a + shape.offset, b + shape.offset, device=ids.device)
        raw = self._static(("full", shape.batch, shape.padded_length, b - a), None)(
            ids, pos, self._key_mask(shape, attention_mask, ids.device), index)
        width = length if window is None else window[1] - window[0]
        return align(raw[:n].clone(), position_ids, a, b, width, self.lookbehind)

    def new_cache(self, batch: int, length: int) -> tuple[_Shape, KVBuffers]:
        shape = self._shape(batch, length, 1)  # one scratch column for the dummy queries of padded segments
        key = (shape.batch, shape.padded_length + shape.scratch)
        if key not in self.buffers:
            self.buffers[key] = KVBuffers.allocate(self.native.model, *key)
        return shape, self.buffers[key]

    def forward_cached(
        self, input_ids: Tensor, position_ids: Tensor, key_mask: Tensor | None, cache: tuple[_Shape, KVBuffers],
        start: int, window: Window,
    ) -> Tensor:
        shape, kv = cache
        n, q = input_ids.shape
        if n != shape.rows or start + q > shape.length:
            raise ValueError(f"queries [{start}, {start + q}) of {n} rows do not fit a cache made for "
                             f"{shape.rows} rows x {shape.length} columns")
        a, b = logit_columns(start, q, window, self.lookbehind)
        device = input_ids.device
        if start == 0 and q == shape.length:  # the block-start call: every column, the padding ones too
            qb, at = shape.padded_length, shape.offset
            cols = torch.arange(qb, device=device)
        else:  # a segment; a suffix one (prefix cache) is padded with dummy queries to a power of two
            qb, at = (q if start + q < shape.length else min(query_bucket(q), shape.padded_length)), 0
            cols = torch.full((qb,), shape.padded_length, dtype=torch.long, device=device)  # dummies: scratch column
            cols[:q] = torch.arange(start + shape.offset, start + q + shape.offset, device=device)
        ids, pos = self._pad(shape, input_ids, position_ids, qb, at)
        index = torch.arange(a + at, b + at, device=device)
        mask = self._key_mask(shape, key_mask, ids.device)
        raw = self._static(("cached", shape.batch, shape.padded_length, qb, b - a), kv)(ids, pos, mask, index, cols)
        return align(raw[:n].clone(), position_ids, a, b, window[1] - window[0], self.lookbehind)
