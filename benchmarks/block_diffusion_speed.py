"""CPU speed of a block-diffusion model: DUS with the committed cache against no cache, same run.

    python benchmarks/block_diffusion_speed.py                  # hidden 512, 4 layers, vocab 32k; prompt 128, gen 32, block 4
    python benchmarks/block_diffusion_speed.py --batches 1 --reps 5
    python benchmarks/block_diffusion_speed.py --family llada2 --block 32 --gen 64   # LLaDA2-shaped MoE

The model is transformers' Qwen3ForCausalLM in unmask's native adapter with
SDAR's layout (per-head q/k norms, GQA, block-causal attention with blocks of
4 tokens), random weights, built in memory, with fewer and narrower layers
than SDAR-1.7B so that a run stays short on a CPU. Both cache modes run the
same planner (``dilated(base=2)``: 2 calls per block of 4) on the same prompts
and give the same tokens (checked here); no cache runs the whole canvas every
call, the committed cache only the columns after the last finished block.
``--family llada2``: transformers' Glm4MoeForCausalLM with LLaDA2's layout
(partial rotary, q/k norms, the first layer dense, then 16 grouped
sigmoid-routed experts, top 4, plus a shared one; ``random_llada2``).
Each cell is the median of ``--reps`` generations, the two modes interleaved.
Not a test.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import statistics
import sys
import time

import torch

from unmask import GenerationConfig, generate
from unmask.models.synthetic import random_llada2, random_sdar


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--family", choices=("sdar", "llada2"), default="sdar")
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=4)
    p.add_argument("--intermediate", type=int, default=1536)
    p.add_argument("--vocab", type=int, default=32768)
    p.add_argument("--prompt", type=int, default=128, help="prompt tokens per row")
    p.add_argument("--gen", type=int, default=32, help="generated tokens per row")
    p.add_argument("--block", type=int, default=4, help="generated block (and the model's block)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args()


def main() -> None:
    args = parse()
    torch.set_num_threads(args.threads)
    build = random_sdar if args.family == "sdar" else random_llada2
    den = build(hidden=args.hidden, layers=args.layers, heads=args.heads, kv_heads=args.kv_heads,
                head_dim=args.hidden // args.heads, intermediate=args.intermediate, vocab=args.vocab,
                block=args.block, device="cpu", dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    rows = []
    for batch in args.batches:
        prompts = [torch.randint(0, args.vocab - 2, (args.prompt + i,), generator=g).tolist() for i in range(batch)]
        secs: dict[str, list[float]] = {"none": [], "committed": []}
        outs = {}
        for _ in range(args.reps):
            for mode, spent in secs.items():
                cfg = GenerationConfig(gen_length=args.gen, block_length=args.block, planner="dilated(base=2)",
                                       cache=mode, early_exit=False)
                t0 = time.perf_counter()
                outs[mode] = generate(den, prompts, cfg)
                spent.append(time.perf_counter() - t0)
        assert torch.equal(outs["none"].generated, outs["committed"].generated), "the cache changed the tokens"
        tps = {m: batch * args.gen / statistics.median(s) for m, s in secs.items()}
        rows.append((batch, outs["none"].nfe, tps["none"], tps["committed"], tps["committed"] / tps["none"]))
    print(f"{args.family}-shaped random model: hidden {args.hidden}, {args.layers} layers, {args.heads}/{args.kv_heads} heads, "
          f"vocab {args.vocab}, block {args.block}; prompt {args.prompt}(+row), gen {args.gen}; "
          f"CPU {platform.processor() or platform.machine()}, {args.threads} thread(s), median of {args.reps}")
    print()
    print("| batch | NFE | none tokens/s | committed tokens/s | committed / none |")
    print("|---:|---:|---:|---:|---:|")
    for b, nfe, a, c, r in rows:
        print(f"| {b} | {nfe} | {a:.1f} | {c:.1f} | {r:.2f}x |")
    print()
    print("command: python " + " ".join(shlex.quote(a) for a in sys.argv))


if __name__ == "__main__":
    main()
