"""``unmask bench <benchmark>``: the benchmarks of :mod:`unmask.bench`, one sub-command each.

To add one, write ``_add_<name>(sub)`` that adds its parser to ``sub`` and
sets ``func``, and list it in ``BENCHMARKS``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable


def _add_oracle(sub: argparse._SubParsersAction) -> None:
    from ..bench import oracle

    p = sub.add_parser(
        "oracle", help="exact / consistent error of every planner at 2-6 calls per block on exact oracles, "
                       "the best fixed schedule and unmask tune's picks (writes .md and .png)"
    )
    oracle.add_arguments(p)
    p.set_defaults(func=oracle.main)


def _add_tiny(sub: argparse._SubParsersAction) -> None:
    from ..bench.tiny import register_tiny

    register_tiny(sub)


def _add_tune_tiny(sub: argparse._SubParsersAction) -> None:
    from ..bench import tune_tiny

    p = sub.add_parser("tune-tiny", help="unmask tune's picks on tiny-arith, scored with labels on held-out problems")
    tune_tiny.add_arguments(p)
    p.set_defaults(func=tune_tiny.main)


BENCHMARKS: dict[str, Callable[[argparse._SubParsersAction], None]] = {
    "oracle": _add_oracle, "tiny": _add_tiny, "tune-tiny": _add_tune_tiny,
}


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``bench`` command and one sub-command per entry of ``BENCHMARKS``."""
    p = sub.add_parser("bench", help="run a benchmark and write its report")
    benches = p.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    for add in BENCHMARKS.values():
        add(benches)
