"""The oracle frontier: path KL against NFE for every planner, on exact oracles.

For three oracles with exact posteriors (first- and second-order Markov
chains, a slow-mixing HMM) every planner runs over a range of budgets at
temperature 1. Cost is the mean number of denoiser calls per 256 generated
tokens; error is the mean path KL per token (:func:`unmask.oracles.path_kl`)
with its standard error. For blocks of 8, :func:`unmask.oracles.schedule_kl`
scores every fixed schedule with DUS's number of calls exactly, giving the
best possible fixed schedule next to DUS (arXiv 2506.19037).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from ..config import GenerationConfig
from ..loop import generate
from ..oracles import ChainOracle, HMMOracle, MarkovOracle, ordered_partitions, path_kl, schedule_kl
from ..planners import EB, TOPK_SCORES, Dilated, Planner, Spaced, Threshold, TopK
from ..progress import make_progress
from . import write_report
from ..schedules import dilated_levels

REF_TOKENS = 256  # NFE is reported per this many generated tokens
ADAPTIVE_BLOCK = 32  # block length of EB, threshold and their spaced variants
DRAWN = ("top-k confidence", "threshold", "spaced threshold")  # selection depends on the drawn tokens
Levels = tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class Setting:
    family: str
    setting: str
    planner: Planner
    block_length: int


@dataclass(frozen=True)
class Row:
    oracle: str
    family: str
    setting: str
    nfe: float  # mean denoiser calls per REF_TOKENS generated tokens
    kl: float  # mean path KL, nats per token
    kl_se: float  # its standard error


@dataclass(frozen=True)
class ScheduleSearch:
    oracle: str
    context: str
    block_length: int
    calls: int
    schedules: int
    dus_levels: Levels
    dus_kl: float
    dus_rank: int  # 1 = best
    best_levels: Levels
    best_kl: float
    second_levels: Levels  # the best schedule other than the best one
    second_kl: float


@dataclass
class FrontierResult:
    rows: list[Row]
    searches: list[ScheduleSearch]
    samples: int
    gen_length: int
    seed: int
    seconds: float = 0.0
    files: list[Path] = field(default_factory=list)


def frontier_oracles(seed: int = 0) -> dict[str, ChainOracle]:
    """The three oracles of the frontier, by display name."""
    return {
        "Markov order 1 (V=16, Dirichlet 0.3)": MarkovOracle(16, order=1, concentration=0.3, seed=seed),
        "Markov order 2 (V=8, Dirichlet 0.3)": MarkovOracle(8, order=2, concentration=0.3, seed=seed),
        "HMM (8 states, V=16, persistence 0.95)": HMMOracle(8, 16, persistence=0.95, concentration=0.3, seed=seed),
    }


def frontier_settings(gen_length: int, quick: bool = False) -> list[Setting]:
    """Every planner family over its budget range; ``quick`` keeps two points per family."""
    blocks = [b for b in ((8, 32) if quick else (4, 8, 16, 32, 64)) if gen_length % b == 0]
    gammas = (0.5, 2.0) if quick else (0.1, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
    taus = (0.7, 0.9) if quick else (0.3, 0.5, 0.7, 0.8, 0.9, 0.95)
    ab = ADAPTIVE_BLOCK
    out = [Setting("one per call", f"B={ab}", TopK(score="random", steps=gen_length), ab)]
    out += [Setting("DUS", f"B={b}", Dilated(), b) for b in blocks]
    for score in TOPK_SCORES:
        out += [Setting(f"top-k {score}", f"B={b}", TopK(score=score, counts="dilated"), b) for b in blocks]
    out += [Setting("EB", f"gamma={g:g} bits", EB(gamma=g), ab) for g in gammas]
    out += [Setting("spaced EB", f"gamma={g:g} bits", Spaced(EB(gamma=g), start_stride=8), ab) for g in gammas]
    out += [Setting("threshold", f"tau={t:g}", Threshold(tau=t), ab) for t in taus]
    out += [Setting("spaced threshold", f"tau={t:g}", Spaced(Threshold(tau=t), start_stride=8), ab) for t in taus]
    return out


def measure(oracle: ChainOracle, s: Setting, samples: int, gen_length: int, seed: int) -> tuple[float, float, float]:
    """(NFE per REF_TOKENS, mean path KL, its standard error) of unconditional samples at temperature 1."""
    cfg = GenerationConfig(
        gen_length=gen_length, block_length=s.block_length, planner=s.planner,
        sampling={"temperature": 1.0}, early_exit=False, seed=seed,
    )
    prompts: list[list[int]] = [[] for _ in range(samples)]
    out = generate(oracle, prompts, cfg)
    kl = path_kl(oracle, out, prompts)  # [samples]
    nfe = float(out.nfe_per_row.double().mean()) * REF_TOKENS / gen_length
    return nfe, float(kl.mean()), float(kl.std() / math.sqrt(samples))


def search_schedules(
    name: str, oracle: MarkovOracle, block_length: int, context: str, advance: Callable[[], None] | None = None
) -> ScheduleSearch:
    """Score every fixed schedule with DUS's call count by its exact expected path KL (schedule_kl)."""
    dus = tuple(tuple(level) for level in dilated_levels(block_length))
    values: dict[Levels, float] = {}
    for levels in ordered_partitions(block_length, len(dus)):
        values[levels] = schedule_kl(oracle, levels, context)
        if advance is not None:
            advance()
    best, second = sorted(values, key=values.__getitem__)[:2]
    rank = 1 + sum(v < values[dus] - 1e-12 for v in values.values())
    return ScheduleSearch(
        name, context, block_length, len(dus), len(values), dus, values[dus], rank,
        best, values[best], second, values[second],
    )


