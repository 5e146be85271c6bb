"""The options of ``unmask bench`` and ``benchmarks/*.py``, importable without torch (so ``--help`` is quick).

Each benchmark module re-exports its ``add_arguments``; its ``main`` resolves
the options with :func:`quick_defaults` and :func:`output_dir`.

- ``--out`` defaults to a fresh folder under ``runs/bench/`` (never the
  committed ``benchmarks/`` files: regenerate those with ``--out benchmarks``).
- ``--quick`` fills in only the options the command line leaves out, so
  ``--quick --budgets 0`` is refused like ``--budgets 0``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

BLOCK = 32
ORACLE_BUDGETS = (2, 3, 4, 5, 6)
ORACLES = ("markov1", "markov2", "hmm")
TUNE_TINY_BUDGETS = (2, 3, 5, 8)
TUNE_TINY_PROMPTS = Path(__file__).resolve().parents[3] / "examples" / "tune" / "tiny_val.txt"
RUNS = Path("runs") / "bench"

# per benchmark: the full run's values, and --quick's (None: the same)
ORACLE_FULL = {"samples": 2048, "budgets": list(ORACLE_BUDGETS), "search_evals": 300, "tune_samples": 1024}
ORACLE_QUICK = {"samples": 256, "budgets": [2, 4], "search_evals": 40, "tune_samples": 128}
TINY_FULL = {"n": 1000}
TINY_QUICK = {"n": 100}


def quick_defaults(args: argparse.Namespace, full: dict[str, object], quick: dict[str, object]) -> None:
    """Fill each option left out (``None``) with the full run's value, or ``--quick``'s when it is set."""
    for name, value in full.items():
        if getattr(args, name) is None:
            setattr(args, name, quick[name] if args.quick else value)


def output_dir(out: str | None, stem: str) -> Path:
    """``out`` as given, else a fresh ``runs/bench/<stem>-<UTC time>`` folder (suffixed if it exists)."""
    if out is not None:
        return Path(out)
    base = RUNS / f"{stem}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    path, k = base, 1
    while path.exists():
        k += 1
        path = base.with_name(f"{base.name}-{k}")
    return path


OUT_HELP = "folder for the report (default: a fresh runs/bench/{stem}-TIME; give --out benchmarks to replace the committed one)"


def add_oracle_arguments(parser: argparse.ArgumentParser) -> None:
    """The options shared by ``unmask bench oracle`` and ``benchmarks/oracle_frontier.py``."""
    q = ORACLE_QUICK
    parser.add_argument("--samples", type=int, default=None, help=f"blocks per planner (default 2048; --quick {q['samples']})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budgets", type=int, nargs="+", default=None,
                        help=f"calls per {BLOCK}-token block (default {' '.join(map(str, ORACLE_BUDGETS))}; "
                             f"--quick {' '.join(map(str, q['budgets']))})")  # type: ignore[call-overload]
    parser.add_argument("--oracles", nargs="+", default=list(ORACLES), choices=ORACLES)
    parser.add_argument("--search-evals", type=int, default=None,
                        help=f"schedules scored per limit search (default 300; --quick {q['search_evals']})")
    parser.add_argument("--tune-samples", type=int, default=None,
                        help="samples per set for the tuner's picks, which searches --search-evals schedules too "
                             f"(default 1024; --quick {q['tune_samples']})")
    parser.add_argument("--quick", action="store_true",
                        help="smaller defaults for the options not given (a smoke run, not the published figures)")
    parser.add_argument("--jobs", type=int, default=1, help="processes to run the pieces in (default 1)")
    parser.add_argument("--out", default=None, help=OUT_HELP.format(stem="oracle"))


def add_tiny_arguments(parser: argparse.ArgumentParser) -> None:
    """The options shared by ``unmask bench tiny`` and ``benchmarks/tiny_accuracy.py``."""
    parser.add_argument("--n", type=int, default=None,
                        help=f"held-out problems (default {TINY_FULL['n']}; --quick {TINY_QUICK['n']})")
    parser.add_argument("--batch-size", type=int, default=250, help="problems per generate call")
    parser.add_argument("--quick", action="store_true",
                        help=f"a handful of planners on {TINY_QUICK['n']} problems unless --n is given (a smoke run)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--out", default=None, help=OUT_HELP.format(stem="tiny"))


def add_tune_tiny_arguments(parser: argparse.ArgumentParser) -> None:
    """The options shared by ``unmask bench tune-tiny`` and ``benchmarks/tune_tiny.py``."""
    parser.add_argument("--n", type=int, default=1000, help="held-out test problems scored with labels")
    parser.add_argument("--budgets", type=int, nargs="+", default=list(TUNE_TINY_BUDGETS))
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads of each tuner run (default 2)")
    parser.add_argument("--jobs", type=int, default=1, help="processes (tuner runs and scoring at once)")
    parser.add_argument("--prompts", default=str(TUNE_TINY_PROMPTS),
                        help="unlabelled prompts, one per line (halves: calibration, report)")
    parser.add_argument("--out", default=None, help="write tune_tiny.md here (default: print only)")
