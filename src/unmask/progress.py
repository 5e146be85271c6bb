"""Rich progress bars for long work, off by default in library calls."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def make_progress(transient: bool = True) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=transient,
    )


@contextmanager
def block_progress(total: int, enabled: bool, description: str = "blocks") -> Iterator[Callable[[], None]]:
    """Yield an ``advance()`` callable; shows a bar over ``total`` steps when ``enabled``."""
    if not enabled:
        yield lambda: None
        return
    with make_progress() as bar:
        task = bar.add_task(description, total=total)
        yield lambda: bar.advance(task)
