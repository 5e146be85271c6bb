"""The HTML replay page and the reveal-order figure."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import torch

from unmask.output import FILLED
from unmask.schedules import dilated_levels
from unmask.viz import call_colors
from unmask.viz.html import reveal_html, write_reveal_html
from unmask.viz.png import plot_reveal_order, reveal_matrix

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium")
                 if p and Path(p).is_file()), None)


def _dus_calls(block: int = 8, blocks: int = 2) -> list[int]:
    calls, offset = [], 0
    for _ in range(blocks):
        row = [0] * block
        levels = dilated_levels(block)
        for i, level in enumerate(levels):
            for p in level:
                row[p] = offset + i
        calls += row
        offset += len(levels)
    return calls


ROWS = [
    ("DUS <B=8>", list("12*8=96;A:96") + ["<eos>"] * 4, _dus_calls()),
    ("one per call", list("12*8=96;A:96") + ["<eos>"] * 4, [5 + i for i in range(12)] + [FILLED] * 4),
]


def test_html_is_self_contained_and_holds_every_token(tmp_path: Path) -> None:
    path = write_reveal_html(tmp_path / "r.html", ROWS, title="reveal & replay")
    page = path.read_text()
    assert "http" not in page and "src=" not in page and "url(" not in page and "@import" not in page
    assert "<script>" in page and "<style>" in page
    assert "&lt;eos&gt;" in page and "DUS &lt;B=8&gt;" in page and "reveal &amp; replay" in page
    for title, pieces, _ in ROWS:
        spans = re.findall(rf"id='t{ROWS.index((title, pieces, _))}_\d+'>([^<]*)</span>", page)
        assert len(spans) == len(pieces)
    for c in call_colors(6) + call_colors(12):  # each row's own calls, the terminal view's colours
        assert c in page
    for control in ("id='play'", "id='back'", "id='fwd'", "type='range'"):
        assert control in page


def test_html_rejects_bad_rows() -> None:
    with pytest.raises(ValueError, match="rows"):
        reveal_html([])
    with pytest.raises(ValueError, match="pieces"):
        reveal_html([("x", ["a", "b"], [0])])
    with pytest.raises(ValueError, match="FILLED"):
        reveal_html([("x", ["a"], [-5])])


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium to render the page)")
def test_html_renders_in_headless_chromium(tmp_path: Path) -> None:
    page = write_reveal_html(tmp_path / "r.html", ROWS)
    shot = tmp_path / "shot.png"
    profile = tempfile.mkdtemp()
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", f"--screenshot={shot}", "--window-size=1000,600", page.resolve().as_uri()]
    subprocess.run(cmd, check=True, timeout=60, capture_output=True)
    shutil.rmtree(profile, ignore_errors=True)
    assert shot.read_bytes()[:8] == PNG_MAGIC and shot.stat().st_size > 5000


def test_reveal_matrix_counts_calls_per_row() -> None:
    frac, filled = reveal_matrix(torch.tensor([[3, 4, FILLED], [0, 0, 1]]))
    assert frac.shape == (2, 3)
    assert frac[:, 0].tolist() == [1.0, 0.0] and frac[:, 1].tolist() == [0.5, 0.5]
    assert filled.tolist() == [0.0, 0.0, 0.5]
    with pytest.raises(ValueError, match="reveal_call"):
        reveal_matrix(torch.zeros(2, 2, 2))


def test_png_for_one_row_and_a_batch(tmp_path: Path) -> None:
    one = plot_reveal_order(tmp_path / "one.png", ROWS[0][2], "DUS", pieces=ROWS[0][1])
    batch = plot_reveal_order(tmp_path / "batch.png", torch.tensor([ROWS[0][2], ROWS[1][2]]), "batch")
    for p in (one, batch):
        assert p.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match="pieces"):
        plot_reveal_order(tmp_path / "x.png", [0, 1], pieces=["a"])
