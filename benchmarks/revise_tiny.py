"""Revising planners on the bundled tiny-arith model: answer accuracy against mean calls per block, beside the
threshold sweep (the best non-revising planner below 3 calls).

    python benchmarks/revise_tiny.py --n 500 --out benchmarks/revise_tiny.md

Greedy decoding of the first ``--n`` held-out test problems (``unmask.tiny.heldout(n, "test")``), one block of
32 generated tokens, seed 0, each setting measured by :func:`unmask.bench.tiny.measure` (answer accuracy with a 95%
Wilson interval, mean calls per problem = per block). The table ends with, for each revising setting in 1.5-3
calls, the best threshold setting at the same or fewer mean calls and the difference in points.

tiny-arith was trained (LLaDA-style SFT) on masked positions only: ``edit``, ``wino`` and
``remask(score='current')`` read its logits at revealed positions, which it never learned to score;
``remask(score='reveal')`` and ``stable`` read only masked positions.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from unmask.bench.tiny import Setting, measure
from unmask.planners import parse_planner
from unmask.tiny import heldout, load_tiny

THRESHOLDS = (0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
REVISING = (
    "remask(threshold(tau=0.3), eta=0.2, max_calls=3)",
    "remask(threshold(tau=0.5), eta=0.1, max_calls=3)",
    "remask(threshold(tau=0.5), eta=0.2, max_calls=3)",
    "remask(threshold(tau=0.7), eta=0.1, max_calls=3)",
    "remask(threshold(tau=0.8), eta=0.1, max_calls=3)",
    "remask(threshold(tau=0.9), eta=0.05, max_calls=3)",
    "remask(threshold(tau=0.5), eta=0.2, max_calls=3, score='current')",
    "stable(threshold(tau=0.3), window=2)",
    "stable(threshold(tau=0.5), window=2)",
    "stable(threshold(tau=0.5), window=2, tau=0.5)",
    "edit(threshold(tau=0.5), threshold=0.9, max_edit_calls=1)",
    "edit(threshold(tau=0.7), threshold=0.9, max_edit_calls=1)",
    "wino(wide=0.5, narrow=0.9, max_calls=3)",
    "wino(wide=0.3, narrow=0.7, max_calls=3)",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500, help="held-out test problems (default 500)")
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--out", default=None, help="markdown file to write (default: print only)")
    args = parser.parse_args(argv)
    if args.n < 1:
        raise SystemExit(f"--n must be a positive int, got {args.n}")
    torch.set_num_threads(1)
    denoiser, _ = load_tiny()
    problems = heldout(args.n, "test")
    t0 = time.perf_counter()
    rows = []
    for spec in [f"threshold(tau={t})" for t in THRESHOLDS] + list(REVISING):
        planner = parse_planner(spec)
        r = measure(denoiser, problems, Setting(planner.name, spec, planner), args.batch_size)
        rows.append((spec, planner.revises or planner.name == "stable", r))
    lines = [f"tiny-arith, {args.n} held-out test problems, greedy, one 32-token block, seed 0", "",
             "| planner | revises or keeps history | answer acc [95% CI] | mean calls per block |", "|---|---|---:|---:|"]
    for spec, rev, r in rows:
        lines.append(f"| `{spec}` | {'yes' if rev else 'no'} | {100 * r.acc:.1f} [{100 * r.lo:.1f}, {100 * r.hi:.1f}] "
                     f"| {r.nfe:.2f} |")
    lines += ["", "Revising settings at 1.5-3 mean calls against the best threshold at the same or fewer calls:", "",
              "| revising planner | calls | acc | best threshold at <= calls | its calls | its acc | gain (points) |",
              "|---|---:|---:|---|---:|---:|---:|"]
    base = [(s, r) for s, rev, r in rows if not rev]
    for spec, rev, r in rows:
        if not rev or not 1.5 <= r.nfe <= 3.0:
            continue
        fit = [(s, b) for s, b in base if b.nfe <= r.nfe]
        if not fit:
            lines.append(f"| `{spec}` | {r.nfe:.2f} | {100 * r.acc:.1f} | none | | | |")
            continue
        s, b = max(fit, key=lambda t: t[1].acc)
        lines.append(f"| `{spec}` | {r.nfe:.2f} | {100 * r.acc:.1f} | `{s}` | {b.nfe:.2f} | {100 * b.acc:.1f} | "
                     f"{100 * (r.acc - b.acc):+.1f} |")
    lines.append(f"\n{time.perf_counter() - t0:.0f} s on one thread.")
    text = "\n".join(lines) + "\n"
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
