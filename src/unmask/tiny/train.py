"""LLaDA-style SFT of the tiny model on the arithmetic problems (seeded, resumable by checkpoints).

Objective (Nie et al. 2025, "Large Language Diffusion Models", SFT): the prompt
stays clean; per example ``t ~ U(eps, 1)``; each answer token (EOS padding
included) is masked with probability ``t``; the loss is the cross-entropy on
masked answer tokens weighted by ``1/t`` and divided by the answer length.
AdamW with linear warm-up and cosine decay; the schedule's progress is the
larger of ``step / steps`` and ``elapsed / time budget``, so a time budget
still ends with a decayed learning rate. Validation accuracy is measured with
:func:`unmask.generate`, one token per call (confidence top-k), and the best
checkpoint is kept.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from transformers import LlamaForCausalLM

from ..models import load
from ..models.forward import decoder_forward
from .data import GEN_LENGTH, MASK_ID, PAD_ID, PROMPT_WIDTH, answer_ids, encode, problems
from .model import TinyShape, build_model, num_params, save_tiny, tiny_denoiser


def encode_batch(pairs: list[tuple[str, str]], gen_length: int = GEN_LENGTH, width: int = PROMPT_WIDTH) -> tuple[Tensor, Tensor]:
    """``(ids [M, width + G], attention [M, width + G] bool)``: left-padded prompt, answer, EOS padding."""
    ids = torch.full((len(pairs), width + gen_length), PAD_ID, dtype=torch.long)
    attn = torch.ones(ids.shape, dtype=torch.bool)
    for i, (prompt, answer) in enumerate(pairs):
        p = encode(prompt)
        if len(p) > width:
            raise ValueError(f"prompt {prompt!r} is longer than width={width}")
        ids[i, width - len(p) : width] = torch.tensor(p)
        ids[i, width:] = torch.tensor(answer_ids(answer, gen_length))
        attn[i, : width - len(p)] = False
    return ids, attn


def training_pool(size: int, seed: int, gen_length: int = GEN_LENGTH) -> tuple[Tensor, Tensor]:
    """``size`` training-split problems from the seeded stream, encoded (see :func:`encode_batch`)."""
    stream = problems(seed, "train", gen_length)
    return encode_batch([(p.prompt, p.answer) for p in (next(stream) for _ in range(size))], gen_length)


def sft_loss(model: LlamaForCausalLM, ids: Tensor, attn: Tensor, gen_length: int, generator: torch.Generator,
             eps: float = 1e-3) -> Tensor:
    """The LLaDA SFT loss on a batch ``ids [B, P + G]`` (answer = last ``gen_length`` positions)."""
    b, width = ids.shape[0], ids.shape[1] - gen_length
    t = eps + (1 - eps) * torch.rand(b, 1, generator=generator, device=ids.device)  # [B, 1]
    masked = torch.rand(b, gen_length, generator=generator, device=ids.device) < t  # [B, G]
    x = ids.clone()
    x[:, width:] = torch.where(masked, MASK_ID, ids[:, width:])
    positions = (attn.long().cumsum(-1) - 1).clamp_min(0)  # same convention as the loop
    logits = decoder_forward(model, x, positions, attn.bool(), None)[:, width:]  # [B, G, V], bidirectional
    ce = torch.nn.functional.cross_entropy(logits.float().transpose(1, 2), ids[:, width:], reduction="none")  # [B, G]
    return (ce * masked / t).sum() / (b * gen_length)


@torch.no_grad()
def validate(model: LlamaForCausalLM, n: int, batch_size: int = 500) -> tuple[float, float]:
    """``(answer accuracy, exact match)`` on ``n`` validation problems, greedy, one token per call."""
    from .evaluate import evaluate

    was_training = model.training
    res = evaluate(tiny_denoiser(model), n=n, split="val", batch_size=batch_size)
    model.train(was_training)
    return res["answer_acc"], res["exact_match"]


def _lr_factor(progress: float, warmup: float) -> float:
    if progress < warmup:
        return progress / warmup
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - warmup) / (1 - warmup))))


def train(
    out: str | Path,
    steps: int = 100_000,
    batch_size: int = 128,
    seed: int = 0,
    threads: int | None = None,
    time_budget_min: float | None = None,
    lr: float = 2e-3,
    weight_decay: float = 0.05,
    warmup: float = 0.03,
    shape: TinyShape = TinyShape(),
    pool_size: int = 300_000,
    eval_every: int = 500,
    eval_n: int = 200,
    device: str = "cpu",
    log_every: int = 100,
    progress: bool = True,
    init: str | Path | None = None,
) -> dict[str, Any]:
    """Train a tiny model; write ``out/best`` (best validation accuracy), ``out/last`` and ``out/log.jsonl``.

    ``init``: a saved folder (e.g. ``out/last`` or the bundled asset) to start
    from instead of a fresh model (weights only: the optimizer and schedule
    start afresh, warm-up included; ``shape`` is then taken from the folder).
    Returns a summary (steps, seconds, best validation accuracy, parameters).
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    if steps < 1 or batch_size < 1 or pool_size < batch_size:
        raise ValueError(f"steps, batch_size must be positive and pool_size >= batch_size, got {steps}, {batch_size}, {pool_size}")
    if time_budget_min is not None and time_budget_min <= 0:
        raise ValueError(f"time_budget_min must be > 0 or None, got {time_budget_min}")
    if threads is not None:
        torch.set_num_threads(threads)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device(device)
    t_start = time.perf_counter()
    ids, attn = training_pool(pool_size, seed)
    ids, attn = ids.to(dev), attn.to(dev)
    model, shape = _initial_model(init, shape, seed, dev)
    opt = _optimizer(model, lr, weight_decay)
    gen = torch.Generator(device=dev).manual_seed(seed + 1)
    budget = None if time_budget_min is None else 60.0 * time_budget_min
    summary: dict[str, Any] = {"params": num_params(model), "shape": asdict(shape), "seed": seed, "batch_size": batch_size,
                               "pool_size": pool_size, "lr": lr, "device": device, "best_val_acc": -1.0,
                               "init": None if init is None else str(init)}
    log = open(out / "log.jsonl", "a")
    print(f"pool of {pool_size} problems built in {time.perf_counter() - t_start:.1f}s; {summary['params']} params", flush=True)
    t0, step, ema = time.perf_counter(), 0, None
    bar = Progress(TextColumn("[bold]train"), BarColumn(), TextColumn("{task.completed}/{task.total} {task.fields[info]}"),
                   TimeElapsedColumn(), disable=not progress)
    with bar:
        task = bar.add_task("train", total=steps, info="")
        while True:
            elapsed = time.perf_counter() - t0
            prog = max(step / steps, elapsed / budget if budget else 0.0)
            if prog >= 1.0:
                break
            for group in opt.param_groups:
                group["lr"] = lr * _lr_factor(prog, warmup)
            loss = _step(model, opt, ids, attn, batch_size, gen)
            step += 1
            value = float(loss.detach()) if step % 10 == 0 or step == 1 else None
            if value is not None:
                ema = value if ema is None else 0.95 * ema + 0.05 * value
            bar.update(task, completed=step, info=f"loss {ema:.4f}" if ema is not None else "")
            if step % log_every == 0:
                rec = {"step": step, "loss": ema, "lr": opt.param_groups[0]["lr"], "seconds": round(time.perf_counter() - t0, 1)}
                print(json.dumps(rec), file=log, flush=True)
                if not progress:
                    print(json.dumps(rec), flush=True)
            if step % eval_every == 0:
                _checkpoint(model, out, step, ema, eval_n, summary, log, t0)
    summary.update(steps=step, seconds=round(time.perf_counter() - t0, 1), final_loss=ema)
    _checkpoint(model, out, step, ema, eval_n, summary, log, t0)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    log.close()
    return summary


