"""Path KL against NFE for every planner on exact oracles; writes oracle_frontier.md and .png.

    python benchmarks/oracle_frontier.py             # full run, a few minutes on 2 CPU cores
    python benchmarks/oracle_frontier.py --quick     # under a minute

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
