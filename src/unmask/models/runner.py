"""The compiled runner: the native model with static shapes, compiled once per kind and replayed.

An eager transformer call at batch 1 is bound by Python and kernel launches,
not by the GPU: it costs the same for 32 tokens as for 384, so a cached block
call saves nothing. Here every call the engine makes is one of two *kinds*,
each compiled once (``torch.compile`` with dynamic shapes, fusing the small
kernels) and, on CUDA, captured as a CUDA graph per shape bucket and replayed:

- ``full``: the uncached call over whole canvases;
- ``arena``: queries written into the engine's key/value arena and attending
  to their rows' slots (a block start runs every column, a segment the block
  alone or, for ``prefix``, the columns from the block on).

Shapes come from buckets, so graphs are reused across steps, requests and
lm-eval batches: rows are padded up to 1, 2, 4, ..., 64 (then multiples of 64)
with dummy rows, which use a scratch slot of the arena; whole canvases are
padded on the left up to a multiple of ``length_multiple`` columns, segments
on the right up to a power of two, the keys a row attends to up to a multiple
of ``length_multiple``; padding columns are hidden by the key mask and their
queries write a scratch column that no query attends to. The runner keeps
**one** arena (the engine's; its columns rounded up to ``length_multiple``,
plus the scratch slot and column), so memory is fixed once the engine has
made it; a captured graph reads and writes its fixed addresses.

The wrapped :class:`~unmask.models.native.NativeDenoiser` stays the
reference: the same forward function runs in both, so the compiled path gives
the same tokens up to the compiler's floating-point reassociation.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..denoiser import ArenaIO, CachingDenoiser, Want, Window
from .forward import KVBuffers, decoder_forward, slot_bytes
from .native import NativeDenoiser, source_index

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


def batch_bucket(n: int) -> int:
    """The padded batch size for ``n`` rows: the next of 1, 2, 4, ..., 64, then a multiple of 64."""
    return next((b for b in BATCH_BUCKETS if b >= n), -(-n // 64) * 64)


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def query_bucket(q: int) -> int:
    """The padded length of a prefix segment: the next power of two (at least 8)."""
    return max(8, 1 << (q - 1).bit_length())


def keep_compiled_code() -> str:
    """Keep torch's compiled code across runs: inductor's cache in ``~/.cache/unmask/inductor`` (or
    ``$XDG_CACHE_HOME``) unless ``TORCHINDUCTOR_CACHE_DIR`` names another; the second start of the same model
    loads its kernels instead of generating and compiling them. Returns the folder."""
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(base / "unmask" / "inductor")
    import torch._inductor.config as inductor

    inductor.fx_graph_cache = True
    return os.environ["TORCHINDUCTOR_CACHE_DIR"]


def _raise_recompile_limit(limit: int = 512) -> None:
    """Every shape is its own compiled graph: let dynamo keep more than its default 8 per function."""
    cfg = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(cfg, name) and getattr(cfg, name) < limit:
            setattr(cfg, name, limit)


def check_static_experts(model: torch.nn.Module, graphs: bool | str) -> None:
    """Refuse a mixture-of-experts model whose expert kernel reads the routing back to the host (``ValueError``).

    transformers' ``eager`` experts (``Glm4MoeExperts.forward`` and kin) find the experts hit with ``nonzero()``
    and loop over them in Python: a full compiled graph cannot hold that. Its ``grouped_mm`` experts (transformers'
    default) sort the routed tokens on the device and run one grouped matmul, except that under ``torch.compile``
    for weights other than bfloat16 they fall back to a loop over ``offsets.tolist()``: one read-back per matmul,
    which compiles (an opaque op) but cannot be captured in a CUDA graph.
    """
    if not any(hasattr(m, "gate_up_proj") and hasattr(m, "num_experts") for m in model.modules()):
        return
    impl = getattr(model.config, "_experts_implementation", None)
    if impl in (None, "eager"):
        raise ValueError("compile=True cannot run this mixture-of-experts model: transformers' eager expert loop "
                         "selects the experts hit with nonzero() and loops over them in Python, reading the routing "
                         "back to the host in every MoE layer, which a compiled graph cannot hold; run it with "
                         "compile=False")
    dtype = next(model.parameters()).dtype
    if graphs is True and impl == "grouped_mm" and dtype != torch.bfloat16:
        raise ValueError(f"compile=True with CUDA graphs needs bfloat16 weights for this mixture-of-experts model, got "
                         f"{dtype}: compiled, transformers' grouped_mm experts fall back to a loop that reads the "
                         "expert offsets back to the host, which a captured CUDA graph cannot hold; load it with "
                         "dtype bfloat16 or run with compile=False")


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
        check_static_experts(native.model, self.graphs)
        self.cache_dir = keep_compiled_code()
        _raise_recompile_limit()
        model, block = native.model, native.attention_block
        self.attention_block = block
        self._fn = torch.compile(
            lambda ids, pos, mask, index, arena, io: decoder_forward(model, ids, pos, mask, index, arena, io, block),
            backend=backend, dynamic=True, fullgraph=True,  # one graph per kind: buckets only re-capture
        )
        self._pool = torch.cuda.graph_pool_handle() if self.graphs is True else None
        self.shapes: dict[tuple, StaticCall] = {}  # (kind, bucket sizes...) -> its compiled, captured call
        self.arena: _Arena | None = None

    @property
    def device(self) -> torch.device:
        return self.native.device

    @property
    def warmup_seconds(self) -> dict[tuple, float]:
        """Seconds each shape took to compile (and capture) on its first call."""
        return {key: call.warmup_seconds for key, call in self.shapes.items()}

    def _static(self, key: tuple) -> StaticCall:
        if key not in self.shapes:
            fn = self._fn
            if key[0] == "full":
                call = lambda ids, pos, mask, index: fn(ids, pos, mask, index, None, None)  # noqa: E731
            else:
                assert self.arena is not None
                kv = self.arena.kv
                call = lambda ids, pos, mask, index, slots, cols: fn(  # noqa: E731
                    ids, pos, mask, index, kv, ArenaIO(slots, cols, key[3]))
            self.shapes[key] = StaticCall(call, self.graphs, self._pool)
        return self.shapes[key]

    def _rows(self, n: int, *tensors: Tensor, fill: tuple[Any, ...]) -> list[Tensor]:
        """Each ``[n, ...]`` tensor padded with dummy rows up to the batch bucket."""
        b = batch_bucket(n)
        return [torch.cat([t, t.new_full((b - n, *t.shape[1:]), f)]) if b > n else t for t, f in zip(tensors, fill, strict=True)]

    def _index(self, want: Want, pos: Tensor, offset: int) -> Tensor:
        """``[N, W]`` query indices of the raw logits that align to ``want`` after ``offset`` left-padding columns."""
        n = pos.shape[0]
        if isinstance(want, tuple):
            want = torch.arange(want[0], want[1], device=pos.device).expand(n, -1)
        want = want + offset
        return source_index(want, pos, self.lookbehind)

    def __call__(
        self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, window: Window | None = None
    ) -> Tensor:
        return self.logits_at(input_ids, attention_mask, position_ids, (0, input_ids.shape[1]) if window is None else window)

    def logits_at(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, want: Want,
                  padded: bool = True) -> Tensor:
        n, length = input_ids.shape
        off = round_up(length, self.length_multiple) - length  # padding columns on the left
        ids = torch.nn.functional.pad(input_ids, (off, 0), value=self.spec.pad_id)
        pos = torch.nn.functional.pad(position_ids, (off, 0), value=0)
        mask = torch.nn.functional.pad(attention_mask.bool(), (off, 0), value=False)
        index = self._index(want, pos, off)
        ids, pos, mask, index = self._rows(n, ids, pos, mask, index, fill=(self.spec.pad_id, 0, True, 0))
        raw = self._static(("full", ids.shape[0], ids.shape[1], index.shape[1]))(ids, pos, mask, index)
        return raw[:n].clone()

    def new_arena(self, slots: int, length: int) -> _Arena:
        """The runner's one arena: kept while its size fits, else replaced (dropping the graphs bound to it)."""
        cols = round_up(length, self.length_multiple)
        if self.arena is None or self.arena.slots != slots or self.arena.kv.length != cols:
            self.shapes = {k: v for k, v in self.shapes.items() if k[0] == "full"}
            self.arena = None  # the old buffers go before the new ones are allocated
            self.arena = _Arena(KVBuffers.allocate(self.native.model, slots + 1, cols), slots)
        return self.arena

    def arena_slot_bytes(self, length: int) -> int:
        return slot_bytes(self.native.model, round_up(length, self.length_multiple))

    def forward_arena(self, input_ids: Tensor, position_ids: Tensor, key_mask: Tensor | None, arena: _Arena,
                      io: ArenaIO, want: Want) -> Tensor:
        if arena is not self.arena:
            raise ValueError("forward_arena needs the arena this runner made last (new_arena)")
        n, q = input_ids.shape
        # queries padded on the right with dummies: whole canvases to a multiple of length_multiple, shorter
        # segments to a power of two (the engine says where each query writes, so no call kind is inferred)
        qb = round_up(q, self.length_multiple) if q > self.length_multiple else min(query_bucket(q), arena.kv.length)
        pad, off = (0, qb - q), 0
        kb = round_up(io.keys, self.length_multiple)
        scratch = arena.kv.length
        ids = torch.nn.functional.pad(input_ids, pad, value=self.spec.pad_id)
        pos = torch.nn.functional.pad(position_ids, pad, value=0)
        cols = torch.nn.functional.pad(io.cols, pad, value=-1)
        cols = torch.where(cols < 0, scratch, cols)
        km = torch.ones((n, io.keys), dtype=torch.bool, device=ids.device) if key_mask is None else key_mask
        mask = torch.nn.functional.pad(km, (0, kb - io.keys), value=False)
        index = self._index(want, pos, off)
        ids, pos, mask, index, slots, cols = self._rows(
            n, ids, pos, mask, index, io.slots, cols, fill=(self.spec.pad_id, 0, True, 0, arena.slots, scratch))
        call = self._static(("arena", ids.shape[0], qb, kb, index.shape[1]))
        return call(ids, pos, mask, index, slots, cols)[:n].clone()


class _Arena:
    """The runner's arena: the engine's slots plus one scratch slot for dummy rows."""

    def __init__(self, kv: KVBuffers, slots: int) -> None:
        self.kv, self.slots = kv, slots

    @property
    def nbytes(self) -> int:
        return self.kv.nbytes
