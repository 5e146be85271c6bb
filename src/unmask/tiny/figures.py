"""The README figures of the reveal order, from the bundled model (DUS on a held-out problem).

    python -m unmask.tiny.figures docs     # docs/reveal_order.png and docs/reveal_html.png
    python -m unmask.tiny.figures docs --html   # also docs/reveal.html, the replayable page

The HTML screenshot needs headless Chromium (``apt-get install -y chromium``);
without it the page is written and the screenshot skipped, with a message.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ..config import GenerationConfig
from ..loop import generate
from ..planners import Dilated, TopK
from ..viz.html import write_reveal_html
from ..viz.png import plot_reveal_order
from ..viz.terminal import EOS_GLYPH, token_pieces
from . import encode_prompts, heldout_problems, load_tiny

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")


def find_chromium() -> str | None:
    """Path of a Chromium binary, or None."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None


def screenshot(page: Path, out: Path, size: str = "1000,600", chromium: str | None = None) -> Path:
    """Render ``page`` headless and save a PNG screenshot (raises ``FileNotFoundError`` without Chromium)."""
    chromium = chromium or find_chromium()
    if chromium is None:
        raise FileNotFoundError("chromium not found: apt-get install -y chromium")
    profile = tempfile.mkdtemp()
    try:
        subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={out.resolve()}",
                        f"--window-size={size}", page.resolve().as_uri()], check=True, timeout=120, capture_output=True)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    return out


def make_reveal_figures(out_dir: str | Path = "docs", index: int = 0, html: bool = False) -> list[Path]:
    """Solve held-out problem ``index`` with DUS (B=8 and B=32), confidence top-k and one token per call.

    Writes ``reveal_order.png`` (DUS, B=32) and, with Chromium, ``reveal_html.png``
    (a screenshot of the replay page of all four, at its end); with ``html``
    also the page itself, ``reveal.html``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    den, tok = load_tiny()
    prompt, answer = heldout_problems(index + 1)[index]
    ids = encode_prompts(tok, [prompt])
    runs = [
        ("DUS, B=32", Dilated(), 32),
        ("DUS, B=8", Dilated(), 8),
        ("confidence top-k, DUS counts", TopK(score="confidence", counts="dilated"), 32),
        ("one token per call", TopK(score="confidence", steps=32), 32),
    ]
    rows = []
    for name, planner, block in runs:
        res = generate(den, ids, GenerationConfig(gen_length=32, block_length=block, planner=planner), tokenizer=tok)
        pieces = token_pieces(tok, res.generated[0].tolist(), eos_glyph=EOS_GLYPH)
        verdict = "right" if (res.texts or [""])[0] == answer else "wrong"
        rows.append((f"{name}: {res.nfe} calls, {verdict}", pieces, res.trace.reveal_call[0].tolist()))
    files = [plot_reveal_order(out / "reveal_order.png", rows[0][2], f"{prompt}  DUS (B=32): positions revealed by each call",
                               pieces=rows[0][1])]
    title = f"unmask: {prompt} with four planners"
    if html:
        files.append(write_reveal_html(out / "reveal.html", rows, title=title, interval_ms=700))
    if find_chromium() is None:
        print("chromium not found: reveal_html.png not written (apt-get install -y chromium)", file=sys.stderr)
        return files
    # screenshot the end state: a copy of the page that opens after the last call
    with tempfile.TemporaryDirectory() as tmp:
        final = write_reveal_html(Path(tmp) / "final.html", rows, title=title, start=-1)
        files.append(screenshot(final, out / "reveal_html.png", size="1000,520"))
    return files


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--html"]
    for f in make_reveal_figures(args[0] if args else "docs", html="--html" in sys.argv[1:]):
        print(f"wrote {f}")
