"""Terminal view: generated text with each token coloured by the call that revealed it."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from matplotlib import colormaps
from matplotlib.colors import to_hex
from rich.console import Console
from rich.text import Text

from ..output import FILLED


def call_colors(num_calls: int, cmap: str = "turbo") -> list[str]:
    """One hex colour per call, early calls blue, late calls red."""
    cm = colormaps[cmap]
    return [to_hex(cm(0.1 + 0.8 * (i / max(1, num_calls - 1)))) for i in range(max(1, num_calls))]


def text_color_for(hex_color: str) -> str:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 140 else "white"


EOS_GLYPH = "\u2205"  # how the views show an EOS token when asked to


def token_pieces(tokenizer: Any, ids: Sequence[int], eos_glyph: str | None = None) -> list[str]:
    """Per-token display strings (each token decoded alone); ``eos_glyph`` replaces the tokenizer's EOS token."""
    pieces = [tokenizer.decode([int(t)]) for t in ids]
    if eos_glyph is None:
        return pieces
    return [eos_glyph if p == tokenizer.eos_token else p for p in pieces]


def reveal_text(pieces: Sequence[str], reveal_call: Sequence[int], first_call: int = 0, num_calls: int | None = None,
                edited: Collection[int] = ()) -> Text:
    """A rich ``Text`` of ``pieces`` with each token's background set by its reveal call.

    ``reveal_call`` holds global call indices (``FILLED`` for EOS filled after an
    early exit, shown dim); ``first_call`` is subtracted so a row's own calls
    start at colour 0. Positions in ``edited`` (a revising planner overwrote or
    re-masked them: ``Trace.revised(row)``) are shown bold and underlined.
    """
    calls = [c - first_call for c in reveal_call if c != FILLED]
    n = num_calls if num_calls is not None else (max(calls) + 1 if calls else 1)
    colors = call_colors(n)
    text = Text()
    for i, (piece, call) in enumerate(zip(pieces, reveal_call, strict=True)):
        shown = piece.replace("\n", "\u21b5")
        if call == FILLED:
            text.append(shown, style="dim")
        else:
            bg = colors[min(call - first_call, n - 1)]
            mark = " bold underline" if i in edited else ""
            text.append(shown, style=f"{text_color_for(bg)} on {bg}{mark}")
    return text


def reveal_legend(num_calls: int) -> Text:
    """A legend strip: one coloured cell per call number (1-based)."""
    colors = call_colors(num_calls)
    legend = Text("call: ")
    # at most ~16 labelled cells: long runs show a gradient with evenly spaced labels
    stride = max(1, -(-num_calls // 16))
    for i in range(0, num_calls, stride):
        bg = colors[i]
        legend.append(f" {i + 1} ", style=f"{text_color_for(bg)} on {bg}")
    if (num_calls - 1) % stride:
        legend.append(f" {num_calls} ", style=f"{text_color_for(colors[-1])} on {colors[-1]}")
    return legend


def render_reveal(
    console: Console, pieces: Sequence[str], reveal_call: Sequence[int], title: str | None = None, legend: bool = True,
    edited: Collection[int] = (),
) -> None:
    """Print the coloured text (and a legend) to ``console``; ``edited`` positions bold and underlined."""
    real = [c for c in reveal_call if c != FILLED]
    first = min(real) if real else 0
    num = (max(real) - first + 1) if real else 1
    if title:
        console.print(f"[bold]{title}[/]")
    console.print(reveal_text(pieces, reveal_call, first, num, edited))
    if legend:
        console.print(reveal_legend(num))
