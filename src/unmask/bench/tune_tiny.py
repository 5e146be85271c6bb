"""``unmask tune`` on the bundled tiny-arith model, checked with labels after the fact.

For each budget (calls per 32-token block) the tuner picks a planner from
unlabelled validation prompts (``examples/tune/tiny_val.txt``: 128 for
calibration, 128 to report); then every default candidate at that budget is
scored with labels on the first ``n`` held-out *test* problems, so the pick's
accuracy can be set beside the best candidate's. Candidates count as within
the budget when their mean calls per block on the test problems are.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from ..config import GenerationConfig
from ..tiny import GEN_LENGTH, heldout, load_tiny, solve
from ..tiny.evaluate import encode_prompts
from ..tune import TuneConfig, default_candidates, tune
from . import run_calls
from .tiny import wilson

from .args import TUNE_TINY_BUDGETS as BUDGETS
from .args import TUNE_TINY_PROMPTS as PROMPTS
from .args import add_tune_tiny_arguments as add_arguments  # noqa: F401 - benchmarks/tune_tiny.py imports it from here


@dataclass(frozen=True)
class Held:
    spec: str
    family: str
    acc: float
    calls: float  # mean calls per block on the test problems


@dataclass
class BudgetRow:
    budget: int
    pick: str
    pick_agreement: float  # on the report prompts
    tune_seconds: float  # wall time of the tuner
    tune_cpu_seconds: float  # process CPU time of the tuner (all threads)
    held: list[Held]

    @property
    def best(self) -> Held:
        return max((h for h in self.held if h.calls <= self.budget + 1e-9), key=lambda h: h.acc)

    @property
    def picked(self) -> Held:
        return next(h for h in self.held if h.spec == self.pick)

    @property
    def dus(self) -> Held | None:
        return next((h for h in self.held if h.spec == "dilated(base=2, skip_exp=1)"), None)


@dataclass
class TuneTinyResult:
    rows: list[BudgetRow]
    n: int
    threads: int  # torch threads of each tuner run
    files: list[Path] = field(default_factory=list)


def read_prompts(path: Path = PROMPTS) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


@lru_cache(maxsize=1)
def _model() -> tuple[Any, Any]:
    return load_tiny()


def _tune_unit(budget: int, prompts: str, threads: int) -> tuple[str, float, float, float]:
    """The tuner at one budget: (pick, its agreement on the report prompts, wall seconds, CPU seconds)."""
    torch.set_num_threads(threads)
    den, tok = _model()
    ids = encode_prompts(tok, read_prompts(Path(prompts)))
    half = len(ids) // 2
    t0, c0 = time.perf_counter(), time.process_time()
    res = tune(den, ids[:half], ids[half:], default_candidates(budget, GEN_LENGTH, GEN_LENGTH), TuneConfig(budget=budget))
    return res.spec, res.report.agreement or 0.0, time.perf_counter() - t0, time.process_time() - c0


def _held_unit(spec: str, n: int, batch_size: int, threads: int) -> tuple[float, float]:
    """(answer accuracy, mean calls per block) of one planner on the first ``n`` test problems."""
    torch.set_num_threads(threads)
    den, _ = _model()
    cfg = GenerationConfig(gen_length=GEN_LENGTH, block_length=GEN_LENGTH, planner=spec, seed=0)
    r = solve(den, heldout(n, "test"), cfg, batch_size=batch_size)
    return r["answer_acc"], r["mean_nfe"]


def run_tune_tiny(n: int = 1000, budgets: tuple[int, ...] = BUDGETS, prompts: Path = PROMPTS, batch_size: int = 250,
                  jobs: int = 1, threads: int = 2) -> TuneTinyResult:
    """Tune at each budget (``threads`` torch threads each), then score every candidate with labels on ``n`` test problems.

    With ``jobs > 1`` the tuner runs and the candidates' scoring run in that many processes at once.
    """
    cands = {b: default_candidates(b, GEN_LENGTH, GEN_LENGTH) for b in budgets}
    specs = list(dict.fromkeys(c.spec for b in budgets for c in cands[b]))
    units: list[tuple[Any, tuple[Any, ...]]] = [(_tune_unit, (b, str(prompts), threads)) for b in budgets]
    units += [(_held_unit, (spec, n, batch_size, 1 if jobs > 1 else threads)) for spec in specs]
    values = run_calls(units, jobs, f"tuner at {len(budgets)} budgets, {len(specs)} planners on {n} test problems")
    out = {args[0]: v for (_, args), v in zip(units, values)}
    rows = []
    for b in budgets:
        pick, agree, wall, cpu = out[b]
        held = [Held(c.spec, c.family, *out[c.spec]) for c in cands[b]]
        rows.append(BudgetRow(b, pick, agree, wall, cpu, held))
    return TuneTinyResult(rows, n, threads)


def table_rows(result: TuneTinyResult) -> list[list[str]]:
    out = []
    for r in result.rows:
        p, b = r.picked, r.best
        lo, hi = wilson(round(p.acc * result.n), result.n)
        dus = r.dus
        out.append([
            str(r.budget), f"`{r.pick}`", f"{p.calls:.2f}", f"{100 * r.pick_agreement:.1f}",
            f"{100 * p.acc:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]", f"`{b.spec}` {100 * b.acc:.1f}",
            f"{100 * (p.acc - b.acc):+.1f}", "-" if dus is None or dus.calls > r.budget else f"{100 * dus.acc:.1f}",
            f"{r.tune_seconds:.0f} s ({r.tune_cpu_seconds:.0f} s CPU)",
        ])
    return out


HEAD = ["calls/block", "tuner's pick", "its calls (test)", "agreement % (report set)", "held-out accuracy % [95% CI]",
        "best candidate within budget (accuracy %)", "pick - best", "DUS base 2", "tuner time"]


def render_markdown(result: TuneTinyResult) -> str:
    lines = ["| " + " | ".join(HEAD) + " |", "|" + "---:|" * len(HEAD)]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(result)]
    return "\n".join(lines) + "\n"


def print_tune_tiny(result: TuneTinyResult, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title=f"unmask tune on tiny-arith: picks, and accuracy on {result.n} held-out test problems")
    for col in HEAD:
        table.add_column(col, overflow="fold")
    for r in table_rows(result):
        table.add_row(*(c.replace("`", "") for c in r))
    console.print(table)
    for r in result.rows:
        console.print(f"budget {r.budget}: " + ", ".join(f"{h.spec} {100 * h.acc:.1f}% ({h.calls:.2f})"
                                                        for h in sorted(r.held, key=lambda h: -h.acc)), highlight=False)
    if result.files:
        console.print("wrote " + ", ".join(map(str, result.files)))


def main(args: argparse.Namespace) -> int:
    for flag in ("threads", "jobs", "n"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag} must be a positive int, got {getattr(args, flag)}")
    if not Path(args.prompts).is_file():
        raise FileNotFoundError(f"--prompts {args.prompts!r} does not exist")
    result = run_tune_tiny(args.n, tuple(args.budgets), Path(args.prompts), jobs=args.jobs, threads=args.threads)
    if args.out is not None:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "tune_tiny.md").write_text(render_markdown(result))
        result.files.append(out / "tune_tiny.md")
    print_tune_tiny(result)
    return 0
