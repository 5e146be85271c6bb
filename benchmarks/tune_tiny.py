"""unmask tune on the bundled tiny-arith model at 2, 3, 5 and 8 calls per 32 tokens, checked with labels.

    python benchmarks/tune_tiny.py --threads 2 --out benchmarks    # writes tune_tiny.md

Same as ``unmask bench tune-tiny``; see :mod:`unmask.bench.tune_tiny`.
"""

from __future__ import annotations

import argparse
import sys

from unmask.bench.tune_tiny import add_arguments, main

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
