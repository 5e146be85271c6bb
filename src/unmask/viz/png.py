"""Reveal order as a static figure: position (x) against call (y), for papers and READMEs.

For one sequence each revealed position is a cell at (position, call) in
that call's colour (:func:`unmask.viz.terminal.call_colors`); for a batch
``[N, G]`` a cell's opacity is the fraction of rows whose position was revealed
at that call (each row's calls counted from its own first call). Positions
filled with EOS after an early exit sit in a grey "filled" row at the bottom.
Cells where a revising planner overwrote or re-masked a position
(``Trace.revisions``) carry a black cross.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402

from ..output import FILLED  # noqa: E402
from .terminal import EOS_GLYPH, call_colors  # noqa: E402


def reveal_matrix(reveal_call: torch.Tensor | np.ndarray | Sequence) -> tuple[np.ndarray, np.ndarray]:
    """``(fraction [C, G], filled [G])``: share of rows revealing position g at call c, and filled share.

    ``reveal_call`` is ``[G]`` or ``[N, G]``; each row's calls are shifted to start at 0.
    """
    rc = np.asarray(reveal_call.cpu() if isinstance(reveal_call, torch.Tensor) else reveal_call, dtype=np.int64)
    if rc.ndim == 1:
        rc = rc[None]
    if rc.ndim != 2 or rc.shape[1] == 0:
        raise ValueError(f"reveal_call must be [G] or [N, G] with G >= 1, got shape {rc.shape}")
    if ((rc < 0) & (rc != FILLED)).any():
        raise ValueError(f"reveal_call holds negative values other than FILLED ({FILLED})")
    real = rc != FILLED
    first = np.where(real, rc, np.iinfo(np.int64).max).min(1, keepdims=True)  # [N, 1]
    first = np.where(real.any(1, keepdims=True), first, 0)
    rel = np.where(real, rc - first, -1)  # [N, G]
    num_calls = int(rel.max()) + 1 if real.any() else 1
    frac = np.zeros((num_calls, rc.shape[1]))
    for c in range(num_calls):
        frac[c] = (rel == c).mean(0)
    return frac, (~real).mean(0)


def revision_cells(reveal_call: torch.Tensor | np.ndarray | Sequence, revisions: torch.Tensor | np.ndarray | Sequence,
                   ) -> list[tuple[int, int]]:
    """``(call, position)`` cells, each row's calls counted from its own first call, of ``revisions``: rows of
    ``(global call, row, position, old, new)`` (``Trace.revisions``; row 0 for a single ``[G]`` row)."""
    rc = np.asarray(reveal_call.cpu() if isinstance(reveal_call, torch.Tensor) else reveal_call, dtype=np.int64)
    rc = rc[None] if rc.ndim == 1 else rc
    rev = np.asarray(revisions.cpu() if isinstance(revisions, torch.Tensor) else revisions, dtype=np.int64).reshape(-1, 5)
    real = rc != FILLED
    first = np.where(real, rc, np.iinfo(np.int64).max).min(1)
    first = np.where(real.any(1), first, 0)
    if rev.size and (rev[:, 1].max() >= rc.shape[0] or rev[:, 2].max() >= rc.shape[1] or rev.min() < 0):
        raise ValueError(f"revisions name rows or positions outside reveal_call of shape {tuple(rc.shape)}")
    return sorted({(int(c - first[r]), int(g)) for c, r, g, _, _ in rev})


def plot_reveal_order(path: str | Path, reveal_call: torch.Tensor | np.ndarray | Sequence, title: str = "",
                      pieces: Sequence[str] | None = None, dpi: int = 150,
                      revisions: torch.Tensor | np.ndarray | Sequence | None = None) -> Path:
    """Save a figure of which positions each call revealed (``reveal_call`` ``[G]`` or ``[N, G]``).

    ``pieces`` (one string per position, single rows only) labels the x axis
    with the generated tokens; ``revisions`` (``Trace.revisions``) puts a cross
    on each cell where a call edited or re-masked a position.
    """
    frac, filled = reveal_matrix(reveal_call)
    crosses = revision_cells(reveal_call, revisions) if revisions is not None else []
    num_calls, g = frac.shape
    if pieces is not None and len(pieces) != g:
        raise ValueError(f"pieces must have one string per position ({g}), got {len(pieces)}")
    show_filled = bool(filled.any())
    rows = num_calls + int(show_filled)
    colors = np.array([to_rgb(c) for c in call_colors(num_calls)])  # [C, 3]
    img = np.ones((rows, g, 3))
    alpha = frac[..., None]
    img[:num_calls] = 1.0 - alpha * (1.0 - colors[:, None, :])  # call colour blended on white by share
    if show_filled:
        img[num_calls] = 1.0 - filled[:, None] * (1.0 - np.array([0.6, 0.6, 0.6]))
    if crosses:  # a revision can come after the last reveal (edit calls): room for those calls
        extra = max(c for c, _ in crosses) + 1 - num_calls
        if extra > 0:
            img = np.concatenate([img[:num_calls], np.ones((extra, g, 3)), img[num_calls:]])
            num_calls, rows = num_calls + extra, rows + extra
    fig_w = min(16.0, max(5.0, 0.28 * g + 1.5))
    fig_h = min(10.0, max(2.2, 0.28 * rows + 1.3))
    fig, ax = plt.subplots(figsize=(fig_w, fig_h))
    ax.imshow(img, aspect="auto", interpolation="nearest", extent=(-0.5, g - 0.5, rows - 0.5, -0.5))
    if crosses:
        ax.scatter([p for _, p in crosses], [c for c, _ in crosses], marker="x", color="black", s=28, linewidths=1.2,
                   label="edited / re-masked")
        ax.legend(loc="upper right", fontsize=7, framealpha=0.8)
    ax.set_xticks(np.arange(-0.5, g, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, rows, 1), minor=True)
    ax.grid(which="minor", color="#dddddd", linewidth=0.5)
    ax.tick_params(which="minor", length=0)
    labels = [str(c + 1) for c in range(num_calls)] + (["filled"] if show_filled else [])
    step = max(1, rows // 16)
    ax.set_yticks(range(0, rows, step), [labels[i] for i in range(0, rows, step)])
    if pieces is not None:
        ax.set_xticks(range(g), [p.replace("<eos>", EOS_GLYPH) for p in pieces], fontfamily="monospace")
    else:
        ax.set_xticks(range(0, g, max(1, g // 16)))
    ax.set_xlabel("generated position" + (" (token shown)" if pieces is not None else ""))
    ax.set_ylabel("denoiser call")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
