"""Exact KL against calls per canvas of uniform-state commit rules on small oracles; writes markdown.

    python benchmarks/uniform_oracle.py --out benchmarks/uniform_oracle.md

Every law is exact (``unmask.oracles.uniform_law.uniform_law``: enumeration over every re-draw of the
uncommitted positions and every draw of the committed ones), temperature 1, one unconditional canvas of
``--length`` tokens on the Markov chain (order 1) and the HMM of ``tests/test_oracle_exact.py`` (V = 3),
under the three views of the denoiser (told the commits, told a matched level, blind). The entropy-bound
rule is adaptive: at ``k`` calls it is given its best bound of the sweep among those whose expected calls
are at most ``k``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from unmask.oracles import HMMOracle, MarkovOracle
from unmask.oracles.uniform import UniformOracle
from unmask.oracles.uniform_law import VIEWS, uniform_law
from unmask.oracles.uniform_rules import (
    EntropyBoundCommit,
    TopKCommit,
    dilated_commit,
    dus_commit,
    interleave_commit,
)

ORACLES = {
    "Markov order 1 (V=3, Dirichlet 0.5, seed 1)": lambda: MarkovOracle(3, order=1, concentration=0.5, seed=1),
    "HMM (3 states, V=3, persistence 0.8, Dirichlet 0.5, seed 3)": lambda: HMMOracle(3, 3, 0.8, 0.5, seed=3),
}
BOUNDS = (0.3, 0.45, 0.6, 0.8, 1.0, 1.3, 1.7, 2.2, 3.0, 5.0)
VIEW_TEXT = {"told": "told the commits (eps 0 / 1)", "matched": "told a shared level eps = uncommitted / L",
             "blind": "blind (mixture over 20 levels 0.05..1)"}


def fmt(kl: float) -> str:
    """A KL to 4 decimals; float64 rounding around an exact 0 prints as 0."""
    return f"{0.0 if abs(kl) < 1e-12 else kl:.4f}"


def best_within(sweep: list[tuple[float, float, float]], calls: int) -> tuple[float, str] | None:
    """EB's lowest KL over the sweep's ``(bound, expected calls, kl)`` points with at most ``calls`` expected calls."""
    ok = [t for t in sweep if t[1] <= calls + 1e-9]
    if not ok:
        return None
    b, c, kl = min(ok, key=lambda t: t[2])
    return kl, f"bound {b:g}, {c:.2f} calls"


def run(length: int) -> str:
    lines = [f"# Uniform-state commit rules: exact KL per token against calls per canvas (L = {length})", "",
             f"Command: `python benchmarks/uniform_oracle.py --length {length} --out benchmarks/uniform_oracle.md`", ""]
    summary = []
    for title, make in ORACLES.items():
        u = UniformOracle(make())
        for view in VIEWS:
            t0 = time.perf_counter()
            sweep = []
            for b in BOUNDS:
                law = uniform_law(u, EntropyBoundCommit(b), length, view)
                sweep.append((b, law.expected_calls, law.kl))
            rows = []
            dus = dus_commit(length)
            dus_kl = uniform_law(u, dus, length, view).kl if len(dus.groups) > 1 else float("nan")
            for k in range(2, length):
                dil = uniform_law(u, dilated_commit(length, k), length, view).kl
                inter = uniform_law(u, interleave_commit(length, k), length, view).kl
                conf = uniform_law(u, TopKCommit.linear(length, k, "confidence"), length, view).kl
                ent = uniform_law(u, TopKCommit.linear(length, k, "entropy"), length, view).kl
                eb = best_within(sweep, k)
                rows.append((k, dil, inter, conf, ent, eb))
                spaced = [(dil, "dilated"), (inter, "interleave")]
                if len(dus.groups) == k:
                    spaced.append((dus_kl, "DUS"))
                if eb is not None:
                    summary.append((title, view, k, *min(spaced), eb[0]))
            lines += [f"## {title}, {VIEW_TEXT[view]}", "",
                      "| calls | dilated | interleave | top-k confidence | top-k entropy | entropy bound, best at <= calls |",
                      "|---:|---:|---:|---:|---:|---:|"]
            for k, dil, inter, conf, ent, eb in rows:
                ebs = "n/a" if eb is None else f"{fmt(eb[0])} ({eb[1]})"
                lines.append(f"| {k} | {fmt(dil)} | {fmt(inter)} | {fmt(conf)} | {fmt(ent)} | {ebs} |")
            single = uniform_law(u, TopKCommit.linear(length, length, "entropy"), length, view).kl
            dus_text = f"One position per call ({length} calls): {fmt(single)}. "
            dus_text += f"DUS `{dus!r}` ({len(dus.groups)} calls): {fmt(dus_kl)}. " if len(dus.groups) > 1 else ""
            lines += ["", dus_text + "Entropy-bound sweep "
                      "(bound: expected calls, KL): "
                      + ", ".join(f"{b:g}: {c:.2f}, {fmt(kl)}" for b, c, kl in sweep)
                      + f". ({time.perf_counter() - t0:.0f} s)", ""]
    lines += ["## The best spaced order (dilated, interleave, DUS) against the entropy bound at equal calls", "",
              "| oracle | view | calls | best spaced order | its KL | entropy bound | better |",
              "|---|---|---:|---|---:|---:|---|"]
    for title, view, k, kl, name, eb in summary:
        better = name if kl < eb else "entropy bound"
        lines.append(f"| {title.split(' (')[0]} | {view} | {k} | {name} | {fmt(kl)} | {fmt(eb)} | {better} |")
    lines += ["", f"CPU time of the run: {time.process_time():.0f} s (one thread)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=6, help="generated tokens per canvas (3**length sequences)")
    parser.add_argument("--out", type=Path, default=None, help="markdown file to write (default: print)")
    args = parser.parse_args(argv)
    if not 3 <= args.length <= 7:
        parser.error(f"--length must be in [3, 7] (the exact law enumerates 4**length states), got {args.length}")
    torch.set_num_threads(1)
    text = run(args.length)
    if args.out is None:
        print(text)
    else:
        args.out.write_text(text)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