def run_oracle_frontier(
    samples: int = 128,
    gen_length: int = 256,
    seed: int = 0,
    quick: bool = False,
    out_dir: str | Path | None = "benchmarks",
    progress: bool = True,
) -> FrontierResult:
    """Run the frontier; write ``oracle_frontier.md`` and ``.png`` into ``out_dir`` (None: no files).

    Runs with one torch thread (restored after): the oracles' many tiny ops
    are several times slower when threads contend on a shared CPU.
    """
    if not isinstance(samples, int) or samples < 2:
        raise ValueError(f"samples must be an int >= 2 (standard errors need two), got {samples!r}")
    if not isinstance(gen_length, int) or gen_length < ADAPTIVE_BLOCK or gen_length % ADAPTIVE_BLOCK:
        raise ValueError(f"gen_length must be a positive multiple of {ADAPTIVE_BLOCK}, got {gen_length!r}")
    t0, threads = time.perf_counter(), torch.get_num_threads()
    oracles, settings = frontier_oracles(seed), frontier_settings(gen_length, quick)
    search_block, contexts = (4, ("start",)) if quick else (8, ("start", "stationary"))
    result = FrontierResult([], [], samples, gen_length, seed)
    bar = make_progress(transient=True)
    bar.disable = not progress
    torch.set_num_threads(1)
    try:
        with bar:
            runs = bar.add_task("oracle frontier", total=len(oracles) * len(settings))
            for name, oracle in oracles.items():
                for s in settings:
                    bar.update(runs, description=f"{name.split(' (')[0]}: {s.family} {s.setting}")
                    result.rows.append(Row(name, s.family, s.setting, *measure(oracle, s, samples, gen_length, seed)))
                    bar.advance(runs)
            name, first = next(iter(oracles.items()))
            assert isinstance(first, MarkovOracle)
            task = bar.add_task(f"all fixed schedules, B={search_block}", total=None)
            for ctx in contexts:
                result.searches.append(search_schedules(name, first, search_block, ctx, lambda: bar.advance(task)))
    finally:
        torch.set_num_threads(threads)
    result.seconds = time.perf_counter() - t0
    if out_dir is not None:
        result.files = write_report(out_dir, "oracle_frontier", render_markdown(result),
                                    lambda path: plot_frontier(result, path))
    return result


def _cells(r: Row) -> list[str]:
    """planner, setting, NFE, KL ± se as printed (exact samplers print 0, not -0)."""
    kl, se = (("0.0000" if (t := f"{x:.4f}") == "-0.0000" else t) for x in (r.kl, r.kl_se))
    return [r.family + (" †" if r.family in DRAWN else ""), r.setting, f"{r.nfe:.1f}", f"{kl} ± {se}"]


def _levels_str(levels: Levels) -> str:
    return " ".join("{" + ",".join(map(str, level)) + "}" for level in levels)


def render_markdown(result: FrontierResult) -> str:
    """The frontier as markdown: one table per oracle, then the fixed-schedule search."""
    lines = [
        "# Oracle frontier: path KL against NFE",
        "",
        f"Generated by `python benchmarks/oracle_frontier.py` (or `unmask bench oracle`): {result.samples} "
        f"unconditional sequences of {result.gen_length} tokens per run, temperature 1, seed {result.seed}, "
        f"{result.seconds:.0f} s on CPU.",
        "",
        f"*NFE/{REF_TOKENS}*: mean denoiser calls per {REF_TOKENS} generated tokens. *KL/token*: mean path KL "
        "(nats per token, ± standard error over sequences) of the sampler against the exact sequence distribution "
        "(`unmask.oracles.path_kl`); one token per call is exact (0). DUS and top-k use DUS's per-call counts "
        f"(log2 B calls per block of B); EB, threshold and their spaced variants (start_stride=8) use blocks of "
        f"{ADAPTIVE_BLOCK}. † the planner picks positions by the confidence of the drawn tokens: the estimate "
        "then measures only the error of sampling them independently, not the selection bias, and can be "
        "slightly negative.",
    ]
    for name in dict.fromkeys(r.oracle for r in result.rows):
        lines += ["", f"## {name}", "", f"| planner | setting | NFE/{REF_TOKENS} | KL/token ± se |", "|---|---|---:|---:|"]
        lines += ["| " + " | ".join(_cells(r)) + " |" for r in result.rows if r.oracle == name]
    if result.searches:
        s0 = result.searches[0]
        lines += [
            "",
            f"## Best fixed schedule for blocks of {s0.block_length} (exact)",
            "",
            f"Every ordered partition of the {s0.block_length} offsets into DUS's {s0.calls} calls "
            f"({s0.schedules} schedules) scored by its exact expected path KL on the first oracle "
            "(`unmask.oracles.schedule_kl`: per call and gap between revealed tokens, the KL between the product of "
            "the marginals and the joint of the tokens revealed together, a chain of bridge transitions, averaged "
            "over the sampler's exact joint of the gap's ends; no sampling). *start*: an unconditional sequence of "
            f"{s0.block_length} tokens; *stationary*: a block after one token drawn from the stationary distribution. "
            "Offsets are 0-based.",
            "",
            "| context | DUS levels | DUS KL/token | DUS rank | best levels | best KL/token | runner-up | its KL/token |",
            "|---|---|---:|---:|---|---:|---|---:|",
        ]
        for s in result.searches:
            lines.append(
                f"| {s.context} | {_levels_str(s.dus_levels)} | {s.dus_kl:.3e} | {s.dus_rank} / {s.schedules} | "
                f"{_levels_str(s.best_levels)} | {s.best_kl:.3e} | {_levels_str(s.second_levels)} | {s.second_kl:.3e} |"
            )
    return "\n".join(lines) + "\n"


