"""Benchmarks behind ``unmask bench``: each module runs one study and writes its report.

This package's own imports stay light: ``unmask bench --help`` reads :mod:`unmask.bench.args` through it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def write_report(out_dir: str | Path, stem: str, markdown: str, plot: Callable[[Path], None]) -> list[Path]:
    """Write ``out_dir/stem.md`` and, through ``plot(path)``, ``out_dir/stem.png``; return both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, png = out / f"{stem}.md", out / f"{stem}.png"
    md.write_text(markdown)
    plot(png)
    return [md, png]


def run_calls(calls: Sequence[tuple[Callable[..., Any], tuple[Any, ...]]], jobs: int = 1, description: str = "",
              progress: bool = True) -> list[Any]:
    """``fn(*args)`` for each call, in order, in ``jobs`` spawned processes (1: here), with a progress bar.

    The functions must be importable module-level functions (they are sent to
    the worker processes by name).
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from ..progress import make_progress

    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive int, got {jobs!r}")
    results: list[Any] = [None] * len(calls)
    bar = make_progress(transient=True)
    bar.disable = not progress
    with bar:
        task = bar.add_task(description, total=len(calls))
        if jobs == 1:
            for i, (fn, args) in enumerate(calls):
                results[i] = fn(*args)
                bar.advance(task)
            return results
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(fn, *args): i for i, (fn, args) in enumerate(calls)}
            for f in as_completed(futures):
                results[futures[f]] = f.result()
                bar.advance(task)
    return results
