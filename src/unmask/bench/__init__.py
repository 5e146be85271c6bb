"""Benchmarks behind ``unmask bench``: each module runs one study and writes its report."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def write_report(out_dir: str | Path, stem: str, markdown: str, plot: Callable[[Path], None]) -> list[Path]:
    """Write ``out_dir/stem.md`` and, through ``plot(path)``, ``out_dir/stem.png``; return both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, png = out / f"{stem}.md", out / f"{stem}.png"
    md.write_text(markdown)
    plot(png)
    return [md, png]
