"""What weight-only int8 / int4 (torchao) costs in accuracy, on CPU.

1. The bundled tiny-arith model on held-out problems, greedy, at DUS (one
   block of 32, ``Dilated``: 5 calls) and at one token per call (32 calls), for
   float32, int8 (float32 activations) and int4 (bfloat16 activations:
   torchao's int4 kernels run in bf16), and bfloat16 at DUS only (plain bf16
   matmuls are slow on a CPU without bf16 instructions): answer accuracy with a
   95% Wilson interval, exact match, the share of generated tokens equal to
   float32's, and the bytes of the weights.
2. A random LLaDA-shape model (real vocabulary 126,464; small hidden size so
   it runs on a CPU) with confident logits (``logit_std``, as
   ``gpu_speed.py --logit-std``): the share of generated tokens equal to the
   bfloat16 model's, for float32 (the bf16 rounding floor), int8 and int4,
   each at DUS and one token per call, and, for one call on a fixed canvas
   (half the answer known, half masked), the share of positions whose argmax
   equals bf16's and the largest logit difference.

    PYTHONPATH=src python benchmarks/quantize_accuracy.py --problems 300
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from unmask import GenerationConfig, generate
from unmask.models import load, weight_bytes
from unmask.models.loading import finish_model
from unmask.models.quantize import quantize_model
from unmask.models.synthetic import random_llada
from unmask.planners import Dilated, TopK
from unmask.tiny import GEN_LENGTH, heldout, one_token_per_call, solve

MODES = (("float32", None, torch.float32), ("bfloat16", None, torch.bfloat16),
         ("int8", "int8", torch.float32), ("int4", "int4", torch.bfloat16))


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion ``p`` from ``n`` trials."""
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return c - h, c + h


def settings(gen: int, block: int) -> dict[str, GenerationConfig]:
    return {"DUS": GenerationConfig(gen_length=gen, block_length=block, planner=Dilated()),
            "1 token/call": GenerationConfig(gen_length=gen, block_length=block, planner=TopK(steps=gen))}


def tiny_rows(n: int, batch: int) -> list[str]:
    items = heldout(n)
    configs = {"DUS": GenerationConfig(gen_length=GEN_LENGTH, block_length=GEN_LENGTH, planner=Dilated()),
               "1 token/call": one_token_per_call()}
    rows, ref = [], {}
    for name, quant, dtype in MODES:
        den, tok = load("tiny-arith", dtype=dtype, quantize=quant)
        mib = weight_bytes(den.model) / 2**20
        for setting, cfg in configs.items():
            if name == "bfloat16" and setting != "DUS":
                continue
            t0 = time.perf_counter()
            r = solve(den, items, cfg, batch, tok, keep=True)
            ref.setdefault(setting, r["generated"])
            agree = float((r["generated"] == ref[setting]).float().mean())
            lo, hi = wilson(r["answer_acc"], n)
            rows.append(f"| {name} | {setting} | {n} | {100 * r['answer_acc']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}] | "
                        f"{100 * r['exact_match']:.1f} | {100 * agree:.2f} | {mib:.2f} | {time.perf_counter() - t0:.0f} |")
            print(rows[-1], flush=True)
    return rows


def random_rows(args: argparse.Namespace) -> list[str]:
    g = torch.Generator().manual_seed(1)
    prompts = torch.randint(0, 126464 - 2, (args.rows, args.prompt), generator=g).tolist()  # the same for every model
    filled = torch.randint(0, 126464 - 2, (args.rows, args.gen), generator=g)  # half the answer known, half masked
    canvas = torch.cat([torch.tensor(prompts), torch.where(torch.rand(filled.shape, generator=g) < 0.5, filled,
                                                           126464 - 1)], 1)
    rows, ref = [], {}
    for name, quant, dtype in (MODES[1], MODES[0], MODES[2], ("int8 (bf16)", "int8", torch.bfloat16), MODES[3]):
        den = random_llada(hidden=args.hidden, layers=args.layers, heads=args.hidden // 64,
                           intermediate=args.intermediate, device="cpu", dtype=torch.float32, logit_std=args.logit_std)
        finish_model(den.model.to(dtype), torch.device("cpu"))  # the same weights in every dtype; rotary in float32
        if quant is not None:
            quantize_model(den.model, quant, torch.device("cpu"), dtype)
        mib = weight_bytes(den.model) / 2**20
        with torch.no_grad():  # one call on a fixed canvas: no decoding order to diverge
            logits = den(canvas, torch.ones_like(canvas, dtype=torch.bool), torch.arange(canvas.shape[1])[None]).float()
        ref.setdefault("call", logits)
        top = float((logits.argmax(-1) == ref["call"].argmax(-1)).float().mean())
        diff = float((logits - ref["call"]).abs().max())
        for setting, cfg in settings(args.gen, args.block).items():
            out = generate(den, prompts, cfg)
            ref.setdefault(setting, out.generated)
            agree = float((out.generated == ref[setting]).float().mean())
            rows.append(f"| {name} | {setting} | {args.rows} x {args.gen} | {100 * agree:.2f} | {out.nfe} | "
                        f"{100 * top:.2f} | {diff:.3f} | {mib:.1f} |")
            print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--problems", type=int, default=300, help="held-out tiny-arith problems (default 300)")
    p.add_argument("--batch", type=int, default=150, help="problems per generate call (default 150)")
    p.add_argument("--skip-tiny", action="store_true")
    p.add_argument("--skip-random", action="store_true")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--intermediate", type=int, default=768)
    p.add_argument("--logit-std", type=float, default=12.0)
    p.add_argument("--rows", type=int, default=8)
    p.add_argument("--prompt", type=int, default=16)
    p.add_argument("--gen", type=int, default=64)
    p.add_argument("--block", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not args.skip_tiny:
        print("| weights | decoding | problems | answer acc % [95% CI] | exact % | tokens = float32 % | weights MiB | s |")
        print("|---|---|---|---|---|---|---|---|")
        tiny_rows(args.problems, args.batch)
    if not args.skip_random:
        print(f"\nrandom LLaDA-shape: hidden {args.hidden}, {args.layers} layers, MLP {args.intermediate}, vocab 126464, "
              f"logit std {args.logit_std}, prompt {args.prompt}, block {args.block}, greedy")
        print("| weights | decoding | rows x tokens | tokens = bf16 % | calls | one call: argmax = bf16 % | "
              "max abs logit diff | weights MiB |")
        print("|---|---|---|---|---|---|---|---|")
        random_rows(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
