"""Accuracy against NFE on the bundled tiny-arith model: every planner on 1,000 held-out problems.

Greedy decoding (temperature 0) of 32 generated tokens (chain of thought,
final answer, EOS padding) with: one token per call (the reference); DUS
(``Dilated``) with blocks of 4, 8, 16 and 32; top-k by confidence, margin,
entropy and random with DUS's per-call counts; EB-Sampler and confidence
threshold sweeps; and their dilated-spacing hybrids (``Spaced``). Reports
answer accuracy with a 95% Wilson interval, exact match of the whole chain of
thought, mean NFE per problem and generated tokens per second, and the call
at which the final-answer digits were revealed.
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from ..config import GenerationConfig
from ..output import FILLED
from ..planners import EB, TOPK_SCORES, Dilated, Planner, Spaced, Threshold, TopK
from ..progress import make_progress
from ..tiny import GEN_LENGTH, heldout, load_tiny, solve
from . import write_report
from .args import TINY_FULL, TINY_QUICK, output_dir, quick_defaults
from .args import add_tiny_arguments as add_arguments


@dataclass(frozen=True)
class Setting:
    family: str
    setting: str
    planner: Planner
    block_length: int = GEN_LENGTH


@dataclass(frozen=True)
class Row:
    family: str
    setting: str
    block_length: int
    n: int
    acc: float
    lo: float  # 95% Wilson interval of the answer accuracy
    hi: float
    exact: float
    nfe: float  # mean denoiser calls per problem
    tokens_per_s: float
    answer_call: float  # mean (1-based) call, within the row's calls, revealing the final-answer digits
    answer_last: float  # share of final-answer digits revealed in the row's last call


@dataclass
class TinyResult:
    rows: list[Row]
    n: int
    seconds: float
    files: list[Path] = field(default_factory=list)


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (95% for z = 1.96)."""
    if n < 1:
        raise ValueError(f"n must be a positive int, got {n}")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def tiny_settings(quick: bool = False) -> list[Setting]:
    """The planners of the benchmark (``quick``: a handful, for tests and smoke runs)."""
    s = [Setting("one per call", "confidence, 32 calls", TopK(score="confidence", steps=GEN_LENGTH))]
    s += [Setting("DUS", f"B={b}", Dilated(), b) for b in ((8, 32) if quick else (4, 8, 16, 32))]
    scores = ("confidence", "random") if quick else TOPK_SCORES
    s += [Setting(f"top-k {sc}", "DUS counts, B=32", TopK(score=sc, counts="dilated")) for sc in scores]
    if quick:
        return s + [Setting("EB", "gamma=1", EB(gamma=1.0)), Setting("threshold", "tau=0.9", Threshold(tau=0.9))]
    s += [Setting("EB", f"gamma={g}", EB(gamma=g)) for g in (0.1, 1.0, 4.0, 16.0)]
    s += [Setting("threshold", f"tau={t}", Threshold(tau=t)) for t in (0.95, 0.9, 0.7, 0.5)]
    s += [Setting("spaced EB", f"gamma={g}", Spaced(EB(gamma=g))) for g in (4.0, 16.0)]
    s += [Setting("spaced threshold", f"tau={t}", Spaced(Threshold(tau=t))) for t in (0.7, 0.5)]
    return s


def answer_reveal(reveal_call: torch.Tensor, answers: list[str]) -> tuple[float, float]:
    """``(mean 1-based call, share in the last call)`` of the reference final-answer digits.

    ``reveal_call [N, G]`` holds global calls; each row's calls are counted from its own first call.
    """
    calls, last = [], []
    for row, ans in zip(reveal_call.tolist(), answers):
        real = [c for c in row if c != FILLED]
        first, final = min(real), max(real)
        for pos in range(ans.rfind("A:") + 2, len(ans)):
            c = row[pos]
            if c == FILLED:
                continue
            calls.append(c - first + 1)
            last.append(c == final)
    if not calls:  # every answer position was filled after an early exit
        return float("nan"), float("nan")
    return sum(calls) / len(calls), sum(last) / len(last)


def measure(denoiser, problems, s: Setting, batch_size: int) -> Row:
    """Run one setting on every problem and score it."""
    config = GenerationConfig(gen_length=GEN_LENGTH, block_length=s.block_length, planner=s.planner, seed=0)
    res = solve(denoiser, problems, config, batch_size=batch_size, keep=True)
    n = res["n"]
    lo, hi = wilson(round(res["answer_acc"] * n), n)
    call, last = answer_reveal(res["reveal_call"], [p.answer for p in problems])
    return Row(s.family, s.setting, s.block_length, n, res["answer_acc"], lo, hi, res["exact_match"],
               res["mean_nfe"], res["tokens_per_s"], call, last)


def run_tiny_bench(n: int = 1000, out_dir: str | Path | None = None, batch_size: int = 250,
                   quick: bool = False, progress: bool = True) -> TinyResult:
    """Run every setting on the first ``n`` held-out test problems; write the report into ``out_dir``.

    ``out_dir=None`` writes nothing. Files: ``tiny_accuracy.md`` and ``tiny_accuracy.png``.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    denoiser, _ = load_tiny()
    problems = heldout(n, "test")
    settings = tiny_settings(quick)
    rows: list[Row] = []
    t0 = time.perf_counter()
    with make_progress(transient=True) as bar:
        task = bar.add_task("tiny bench", total=len(settings), visible=progress)
        for s in settings:
            rows.append(measure(denoiser, problems, s, batch_size))
            bar.advance(task)
    result = TinyResult(rows, n, time.perf_counter() - t0)
    if out_dir is not None:
        from ..tiny.report import plot_tiny, render_tiny

        result.files = write_report(out_dir, "tiny_accuracy", render_tiny(result), lambda path: plot_tiny(result, path))
    return result


def print_tiny(result: TinyResult, console: Console | None = None) -> None:
    """The table, with rich."""
    console = console or Console()
    table = Table(title=f"tiny-arith, {result.n} held-out problems, greedy")
    for col in ("planner", "setting", "answer acc [95% CI]", "exact", "NFE", "tok/s", "answer call"):
        table.add_column(col, justify="left" if col in ("planner", "setting") else "right")
    for r in result.rows:
        table.add_row(r.family, r.setting, f"{100 * r.acc:.1f} [{100 * r.lo:.1f}, {100 * r.hi:.1f}]",
                      f"{100 * r.exact:.1f}", f"{r.nfe:.1f}", f"{r.tokens_per_s:.0f}", f"{r.answer_call:.1f}/{r.nfe:.0f}")
    console.print(table)
    if result.files:
        console.print("wrote " + ", ".join(map(str, result.files)))


def main(args: argparse.Namespace) -> int:
    """Run the benchmark from parsed arguments and print it."""
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be a positive int, got {args.threads}")
        torch.set_num_threads(args.threads)
    quick_defaults(args, TINY_FULL, TINY_QUICK)
    print_tiny(run_tiny_bench(args.n, output_dir(args.out, "tiny"), args.batch_size, args.quick))
    return 0


def register_tiny(bench_subparsers: argparse._SubParsersAction) -> None:
    """Add ``tiny`` to the ``unmask bench`` sub-commands (wire into ``cli/bench.py``'s ``BENCHMARKS``)."""
    p = bench_subparsers.add_parser("tiny", help="accuracy vs NFE of every planner on the bundled tiny-arith model")
    add_arguments(p)
    p.set_defaults(func=main)


__all__ = ["Row", "Setting", "TinyResult", "register_tiny", "run_tiny_bench", "tiny_settings", "wilson"]
