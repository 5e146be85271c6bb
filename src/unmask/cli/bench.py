"""``unmask bench <benchmark>``: the benchmarks of :mod:`unmask.bench`, one sub-command each.

Options come from :mod:`unmask.bench.args` (no torch); a benchmark's module
is imported only when it runs. To add one, list ``name: (help, add_arguments,
module)`` in ``BENCHMARKS``; the module defines ``main(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable

from ..bench.args import add_oracle_arguments, add_tiny_arguments, add_tune_tiny_arguments

BENCHMARKS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], str]] = {
    "oracle": ("exact / consistent error of every planner at 2-6 calls per block on exact oracles, the best fixed "
               "schedule and unmask tune's picks (writes .md and .png)", add_oracle_arguments, "oracle"),
    "tiny": ("accuracy vs NFE of every planner on the bundled tiny-arith model (writes .md and .png)",
             add_tiny_arguments, "tiny"),
    "tune-tiny": ("unmask tune's picks on tiny-arith, scored with labels on held-out problems",
                  add_tune_tiny_arguments, "tune_tiny"),
}


def _runner(module: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        return int(importlib.import_module(f"unmask.bench.{module}").main(args))

    return run


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``bench`` command and one sub-command per entry of ``BENCHMARKS``."""
    p = sub.add_parser("bench", help="run a benchmark and write its report (into a fresh runs/bench/ folder unless --out)")
    benches = p.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    for name, (help_text, add_arguments, module) in BENCHMARKS.items():
        b = benches.add_parser(name, help=help_text)
        add_arguments(b)
        b.set_defaults(func=_runner(module))
