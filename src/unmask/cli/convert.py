"""``unmask convert SRC DST``: rewrite a LLaDA / Dream / DiffuCoder checkpoint in transformers' layout once."""

from __future__ import annotations

import argparse

from rich.console import Console


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert a LLaDA / Dream / DiffuCoder checkpoint to the native layout")
    p.add_argument("src", help="source checkpoint directory (or Hugging Face Hub id)")
    p.add_argument("dst", help="output directory (must be empty or absent)")
    p.add_argument("--dtype", default=None, help="cast weights, e.g. bfloat16 or float16 (default: keep)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty DST")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..models import convert
    from ..models.loading import parse_dtype

    dtype = None if args.dtype is None else parse_dtype(args.dtype)
    out = convert(args.src, args.dst, dtype=dtype, overwrite=args.overwrite)
    Console(highlight=False).print(f"wrote {out} (loads with unmask.load / unmask generate --model {out})")
    return 0
