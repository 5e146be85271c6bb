"""The ``unmask`` command line: one sub-command per module of this package.

Each module in ``COMMANDS`` defines ``register(subparsers)``, which adds its
parser and sets ``func`` to a callable taking the parsed args and returning an
exit code. User mistakes (``ValueError``, ``FileNotFoundError``) print one
clear line, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from rich.console import Console

COMMANDS = ("demo", "bench", "generate", "convert", "eval", "serve")


def require_folder(flag: str, path: str | None) -> None:
    """Refuse an output file ``path`` (given with ``flag``) whose folder does not exist, before any compute."""
    if path is not None and not Path(path).resolve().parent.is_dir():
        raise FileNotFoundError(f"{flag} {path!r}: its folder does not exist")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unmask", description="Sample from masked diffusion language models with DUS and every planner it is compared with."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as err:
        Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {err}", highlight=False)
        return 2


if __name__ == "__main__":
    sys.exit(main())
