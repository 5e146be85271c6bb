"""Exact KL and pair KL against calls per canvas of every unmask planner as a uniform-state commit rule; writes markdown.

    python benchmarks/uniform_oracle.py --out benchmarks/uniform_oracle.md
    python benchmarks/uniform_oracle.py --quick          # a 4-token canvas

Every planner runs through ``unmask.oracles.PlannerCommit`` (the planner's reveal is the commit set); the
hand-written entropy-bound rule (DiffusionGemma's acceptance, ``EntropyBoundCommit``) runs beside them. Each
law is exact (``uniform_law``: every re-draw of the uncommitted positions, every draw of the committed ones,
and every joint draw or order where the planner reads them), temperature 1, one unconditional canvas of
``--length`` tokens on the Markov chain (order 1) and the HMM of ``tests/test_oracle_exact.py`` (V = 3), under
the three views (told the commits, told a matched level, blind). The pair KL is sampled: the mean pairwise
KL of ``--samples`` runs of ``sample_uniform`` against the chain's exact pair marginals, minus the same
statistic for as many exact samples (``pair_divergence(...).excess``). Adaptive planners (threshold, EB,
factor, spaced, the entropy bound) run over a grid of settings; at ``k`` calls each family shows its best
setting whose expected calls are at most ``k``, and so do fixed schedules (calls per canvas at most ``k``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from unmask.oracles import HMMOracle, MarkovOracle, pair_divergence
from unmask.oracles.uniform import UniformOracle
from unmask.oracles.uniform_law import VIEWS, uniform_law
from unmask.oracles.uniform_planner import PlannerCommit, uniform_estimators
from unmask.oracles.uniform_rules import EntropyBoundCommit
from unmask.oracles.uniform_sample import sample_uniform
from unmask.tune.candidates import default_candidates

ORACLES = {
    "Markov order 1 (V=3, Dirichlet 0.5, seed 1)": lambda: MarkovOracle(3, order=1, concentration=0.5, seed=1),
    "HMM (3 states, V=3, persistence 0.8, Dirichlet 0.5, seed 3)": lambda: HMMOracle(3, 3, 0.8, 0.5, seed=3),
}
BOUNDS = (0.3, 0.45, 0.6, 0.8, 1.0, 1.3, 1.7, 2.2, 3.0, 5.0)  # the entropy-bound rule's sweep (nats)
FACTORS = (0.5, 1.0, 2.0, 4.0)
EXTRA = ("binary", "dilated(base=2)")
VIEW_TEXT = {"told": "told the commits (eps 0 / 1)", "matched": "told a shared level eps = uncommitted / L",
             "blind": "blind (mixture over 20 levels 0.05..1)"}
ENTROPY_BOUND = "entropy bound (DiffusionGemma)"


def fmt(kl: float) -> str:
    """A KL to 4 decimals; float64 rounding around an exact 0 prints as 0."""
    return f"{0.0 if abs(kl) < 5e-13 else kl:.4f}"


def specs(length: int) -> list[tuple[str, str]]:
    """``(family, spec)`` of every commit planner: the ``unmask tune`` candidates at each budget, binary, DUS, factor."""
    out: dict[str, str] = {}
    for budget in range(2, length + 1):
        for c in default_candidates(budget, length, length):
            out.setdefault(c.spec, c.family)
    for spec in EXTRA:
        out.setdefault(spec, "DUS" if spec.startswith("dilated") else "binary")
    for f in FACTORS:
        out[f"factor(factor={f})"] = "factor"
    return [(family, spec) for spec, family in out.items()]


def measure(u: UniformOracle, rule, length: int, view: str, samples: int, seed: int) -> dict:
    law = uniform_law(u, rule, length, view)
    runs = sample_uniform(u, rule, length, samples, view, generator=torch.Generator().manual_seed(seed))
    pair = pair_divergence(u.chain, runs.sequences, max_distance=length - 1, floor_seed=seed)
    return {"calls": law.expected_calls, "kl": law.kl, "path": law.expected_path_kl, "pair": pair.excess,
            "label": uniform_estimators(rule, view)["path_kl"]}


def run(length: int, samples: int) -> str:
    cmd = f"python benchmarks/uniform_oracle.py --length {length} --samples {samples} --out benchmarks/uniform_oracle.md"
    lines = [f"# Uniform-state commit planners: exact KL and pair KL per token against calls per canvas (L = {length})",
             "", f"Command: `{cmd}`", "",
             ("Cells: exact KL / sampled pair-KL excess (nats per token / per pair), the family's best setting with "
              "at most that many (expected) calls; `-`: none. Per-setting lists with E[path KL] and its label after "
              "each table."), ""]
    summary = []
    planners, refused = [], []
    for family, spec in specs(length):
        try:  # revising candidates (edit, wino, remask, stable) are no commit rules: listed, not measured
            planners.append((family, spec, PlannerCommit(spec, length)))
        except ValueError as err:
            refused.append(f"`{spec}` ({str(err).split(';')[0]})")
    calls = list(range(2, length + 1))
    for o, (title, make) in enumerate(ORACLES.items()):
        u = UniformOracle(make())
        for view in VIEWS:
            t0 = time.perf_counter()
            res = [(family, spec, measure(u, rule, length, view, samples, 1)) for family, spec, rule in planners]
            res += [(ENTROPY_BOUND, f"bound={b:g}", measure(u, EntropyBoundCommit(b), length, view, samples, 1))
                    for b in BOUNDS]
            families = list(dict.fromkeys(f for f, _, _ in res))
            lines += [f"## {title}, {VIEW_TEXT[view]}", "",
                      "| planner | " + " | ".join(f"{k} calls" for k in calls) + " |",
                      "|---|" + "---:|" * len(calls)]
            for family in families:
                cells = []
                for k in calls:
                    ok = [(m["kl"], spec, m) for f, spec, m in res if f == family and m["calls"] <= k + 1e-9]
                    if not ok:
                        cells.append("-")
                        continue
                    kl, spec, m = min(ok, key=lambda t: t[0])
                    cells.append(f"{fmt(kl)} / {fmt(m['pair'])}")
                    if family in ("DUS", ENTROPY_BOUND):
                        summary.append((o, title, view, k, family, kl, spec))
                lines.append(f"| {family} | " + " | ".join(cells) + " |")
            lines += ["", ("<details><summary>every setting: spec, expected calls, exact KL, E[path KL] "
                           "(label), pair excess</summary>"), ""]
            lines += [f"- `{spec}`: {m['calls']:.2f}, {fmt(m['kl'])}, {fmt(m['path'])} ({m['label']}), {fmt(m['pair'])}"
                      for _, spec, m in res]
            lines += ["", f"</details> ({time.perf_counter() - t0:.0f} s)", ""]
    lines += ["## DUS against the entropy bound at equal calls (each at its best setting within the calls)", "",
              "| oracle | view | calls | DUS (spec) | entropy bound (bound) | better |", "|---|---|---:|---|---|---|"]
    best = {}
    for o, title, view, k, family, kl, spec in summary:
        best[(o, title, view, k, family)] = (kl, spec)
    for (o, title, view, k, family), (kl, spec) in best.items():
        if family != "DUS" or (o, title, view, k, ENTROPY_BOUND) not in best:
            continue
        eb, eb_spec = best[(o, title, view, k, ENTROPY_BOUND)]
        win = "tie" if abs(kl - eb) < 1e-12 else ("DUS" if kl < eb else "entropy bound")
        lines.append(f"| {title.split(' (')[0]} | {view} | {k} | {fmt(kl)} (`{spec}`) | {fmt(eb)} ({eb_spec}) | {win} |")
    if refused:
        lines += ["", "Not measured (refused as commit rules): " + ", ".join(refused) + "."]
    lines += ["", f"CPU time of the run: {time.process_time():.0f} s (one thread)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=5, help="generated tokens per canvas (3**length sequences)")
    parser.add_argument("--samples", type=int, default=2000, help="sampled runs per planner for the pair KL")
    parser.add_argument("--quick", action="store_true", help="a 4-token canvas (overrides --length)")
    parser.add_argument("--out", type=Path, default=None, help="markdown file to write (default: print)")
    args = parser.parse_args(argv)
    length = 4 if args.quick else args.length
    if not 3 <= length <= 6:
        parser.error(f"--length must be in [3, 6] (the exact law enumerates 4**length states), got {length}")
    if args.samples < 2:
        parser.error(f"--samples must be >= 2, got {args.samples}")
    torch.set_num_threads(1)
    text = run(length, args.samples)
    if args.out is None:
        print(text)
    else:
        args.out.write_text(text)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
