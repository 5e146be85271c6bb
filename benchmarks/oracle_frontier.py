"""Exact and consistent error of every planner at 2-6 calls per 32-token block on exact oracles, with the
best fixed schedule (limit) and unmask tune's picks; writes oracle_frontier.md and .png.

    python benchmarks/oracle_frontier.py --out benchmarks     # full run; replaces the committed report
    python benchmarks/oracle_frontier.py --quick --out /tmp   # a smoke run: fewer samples, budgets and search

Same as ``unmask bench oracle``; see :mod:`unmask.bench.oracle`.
"""

from __future__ import annotations

import argparse
import sys

from unmask.bench.oracle import add_arguments, main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
