"""Answer accuracy against NFE for every planner on the bundled tiny-arith model; writes tiny_accuracy.md and .png.

    python benchmarks/tiny_accuracy.py --out benchmarks   # 1,000 held-out problems; replaces the committed report
    python benchmarks/tiny_accuracy.py --quick             # a handful of planners on 100 problems, into runs/bench/

Same as ``unmask bench tiny``; see :mod:`unmask.bench.tiny`.
"""

from __future__ import annotations

import argparse
import sys

from unmask.bench.tiny import add_arguments, main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
