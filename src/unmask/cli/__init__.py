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
from typing import NoReturn

from rich.console import Console
from rich.text import Text

COMMANDS = ("demo", "bench", "generate", "convert", "eval", "tune", "serve")


HTML_SUFFIXES = (".html", ".htm")
FIGURE_SUFFIXES = (".png", ".svg", ".pdf")


def check_output(flag: str, path: str | None, suffixes: tuple[str, ...]) -> None:
    """Refuse an output file ``path`` (given with ``flag``) that could not be written, before any compute:
    a suffix not in ``suffixes``, a folder that does not exist, or a directory in its place."""
    if path is None:
        return
    if Path(path).suffix.lower() not in suffixes:
        raise ValueError(f"{flag} {path!r}: the file name must end in {' or '.join(suffixes)}")
    if not Path(path).resolve().parent.is_dir():
        raise FileNotFoundError(f"{flag} {path!r}: its folder does not exist")
    if Path(path).is_dir():
        raise ValueError(f"{flag} {path!r} is a directory; give a file name")


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose mistakes are one line (exit 2), pointing at ``--help`` instead of printing usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="unmask", description="Sample from masked diffusion language models with DUS and every planner it is compared with."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser)
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as err:
        message = Text("error:", style="bold red").append(f" {err}")  # the message as text: "[eval]" is no markup
        Console(stderr=True, soft_wrap=True).print(message, highlight=False)
        return 2


if __name__ == "__main__":
    sys.exit(main())
