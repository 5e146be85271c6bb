"""The one generation loop: canvas, blocks, calls, planner, trace.

Every planner, cache mode, denoiser and front end (CLI, lm-eval, benchmarks)
runs through :func:`generate`. Model quirks live in denoiser adapters, the
choice of positions in planners, and the way logits are obtained in cache
policies; this file only moves tokens.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from .cache import make_forward
from .config import GenerationConfig
from .decide import decide
from .denoiser import Denoiser, canvas_positions, device_of
from .guidance import Guided
from .output import FILLED, GenerationOutput, Trace
from .noise import Noise, derive_seed
from .progress import block_progress
from .text import decode_rows

PromptsLike = Sequence[Sequence[int]] | Sequence[Tensor] | Tensor


def _as_rows(prompts: PromptsLike) -> list[list[int]]:
    if isinstance(prompts, Tensor):
        if prompts.dim() == 1:
            prompts = prompts.unsqueeze(0)
        if prompts.dim() != 2:
            raise ValueError(f"prompts tensor must be 1-D or 2-D, got shape {tuple(prompts.shape)}")
        return [row.tolist() for row in prompts]
    if isinstance(prompts, (str, bytes)) or not isinstance(prompts, Sequence):
        raise ValueError("prompts must be a batch of token-id sequences (list of lists, list of 1-D tensors, or a tensor)")
    rows = []
    for i, p in enumerate(prompts):
        if isinstance(p, Tensor):
            p = p.reshape(-1).tolist()
        if isinstance(p, (str, bytes)) or not isinstance(p, Sequence):
            raise ValueError(f"prompts[{i}] must be a sequence of token ids, got {type(p).__name__}")
        rows.append([int(t) for t in p])
    return rows


def _validate_prompts(rows: list[list[int]], config: GenerationConfig, denoiser: Denoiser) -> None:
    spec = denoiser.spec
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


def row_seeds(seeds: Sequence[int] | None, n: int, base: int | None) -> list[int]:
    """One seed per row: ``seeds`` as given (checked), else derived from ``(base, row)``."""
    if seeds is not None:
        if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence) or len(seeds) != n:
            raise ValueError(f"seeds must be a sequence of {n} ints (one per prompt), got {seeds!r}")
        return list(seeds)
    if base is None:
        base = int(torch.randint(0, 2**62, ()))
    return [derive_seed(base, i) for i in range(n)]


@torch.no_grad()
def generate(
    denoiser: Denoiser,
    prompts: PromptsLike,
    config: GenerationConfig | None = None,
    *,
    seeds: Sequence[int] | None = None,
    tokenizer: Any | None = None,
    progress: bool = False,
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
    global generator when ``config.seed`` is None.
    """
    config = config or GenerationConfig()
    rows = _as_rows(prompts)
    _validate_prompts(rows, config, denoiser)
    spec, planner, device = denoiser.spec, config.planner, device_of(denoiser)
    assert not isinstance(planner, str)
    n, width, gen, bl = len(rows), max(map(len, rows)), config.gen_length, config.block_length

    # canvas [N, P + G]: left padding, prompt, masks
    x = torch.full((n, width + gen), spec.mask_id, dtype=torch.long, device=device)
    attention_mask = torch.ones_like(x, dtype=torch.bool)
    for i, row in enumerate(rows):
        pad = width - len(row)
        x[i, :pad] = spec.pad_id
        attention_mask[i, :pad] = False
        x[i, pad:width] = torch.tensor(row, dtype=torch.long, device=device)
    positions = canvas_positions(attention_mask)
    model: Denoiser = denoiser
    if config.cfg_scale > 0:
        prompt_mask = attention_mask.clone()
        prompt_mask[:, width:] = False
        model = Guided(denoiser, prompt_mask, config.cfg_scale)
    forward = make_forward(config.cache, model, attention_mask, positions)
    noise = Noise.from_seeds(row_seeds(seeds, n, config.seed), device)

    reveal_call = torch.full((n, gen), -2, dtype=torch.long, device=device)
    token_prob = torch.ones((n, gen), dtype=torch.float32, device=device)
    token_logq = torch.zeros((n, gen), dtype=torch.float32, device=device)
    per_call: list[Tensor] = []
    block_of_call: list[int] = []
    nfe_rows = torch.zeros(n, dtype=torch.long, device=device)
    done = torch.zeros(n, dtype=torch.bool, device=device)
    eos = torch.tensor(spec.eos_ids, dtype=torch.long, device=device)
    skipped = 0
    t0 = time.perf_counter()

    with block_progress(config.num_blocks, enabled=progress) as advance:
        for b in range(config.num_blocks):
            lo, hi = width + b * bl, width + (b + 1) * bl
            call = 0
            while True:
                masked = x[:, lo:hi] == spec.mask_id  # [N, Bl]
                if not masked.any():
                    break
                logits = forward.block_logits(x, lo, hi, call)  # [N, Bl, V]
                d = decide(logits, masked, planner, config.sampling, noise.at(call, positions[:, lo:hi]), call,
                           config.num_blocks, spec.mask_id)
                reveal, proposal = d.reveal, d.proposal
                x[:, lo:hi] = torch.where(reveal, proposal.tokens, x[:, lo:hi])
                g = slice(lo - width, hi - width)
                global_call = len(block_of_call)
                reveal_call[:, g] = torch.where(reveal, global_call, reveal_call[:, g])
                token_prob[:, g] = torch.where(reveal, proposal.confidence, token_prob[:, g])
                token_logq[:, g] = torch.where(reveal, proposal.logq, token_logq[:, g])
                per_call.append(reveal.sum(-1))
                block_of_call.append(b)
                nfe_rows += masked.any(-1)
                call += 1
            advance()
            if config.early_exit and b < config.num_blocks - 1:
                finished = torch.isin(x[:, width:hi], eos).any(-1) & ~done  # rows with EOS in finished blocks
                x[finished, hi:] = eos[0]
                reveal_call[finished, hi - width :] = FILLED
                done |= finished
                if bool(done.all()):
                    skipped = config.num_blocks - 1 - b
                    break
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0

    assert not (reveal_call == -2).any(), "a position was never revealed"
    nfe = len(block_of_call)
    cpb = planner.calls_per_block(bl)
    generated = x[:, width:]
    trace = Trace(
        reveal_call=reveal_call,
        token_prob=token_prob,
        token_logq=token_logq,
        revealed_per_call=torch.stack(per_call) if per_call else torch.zeros(0, n, dtype=torch.long),
        block_of_call=torch.tensor(block_of_call, dtype=torch.long),
    )
    out = GenerationOutput(
        sequences=x,
        attention_mask=attention_mask,
        prompt_lengths=[len(r) for r in rows],
        nfe=nfe,
        nfe_per_row=nfe_rows,
        trace=trace,
        full_forwards=forward.full,
        partial_forwards=forward.partial,
        skipped_blocks=skipped,
        calls_saved=None if cpb is None else cpb * config.num_blocks - nfe,
        seconds=seconds,
    )
    if tokenizer is not None:
        out.texts = decode_rows(tokenizer, generated, spec.eos_ids, config.stop)
    return out
