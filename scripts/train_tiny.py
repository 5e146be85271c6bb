"""Train the bundled tiny-arith model (LLaDA SFT on seeded arithmetic problems).

    python scripts/train_tiny.py --out runs/tiny --time-budget-min 120 --threads 2   # about 7,000 steps on 2 CPU cores
    python scripts/train_tiny.py --out runs/tiny --device cuda --steps 30000 --batch-size 512
    python scripts/train_tiny.py --out runs/tiny2 --init runs/tiny/last --time-budget-min 60   # continue

Writes ``OUT/best`` and ``OUT/last`` (float32 checkpoints in the saved-folder
format), ``OUT/log.jsonl`` and ``OUT/summary.json``. ``--export`` then copies
``OUT/best`` in float16 into ``src/unmask/assets/tiny-arith``.

The shipped model (4 layers, d=256, 3.0M parameters) took about 6,700 steps
of batch 128 in three stages on a 2-core CPU (1 step/s, 107 minutes); the exact commands
and validation curves are in ``src/unmask/assets/tiny-arith/training.json``.
A single from-scratch run on the current data has not been timed to the
same accuracy.

With ``--time-budget-min`` the learning-rate schedule follows the clock, so a
rerun on another machine differs; ``--steps`` alone gives a schedule fixed by
the step count. On a shared CPU use ``--threads 1``: two OpenMP threads
competing with other processes for two cores ran four times slower.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from unmask.models import load
from unmask.tiny.model import ASSET_DIR, TinyShape, save_tiny
from unmask.tiny.train import train


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=100_000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--out", default="runs/tiny")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--time-budget-min", type=float, default=None, help="stop (with a decayed LR) after this many minutes")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--hidden", type=int, default=TinyShape.hidden)
    p.add_argument("--layers", type=int, default=TinyShape.layers)
    p.add_argument("--heads", type=int, default=TinyShape.heads)
    p.add_argument("--intermediate", type=int, default=TinyShape.intermediate)
    p.add_argument("--pool-size", type=int, default=300_000, help="distinct training problems drawn up front")
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--eval-n", type=int, default=200)
    p.add_argument("--device", default="cpu")
    p.add_argument("--init", default=None, help="start from this saved folder (e.g. OUT/last) instead of a fresh model")
    p.add_argument("--no-progress", action="store_true", help="plain log lines instead of a progress bar")
    p.add_argument("--export", action="store_true", help=f"copy OUT/best as float16 into {ASSET_DIR}")
    args = p.parse_args(argv)
    shape = TinyShape(hidden=args.hidden, layers=args.layers, heads=args.heads, intermediate=args.intermediate)
    summary = train(
        args.out, steps=args.steps, batch_size=args.batch_size, seed=args.seed, threads=args.threads,
        time_budget_min=args.time_budget_min, lr=args.lr, shape=shape, pool_size=args.pool_size,
        eval_every=args.eval_every, eval_n=args.eval_n, device=args.device, progress=not args.no_progress,
        init=args.init,
    )
    print(json.dumps(summary, indent=2))
    if args.export:
        model = load(f"{args.out}/best", dtype=torch.float32)[0].model
        save_tiny(model, ASSET_DIR)
        print(f"exported float16 weights to {ASSET_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