def _initial_model(init: str | Path | None, shape: TinyShape, seed: int,
                   dev: torch.device) -> tuple[LlamaForCausalLM, TinyShape]:
    """A fresh seeded model of ``shape``, or the saved one at ``init`` (and its shape), in training mode."""
    if init is None:
        return build_model(shape, seed).to(dev).train(), shape
    model = load(init, device=dev, dtype=torch.float32)[0].model.train().requires_grad_(True)
    cfg = model.config
    return model, TinyShape(cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size,
                            cfg.max_position_embeddings)


def _optimizer(model: LlamaForCausalLM, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW with weight decay on the matrices other than the embeddings."""
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embed" not in n)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.98))


def _step(model: LlamaForCausalLM, opt: torch.optim.Optimizer, ids: Tensor, attn: Tensor, batch_size: int,
          gen: torch.Generator) -> Tensor:
    """One optimisation step on a random batch of the pool; returns the loss."""
    idx = torch.randint(0, ids.shape[0], (batch_size,), generator=gen, device=ids.device)
    loss = sft_loss(model, ids[idx], attn[idx], GEN_LENGTH, gen)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss


def _checkpoint(model: LlamaForCausalLM, out: Path, step: int, loss: float | None, eval_n: int,
                summary: dict[str, Any], log: Any, t0: float) -> None:
    """Validate, save ``last`` (float32), and ``best`` when validation accuracy improved."""
    acc, exact = validate(model, eval_n)
    rec = {"step": step, "loss": loss, "val_acc": acc, "val_exact": exact, "seconds": round(time.perf_counter() - t0, 1)}
    print(json.dumps(rec), file=log, flush=True)
    print(json.dumps(rec), flush=True)
    save_tiny(model, out / "last", dtype=torch.float32)
    if acc > summary["best_val_acc"]:
        summary.update(best_val_acc=acc, best_val_exact=exact, best_step=step)
        save_tiny(model, out / "best", dtype=torch.float32)
