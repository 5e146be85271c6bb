"""The one public generation function: :func:`generate`, a thin wrapper over the engine.

Every planner, cache mode, denoiser and front end (CLI, lm-eval, benchmarks,
server) runs through :class:`unmask.engine.Engine`; :func:`generate` hands it
one request (the prompts of a batch, which move block by block together) and
steps it until done. Model quirks live in denoiser adapters, the choice of
positions in planners (:func:`unmask.decide.decide`), the columns each call
runs in cache policies, and the trace in the recorder; this file only checks
the input and hands it over.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from .cache import check_cache, check_layout, resolve_cache
from .canvas import canvas_length
from .config import GenerationConfig
from .denoiser import Denoiser
from .engine import Engine, EngineConfig, Request
from .engine.request import check_prompts
from .noise import derive_seed
from .output import BlockEvent, CallEvent, GenerationOutput, Listener
from .progress import block_progress
from .text import check_tokenizer

PromptsLike = Sequence[Sequence[int]] | Sequence[Tensor] | Tensor
_COMPILED_ENGINES: weakref.WeakKeyDictionary[Denoiser, Engine] = weakref.WeakKeyDictionary()  # compiled model -> its engine


@torch.no_grad()
def generate(
    denoiser: Denoiser,
    prompts: PromptsLike,
    config: GenerationConfig | Mapping[str, Any] | None = None,
    *,
    seeds: Sequence[int] | None = None,
    tokenizer: Any | None = None,
    progress: bool = False,
    listener: Listener | None = None,
    engine: Engine | None = None,
) -> GenerationOutput:
    """Generate ``config.gen_length`` tokens after each prompt with a masked diffusion denoiser.

    Semi-autoregressive blocks of ``block_length`` (LLaDA, Nie et al. 2025);
    within a block, ``config.planner`` picks the positions each denoiser call
    reveals. Uniform-state denoisers (DiffusionGemma) run one canvas per block
    (``block_length`` = their canvas length): the planner picks the positions
    to *commit*, the others hold fresh random tokens at every call.
    Prompts of different lengths are left-padded. A row that has
    produced an EOS id in a finished block is filled with EOS and stops
    costing calls; the generation ends when every row has. With ``tokenizer``,
    the output carries decoded texts cut at EOS and at the first stop string,
    and a row whose text holds a stop string stops after that block.

    Randomness (sampled tokens, random orders) comes from one seed per row
    (:mod:`unmask.noise`): ``seeds[i]`` for prompt i, so a prompt with the
    same seed gets the same output alone or in any batch; by default row i's
    seed is derived from ``(config.seed, i)``, and from a draw of torch's
    global generator when ``config.seed`` is None. ``listener`` receives an
    event after every call and block, and may drop rows. ``engine`` runs the
    request on an idle engine of your own (its arena and compiled graphs are
    kept between calls); by default an engine sized for this batch is made
    (with ``compile=True``, one kept per denoiser, whose arena of at least 64
    slots is replaced by a bigger one only when a batch needs more).
    """
    config = GenerationConfig.coerce(config)
    if not isinstance(denoiser, Denoiser):
        raise ValueError(f"denoiser must be an unmask.Denoiser (subclass it), got {type(denoiser).__name__}")
    check_tokenizer(tokenizer, config.stop)
    rows = as_rows(prompts)
    check_prompts(rows, config, denoiser.spec)
    check_cache(config.cache, denoiser)
    check_layout(config.block_length, denoiser)
    if config.cache == "auto":  # committed for a block-causal model, none otherwise
        config = dataclasses.replace(config, cache=resolve_cache(config.cache, denoiser))
    row_seed = row_seeds(seeds, len(rows), config.seed)
    with block_progress(config.num_blocks, enabled=progress) as advance:
        request = Request(rows, config, row_seed, _Progress(listener, advance), tokenizer)
        if engine is None:
            engine = _engine_for(denoiser, config, request)
        elif engine.has_work:
            raise ValueError("engine must be idle for generate(): it still has requests in flight")
        engine.add(request)
        return engine.run()[request.id]


def _engine_for(denoiser: Denoiser, config: GenerationConfig, request: Request) -> Engine:
    """A fresh engine whose arena holds exactly this request, or with ``compile`` the denoiser's kept engine."""
    if config.compile:
        compiled = denoiser.compiled()
        engine = _COMPILED_ENGINES.get(compiled)
        cached = config.cache != "none"
        if engine is None or (cached and request.rows > engine.slots):  # a bigger batch: one bigger arena, once
            slots = max(64, request.rows, engine.slots if engine is not None else 0)
            engine = _COMPILED_ENGINES[compiled] = Engine(denoiser, EngineConfig(max_rows=4096, kv_slots=slots,
                                                                                 compile=True))
        return engine
    block = denoiser.attention_block
    total = canvas_length(request.prompts, config.gen_length, None if block is None else config.block_length, block)
    cached = config.cache != "none"
    return Engine(denoiser, EngineConfig(max_rows=request.rows, kv_slots=request.rows if cached else None,
                                         max_length=total if cached else None))


class _Progress(Listener):
    """Advances the progress bar after every block and forwards events to the caller's listener."""

    def __init__(self, inner: Listener | None, advance: Any) -> None:
        self.inner, self.advance = inner, advance

    def on_call(self, event: CallEvent) -> None:
        if self.inner is not None:
            self.inner.on_call(event)

    def on_block(self, event: BlockEvent) -> None:
        self.advance()
        if self.inner is not None:
            self.inner.on_block(event)

    def dropped(self) -> list[int]:
        return [] if self.inner is None else self.inner.dropped()


def row_seeds(seeds: Sequence[int] | None, n: int, base: int | None) -> list[int]:
    """One seed per row: ``seeds`` as given (checked), else derived from ``(base, row)``."""
    if seeds is not None:
        if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence) or len(seeds) != n:
            raise ValueError(f"seeds must be a sequence of {n} ints (one per prompt), got {seeds!r}")
        return list(seeds)
    if base is None:
        base = int(torch.randint(0, 2**62, ()))
    return [derive_seed(base, i) for i in range(n)]


def as_rows(prompts: PromptsLike) -> list[list[int]]:
    """Prompts as lists of ints: a batch of sequences of ints, of 1-D integer tensors, or a 1-D/2-D tensor."""
    if isinstance(prompts, Tensor):
        if prompts.dim() == 1:
            prompts = prompts.unsqueeze(0)
        if prompts.dim() != 2:
            raise ValueError(f"prompts tensor must be 1-D or 2-D, got shape {tuple(prompts.shape)}")
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, (Sequence, Tensor)):
        raise ValueError("prompts must be a batch of token-id sequences (list of lists, list of 1-D tensors, or a tensor)")
    rows = []
    for i, p in enumerate(prompts):
        if isinstance(p, Tensor):
            if p.is_floating_point() or p.is_complex() or p.dim() > 1:
                raise ValueError(f"prompts[{i}] must be a 1-D integer tensor, got {p.dtype} of shape {tuple(p.shape)}")
            p = p.tolist()
        if isinstance(p, (str, bytes)) or not isinstance(p, Sequence):
            raise ValueError(f"prompts[{i}] must be a sequence of token ids, got {type(p).__name__}")
        bad = [t for t in p if not isinstance(t, int) or isinstance(t, bool)]
        if bad:
            raise ValueError(f"prompts[{i}] holds {bad[0]!r} of type {type(bad[0]).__name__}: token ids must be ints")
        rows.append(list(p))
    return rows
