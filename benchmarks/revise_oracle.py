"""Revising planners on exact oracles: pair KL at 2-6 calls per block beside their inner planners, and exact KL.

    python benchmarks/revise_oracle.py --out benchmarks/revise_oracle.md

Two tables, written as markdown:

1. *Pair KL* (:func:`~unmask.oracles.pair_divergence`'s statistic: mean KL
   of the empirical pairwise marginals, all pairs up to 8 apart, against the
   oracle's exact ones; consistent for every planner) of ``--samples``
   unconditional 32-token blocks at temperature 1 on the three named oracles
   (``unmask.oracles.named_oracle``, seed 0), for each budget K of 2-6 calls
   per block: the inner planner ``interleave(k=K)``, ``remask`` over it (same
   K calls: the last allowed call reveals every mask left), ``edit`` over ``interleave(k=K-1)`` (its post-fill call makes
   K), ``wino`` with ``max_calls=K`` (on an exact oracle: ``threshold(tau=wide)``
   with every mask left revealed at call K). ``stable`` (adaptive, past 6 calls per
   32-token block at window 2 over ``interleave``) is in table 2 only. The floor: the statistic for as many exact
   samples.
2. *Exact KL(q || p)* per token by enumeration (:func:`~unmask.oracles.enumerate_sampler`)
   on small oracles (V=3, one block of 5), each revising planner beside its
   inner planner, with the exact mean calls.

On an exact oracle the posterior at a revealed position is a point mass on its
token, so ``edit`` never edits and ``wino`` never re-masks: their tables show
what their extra calls and caps cost, not what revision gains on a learned
model.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from unmask import GenerationConfig, generate, parse_planner
from unmask.oracles import (
    HMMOracle,
    MarkovOracle,
    enumerate_sampler,
    named_oracle,
    oracle_title,
)
from unmask.oracles.pairs import exact_pair_marginals, pair_kl, sample_pair_marginals

G = 32
MAX_DISTANCE = 8
BUDGETS = (2, 3, 4, 5, 6)


def specs(k: int) -> list[tuple[str, str]]:
    """``(label, spec)`` rows at budget ``k``: inner first, then the revising planners over it."""
    rows = [("interleave (inner)", f"interleave(k={k})"),
            ("remask eta=0.1", f"remask(interleave(k={k}), eta=0.1, max_calls={k})"),
            ("remask eta=0.25", f"remask(interleave(k={k}), eta=0.25, max_calls={k})"),
            ("edit over interleave(k-1)", f"edit(interleave(k={k - 1}), threshold=0.9, max_edit_calls=1)"),
            ("wino wide=0.5", f"wino(wide=0.5, narrow=0.9, max_calls={k})")]
    return rows


def measure(oracle, spec: str, samples: int, exact, seed: int) -> tuple[float, float]:
    cfg = GenerationConfig(gen_length=G, block_length=G, planner=spec, sampling={"temperature": 1.0},
                           early_exit=False, seed=seed)
    out = generate(oracle, [[]] * samples, cfg)
    q = sample_pair_marginals(out.generated, oracle.num_tokens, MAX_DISTANCE)
    return float(out.nfe_per_row.double().mean()), pair_kl(q, exact)


def pair_tables(samples: int, seed: int) -> list[str]:
    lines = []
    for name in ("markov1", "markov2", "hmm"):
        oracle = named_oracle(name, 0)
        exact = exact_pair_marginals(oracle, G, MAX_DISTANCE)
        truth = oracle.sample(samples, G, torch.Generator().manual_seed(seed))
        floor = pair_kl(sample_pair_marginals(truth, oracle.num_tokens, MAX_DISTANCE), exact)
        lines += [f"{oracle_title(name)}: pair KL (nats per pair) [mean calls per block]; floor {floor:.4f}", "",
                  "| planner | " + " | ".join(f"K={k}" for k in BUDGETS) + " |",
                  "|---|" + "---:|" * len(BUDGETS)]
        cells: dict[str, list[str]] = {}
        for k in BUDGETS:
            for label, spec in specs(k):
                calls, value = measure(oracle, spec, samples, exact, seed)
                cells.setdefault(label, []).append(f"{value:.4f} [{calls:.2f}]")
        lines += [f"| {label} | " + " | ".join(row) + " |" for label, row in cells.items()] + [""]
    return lines


SMALL = {"markov1": lambda: MarkovOracle(3, order=1, concentration=0.5, seed=1),
         "markov2": lambda: MarkovOracle(3, order=2, concentration=0.5, seed=2),
         "hmm": lambda: HMMOracle(3, 3, persistence=0.8, concentration=0.5, seed=3)}
EXACT_ROWS = ["dilated(skip_exp=0)", "edit(dilated(skip_exp=0), threshold=0.9)",
              "remask(dilated(skip_exp=0), eta=0.5, max_calls=3)", "remask(dilated(skip_exp=0), eta=0.5, max_calls=4)",
              "stable(dilated(skip_exp=0), window=2)",
              "interleave(k=3)", "remask(interleave(k=3), eta=0.34, max_calls=3)",
              "remask(interleave(k=3), eta=0.34, max_calls=3, score='current')",
              "threshold(tau=0.5)", "wino(wide=0.5, narrow=0.9)", "wino(wide=0.5, narrow=0.9, max_calls=2)",
              "remask(threshold(tau=0.5), eta=0.5, max_calls=4)", "stable(threshold(tau=0.5), window=2, tau=0.3)",
              "edit(threshold(tau=0.5), threshold=0.9)"]
SMALL_G = 5


def exact_table() -> list[str]:
    lines = [f"Exact KL(q || p) per token by enumeration [exact mean calls], V=3, one block of {SMALL_G}:", "",
             "| planner | Markov order 1 | Markov order 2 | HMM |", "|---|---:|---:|---:|"]
    for spec in EXACT_ROWS:
        cells = []
        for make in SMALL.values():
            law = enumerate_sampler(make(), parse_planner(spec), SMALL_G, SMALL_G)
            cells.append(f"{law.kl:.4f} [{law.expected_nfe:.2f}]")
        lines.append(f"| `{spec}` | " + " | ".join(cells) + " |")
    return lines + [""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1024, help="unconditional blocks per planner (default 1024)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="markdown file to write (default: print only)")
    args = parser.parse_args(argv)
    if args.samples < 2:
        raise SystemExit(f"--samples must be an int >= 2, got {args.samples}")
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    lines = ["# Revising planners on exact oracles", ""] + exact_table() + pair_tables(args.samples, args.seed)
    lines.append(f"{args.samples} samples per planner, seed {args.seed}, one thread: {time.perf_counter() - t0:.0f} s.")
    text = "\n".join(lines) + "\n"
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
