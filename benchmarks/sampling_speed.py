"""CPU cost of sampling against greedy: ``propose`` on one block, and a whole ``generate``.

    python benchmarks/sampling_speed.py                        # V=126,464, N in {1, 8, 64} x block 32
    python benchmarks/sampling_speed.py --rows 1 8 --truncation  # add top-k 50 and top-p 0.9 rows
    python benchmarks/sampling_speed.py --generate              # also generate() on a random LLaDA shape
    python benchmarks/sampling_speed.py --device cuda --reps 20  # propose on a GPU (not run yet)

``propose`` is timed on random logits ``3 * N(0, 1)`` of shape ``[N, block,
V]`` (float32; with ``--peaked`` 16 is added to 8 random logits per position,
so the top-p nucleus lies within the few tokens a trained model favours), greedy (temperature 0) against sampled settings, one thread;
each cell is the median of ``--reps`` calls after one warm-up call, and the
ratio divides by the greedy median of the same N. ``--generate`` times a whole
generation (random LLaDA-shape model: hidden 64, one layer, V = 126,464; 8 rows,
32 tokens, one block, DUS) greedy against temperature 1, median of ``--reps``.
Prints a markdown table. Not a test.
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
from unmask.models.synthetic import random_llada
from unmask.noise import Noise
from unmask.sampling import SamplingParams, propose

SETTINGS = {
    "greedy": SamplingParams(),
    "T=1": SamplingParams(temperature=1.0),
    "T=0.7": SamplingParams(temperature=0.7),
}
TRUNCATED = {
    "T=0.7, top-k 50": SamplingParams(temperature=0.7, top_k=50),
    "T=0.7, top-p 0.9": SamplingParams(temperature=0.7, top_p=0.9),
}


def median_seconds(fn, reps: int, device: str = "cpu") -> float:  # type: ignore[no-untyped-def]
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    fn()  # warm-up
    times = []
    for _ in range(reps):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_propose(rows: int, block: int, vocab: int, settings: dict, reps: int, peaked: bool,
                 device: str = "cpu") -> dict[str, float]:
    g = torch.Generator().manual_seed(rows)
    logits = 3.0 * torch.randn(rows, block, vocab, generator=g)
    if peaked:  # 8 likely tokens per position, as a trained model's: the nucleus lies within them
        top = torch.randint(0, vocab, (rows, block, 8), generator=g)
        logits.scatter_add_(-1, top, torch.full(top.shape, 16.0))
    logits = logits.to(device)
    noise = Noise.from_seeds(list(range(rows)), device).at(0, torch.arange(block, device=device).expand(rows, -1))
    return {name: median_seconds(lambda p=p: propose(logits, p, noise), reps, device) for name, p in settings.items()}


def time_generate(reps: int) -> dict[str, float]:
    den = random_llada(hidden=64, layers=1, heads=4, intermediate=192, vocab=126464, max_length=256,
                       device="cpu", dtype=torch.float32)
    prompts = [[1 + i, 2, 3, 4] for i in range(8)]
    out = {}
    for name, t in (("greedy", 0.0), ("T=1", 1.0)):
        cfg = GenerationConfig(gen_length=32, block_length=32, planner="dilated", sampling={"temperature": t},
                               early_exit=False, seed=0)
        out[name] = median_seconds(lambda cfg=cfg: generate(den, prompts, cfg), reps)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, nargs="+", default=[1, 8, 64])
    p.add_argument("--block", type=int, default=32)
    p.add_argument("--vocab", type=int, default=126464)
    p.add_argument("--reps", type=int, default=5, help="timed calls per cell (median), after one warm-up call")
    p.add_argument("--truncation", action="store_true", help="also time top-k 50 and top-p 0.9 (a full sort)")
    p.add_argument("--generate", action="store_true", help="also time a whole generate() greedy and sampled")
    p.add_argument("--peaked", action="store_true", help="add 16 to 8 random logits per position (a narrow nucleus)")
    p.add_argument("--device", default="cpu", help="where propose runs (cuda: timed with synchronisation)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    settings = dict(SETTINGS, **(TRUNCATED if args.truncation else {}))
    names = list(settings)
    print(f"command: python benchmarks/sampling_speed.py {shlex.join(sys.argv[1:] if argv is None else argv)}")
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"{platform.machine()}, 1 thread"
    print(f"machine: {where}, torch {torch.__version__}; V={args.vocab}, block {args.block}\n")
    print("| N | " + " | ".join(f"{n} (ms)" for n in names) + " | " + " | ".join(f"{n} / greedy" for n in names[1:]) + " |")
    print("|---" * (2 * len(names)) + "|")
    for rows in args.rows:
        t = time_propose(rows, args.block, args.vocab, settings, args.reps, args.peaked, args.device)
        cells = [f"{1e3 * t[n]:.1f}" for n in names] + [f"{t[n] / t['greedy']:.2f}x" for n in names[1:]]
        print(f"| {rows} | " + " | ".join(cells) + " |", flush=True)
    if args.generate:
        t = time_generate(args.reps)
        print(f"\ngenerate (hidden 64, 1 layer, V=126,464, 8 rows, 32 tokens, DUS): greedy {t['greedy']:.2f} s, "
              f"T=1 {t['T=1']:.2f} s, ratio {t['T=1'] / t['greedy']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
