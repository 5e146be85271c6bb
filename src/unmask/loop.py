"""The one generation loop: canvas, blocks, calls, planner, trace.

Every planner, cache mode, denoiser and front end (CLI, lm-eval, benchmarks,
server) runs through :func:`generate`. Model quirks live in denoiser adapters,
the choice of positions in planners (:func:`unmask.decide.decide`), the way
logits are obtained in cache policies, and the trace in the recorder; this file
only moves tokens. Inside a block nothing is read back to the host except, for
planners whose call count is not fixed, whether any position is still masked.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from .cache import Forward, make_forward
from .canvas import Canvas
from .config import GenerationConfig
from .decide import check, decide
from .denoiser import Denoiser, TokenSpec
from .guidance import Guided
from .noise import Noise, derive_seed
from .output import PENDING, BlockEvent, CallEvent, GenerationOutput, Listener, Recorder
from .progress import block_progress
from .text import check_tokenizer, decode_rows

PromptsLike = Sequence[Sequence[int]] | Sequence[Tensor] | Tensor


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
) -> GenerationOutput:
    """Generate ``config.gen_length`` tokens after each prompt with a masked diffusion denoiser.

    Semi-autoregressive blocks of ``block_length`` (LLaDA, Nie et al. 2025);
    within a block, ``config.planner`` picks the positions each denoiser call
    reveals. Prompts of different lengths are left-padded. A row that has
    produced an EOS id in a finished block is filled with EOS and stops
    costing calls; the loop ends when every row has. With ``tokenizer``, the
    output carries decoded texts cut at EOS and at the first stop string.

    Randomness (sampled tokens, random orders) comes from one seed per row
    (:mod:`unmask.noise`): ``seeds[i]`` for prompt i, so a prompt with the
    same seed gets the same output alone or in any batch; by default row i's
    seed is derived from ``(config.seed, i)``, and from a draw of torch's
    global generator when ``config.seed`` is None. ``listener`` receives an
    event after every call and block, and may drop rows.
    """
    config = GenerationConfig.coerce(config)
    if not isinstance(denoiser, Denoiser):
        raise ValueError(f"denoiser must be an unmask.Denoiser (subclass it), got {type(denoiser).__name__}")
    check_tokenizer(tokenizer, config.stop)
    rows = as_rows(prompts)
    check_prompts(rows, config, denoiser.spec)
    canvas = Canvas.build(rows, config.gen_length, denoiser.spec, denoiser.device)
    noise = Noise.from_seeds(row_seeds(seeds, len(rows), config.seed), denoiser.device)
    model = denoiser.compiled() if config.compile else denoiser
    if config.cfg_scale > 0:
        model = Guided(model, canvas.prompt_mask, config.cfg_scale)
    run = _Run(config, canvas, make_forward(config.cache, model, canvas), noise, listener)

    t0 = time.perf_counter()
    with block_progress(config.num_blocks, enabled=progress) as advance:
        for b in range(config.num_blocks):
            run.block(b)
            advance()
            if run.finish_block(b):
                break
    if canvas.ids.device.type == "cuda":
        torch.cuda.synchronize(canvas.ids.device)
    return run.output(time.perf_counter() - t0, tokenizer)


class _Run:
    """The state of one generation: the canvas being filled, the recorder, the rows that are done."""

    def __init__(self, config: GenerationConfig, canvas: Canvas, forward: Forward, noise: Noise,
                 listener: Listener | None) -> None:
        self.config, self.canvas, self.forward, self.noise, self.listener = config, canvas, forward, noise, listener
        self.spec: TokenSpec = forward.denoiser.spec
        self.x = canvas.ids.clone()  # [N, T]: filled in place, call by call
        n, device = self.x.shape[0], self.x.device
        self.recorder = Recorder(n, config.gen_length, device)
        self.done = torch.zeros(n, dtype=torch.bool, device=device)
        self.eos = torch.tensor(self.spec.eos_ids, dtype=torch.long, device=device)
        self.skipped = 0

    def block(self, b: int) -> None:
        """Run the calls of block ``b`` until none of its positions is masked."""
        cfg, c, x = self.config, self.canvas, self.x
        planner, bl = cfg.planner, cfg.block_length
        assert not isinstance(planner, str)
        lo, hi = c.block(b, bl)
        g = slice(lo - c.width, hi - c.width)
        fixed = planner.calls_per_block(bl, cfg.num_blocks)  # None: adaptive, stop when the block is full
        call = 0
        while fixed is None or call < fixed:
            masked = x[:, lo:hi] == self.spec.mask_id  # [N, Bl]
            if fixed is None and not bool(masked.any()):
                break
            logits = self.forward.block_logits(x, lo, hi, call)  # [N, Bl, V]
            d = decide(logits, masked, planner, cfg.sampling, self.noise.at(call, c.positions[:, lo:hi]), call,
                       cfg.num_blocks, self.spec.mask_id)
            x[:, lo:hi] = torch.where(d.reveal, d.proposal.tokens, x[:, lo:hi])
            self.recorder.record(b, g, masked, d)
            if self.listener is not None:
                self.listener.on_call(CallEvent(self.recorder.calls - 1, b, g.start, d.reveal, x[:, lo:hi]))
            call += 1
        check(self.recorder.nonfinite, self.recorder.broken, planner)
        assert not bool((x[:, lo:hi] == self.spec.mask_id).any()), f"{planner} left masks in block {b}"

    def finish_block(self, b: int) -> bool:
        """Early exit and dropped rows after block ``b``; True when no row needs another block."""
        c, x, last = self.canvas, self.x, b == self.config.num_blocks - 1
        _, hi = c.block(b, self.config.block_length)
        finished = torch.zeros_like(self.done)
        if self.config.early_exit:
            finished |= torch.isin(x[:, c.width : hi], self.eos).any(-1)  # rows with EOS in finished blocks
        if self.listener is not None:
            dropped = self.listener.dropped()
            if dropped:
                finished[torch.tensor(dropped, dtype=torch.long, device=x.device)] = True
        finished &= ~self.done
        if not last:
            x[finished, hi:] = self.eos[0]
            self.recorder.fill(finished, hi - c.width)
        self.done |= finished
        stop = not last and bool(self.done.all())
        if stop:
            self.skipped = self.config.num_blocks - 1 - b
        if self.listener is not None:
            self.listener.on_block(BlockEvent(b, hi - c.width - self.config.block_length, x[:, c.width :], self.done))
        return stop

    def output(self, seconds: float, tokenizer: Any | None) -> GenerationOutput:
        cfg, c, rec = self.config, self.canvas, self.recorder
        trace = rec.trace()
        assert not bool((trace.reveal_call == PENDING).any()), "a position was never revealed"
        cpb = cfg.planner.calls_per_block(cfg.block_length, cfg.num_blocks)  # type: ignore[union-attr]
        out = GenerationOutput(
            sequences=self.x, attention_mask=c.attention_mask, prompt_lengths=c.attention_mask[:, : c.width].sum(-1).tolist(),
            nfe=rec.calls, nfe_per_row=rec.nfe_rows, trace=trace, full_forwards=self.forward.full,
            partial_forwards=self.forward.partial, skipped_blocks=self.skipped,
            calls_saved=None if cpb is None else cpb * cfg.num_blocks - rec.calls, seconds=seconds,
        )
        if tokenizer is not None:
            out.texts = decode_rows(tokenizer, self.x[:, c.width :], self.spec.eos_ids, cfg.stop)
        return out


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


def check_prompts(rows: list[list[int]], config: GenerationConfig, spec: TokenSpec) -> None:
    """Raise ``ValueError`` for an empty batch, ids outside the vocabulary or the mask id, or a canvas too long."""
    if not rows:
        raise ValueError("prompts must hold at least one prompt, got an empty batch")
    for i, row in enumerate(rows):
        bad = [t for t in row if not 0 <= t < spec.vocab_size or t == spec.mask_id]
        if bad:
            raise ValueError(
                f"prompts[{i}] holds token id {bad[0]}: ids must lie in [0, {spec.vocab_size}) and not be "
                f"the mask id {spec.mask_id}"
            )
        total = len(row) + config.gen_length
        if spec.max_length is not None and total > spec.max_length:
            raise ValueError(
                f"prompts[{i}] has {len(row)} tokens; with gen_length={config.gen_length} that is {total}, "
                f"over the model's maximum length {spec.max_length}"
            )