STYLES = {  # family: (marker, line style)
    "one per call": ("*", ""), "DUS": ("o", "-"), "top-k confidence": ("s", "--"), "top-k margin": ("D", "--"),
    "top-k entropy": ("v", "--"), "top-k random": ("x", ":"), "EB": ("^", "-."), "spaced EB": ("^", "-"),
    "threshold": ("<", "-."), "spaced threshold": ("<", "-"),
}


def plot_frontier(result: FrontierResult, path: str | Path) -> None:
    """KL/token against NFE/256 (log x), one panel per oracle, one style per planner family (Agg backend)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(dict.fromkeys(r.oracle for r in result.rows))
    fig = Figure(figsize=(6 * len(names), 5.5), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for ax, name in zip(axes, names):
        for family, (marker, ls) in STYLES.items():
            pts = sorted((r.nfe, r.kl, r.kl_se) for r in result.rows if r.oracle == name and r.family == family)
            if pts:
                x, y, e = zip(*pts)
                label = family + (" †" if family in DRAWN else "")
                ax.errorbar(x, y, yerr=e, marker=marker, linestyle=ls or "none", label=label, capsize=2, ms=5)
        for s in (s for s in result.searches if s.oracle == name and s.context == "stationary"):
            x = REF_TOKENS / s.block_length * s.calls
            ax.plot([x], [s.best_kl], marker="P", ms=11, color="black", linestyle="none",
                    label=f"best fixed schedule, B={s.block_length} (exact)")
        ax.set_xscale("log")
        ticks = [t for t in (16, 24, 32, 48, 64, 96, 128, 192, 256) if t >= min(r.nfe for r in result.rows) / 1.5]
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set_yscale("symlog", linthresh=1e-3)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(f"NFE per {REF_TOKENS} tokens")
        ax.set_ylabel("path KL (nats / token)")
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=6, fontsize=8)
    fig.suptitle("path KL vs NFE at temperature 1 (lower left is better; † selection by drawn-token confidence)")
    fig.savefig(path, dpi=110)


def print_frontier(result: FrontierResult, console: Console | None = None) -> None:
    """The frontier tables, with rich."""
    console = console or Console()
    for name in dict.fromkeys(r.oracle for r in result.rows):
        table = Table(title=name)
        for col in ("planner", "setting", f"NFE/{REF_TOKENS}", "KL/token ± se"):
            table.add_column(col, justify="left" if col in ("planner", "setting") else "right")
        for r in (r for r in result.rows if r.oracle == name):
            table.add_row(*_cells(r))
        console.print(table)
    for s in result.searches:
        console.print(
            f"B={s.block_length}, {s.context}: DUS {_levels_str(s.dus_levels)} {s.dus_kl:.2e} nats/token "
            f"(rank {s.dus_rank}/{s.schedules}); best {_levels_str(s.best_levels)} {s.best_kl:.2e}, "
            f"runner-up {_levels_str(s.second_levels)} {s.second_kl:.2e}"
        )
    if result.files:
        console.print("wrote " + ", ".join(map(str, result.files)))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options shared by ``unmask bench oracle`` and ``benchmarks/oracle_frontier.py``."""
    parser.add_argument("--samples", type=int, default=128, help="sequences per run (default 128)")
    parser.add_argument("--gen-length", type=int, default=256, help="tokens per sequence, a multiple of 32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="two points per planner family instead of the full sweep")
    parser.add_argument("--out", default="benchmarks", help="folder for oracle_frontier.md and .png")


def main(args: argparse.Namespace) -> int:
    """Run the frontier from parsed arguments and print it."""
    result = run_oracle_frontier(args.samples, args.gen_length, args.seed, args.quick, args.out)
    print_frontier(result)
    return 0


__all__ = ["FrontierResult", "Row", "ScheduleSearch", "run_oracle_frontier"]
