"""Progress for long work, off by default in library calls.

On a terminal, a transient rich bar. When stdout is not a terminal (a log
file, a pipe, CI), the bar would show nothing, so :class:`StageLog` prints
plain lines instead: one when a stage (task description) starts, and one per
step, at most every ``min_interval_s`` seconds, plus the last step.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class StageLog:
    """The part of rich's ``Progress`` the package uses, as plain lines: ``desc: done/total (elapsed s)``."""

    def __init__(self, stream: TextIO | None = None, min_interval_s: float = 5.0) -> None:
        self.stream, self.min_interval_s, self.disable = stream, min_interval_s, False
        self.tasks: dict[int, dict[str, Any]] = {}
        self.t0 = time.perf_counter()

    def __enter__(self) -> StageLog:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def _line(self, task: int) -> None:
        t = self.tasks[task]
        if self.disable or not t["visible"]:
            return
        total = "" if t["total"] is None else f"/{t['total']:g}"
        print(f"{t['description']}: {t['completed']:g}{total} ({time.perf_counter() - self.t0:.0f} s)",
              file=self.stream or sys.stdout, flush=True)
        t["last"] = time.perf_counter()

    def add_task(self, description: str, total: float | None = None, visible: bool = True, **_: Any) -> int:
        task = len(self.tasks)
        self.tasks[task] = {"description": description, "total": total, "completed": 0, "visible": visible, "last": 0.0}
        self._line(task)
        return task

    def update(self, task: int, description: str | None = None, advance: float = 0, **_: Any) -> None:
        t = self.tasks[task]
        if description is not None and description != t["description"]:
            t["description"] = description
            t["completed"] += advance
            self._line(task)
        elif advance:
            self.advance(task, advance)

    def advance(self, task: int, advance: float = 1) -> None:
        t = self.tasks[task]
        t["completed"] += advance
        done = t["total"] is not None and t["completed"] >= t["total"]
        if done or time.perf_counter() - t["last"] >= self.min_interval_s:
            self._line(task)


def make_progress(transient: bool = True) -> Any:
    """A rich bar on a terminal; a :class:`StageLog` (one line per stage) when stdout is not one."""
    if not sys.stdout.isatty():
        return StageLog()
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
