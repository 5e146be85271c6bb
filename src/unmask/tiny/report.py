"""Markdown and plot for the tiny-arith accuracy-vs-NFE benchmark (:mod:`unmask.bench.tiny`).

The explanatory paragraph is filled in from the measured rows, so it stays
true when the benchmark is re-run.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..bench.tiny import Row, TinyResult

STYLES = {  # family: (marker, line style), as in the oracle frontier
    "one per call": ("*", ""), "DUS": ("o", "-"), "top-k confidence": ("s", "--"), "top-k margin": ("D", "--"),
    "top-k entropy": ("v", "--"), "top-k random": ("x", ":"), "EB": ("^", "-."), "spaced EB": ("^", "-"),
    "threshold": ("<", "-."), "spaced threshold": ("<", "-"),
}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _find(rows: list[Row], family: str, setting: str | None = None) -> Row | None:
    return next((r for r in rows if r.family == family and (setting is None or r.setting == setting)), None)


def _compare(items: list[tuple[str, float, tuple[float, float]]], what: str) -> str:
    """One sentence ranking ``(name, value, interval)`` items, saying which gaps exceed the 95% intervals."""
    items = sorted(items, key=lambda it: -it[1])
    apart = [(a[0], b[0]) for i, a in enumerate(items) for b in items[i + 1 :] if a[2][0] > b[2][1]]
    if not apart:
        return f"In {what} their 95% intervals overlap. "
    pairs = "; ".join(f"{a} above {b}" for a, b in apart)
    return f"In {what}, beyond the 95% intervals: {pairs}. "


def explain(result: TinyResult) -> str:
    """A paragraph on what the table shows, every claim conditioned on the measured numbers."""
    from ..bench.tiny import wilson

    rows, n = result.rows, result.n
    ref, dus = _find(rows, "one per call"), _find(rows, "DUS", "B=32")
    conf, rnd = _find(rows, "top-k confidence"), _find(rows, "top-k random")
    if not (ref and dus and conf and rnd):
        return ""
    text = f"One token per call ({ref.nfe:.0f} calls) is the reference: {_pct(ref.acc)}% of final answers right. "
    if ref.acc < 0.5:
        text += (
            "The bundled model is under-trained, so every planner scores low and the accuracy columns separate the "
            "planners little; the answer-call column, which measures where each planner puts the result, does "
            "not depend on that. "
        )
    five = [("DUS", dus), ("random top-k", rnd), ("confidence top-k", conf)]
    text += (
        f"With {dus.nfe:.0f} calls for the same 32 tokens (2, 2, 4, 8, 16 positions per call), the planners "
        "differ only in *which* positions each call reveals: answer accuracy "
        + ", ".join(f"{name} {_pct(r.acc)}%" for name, r in five)
        + "; whole chain exact "
        + ", ".join(f"{name} {_pct(r.exact)}%" for name, r in five)
        + ". "
    )
    text += _compare([(name, r.acc, (r.lo, r.hi)) for name, r in five], "answer accuracy")
    text += _compare([(name, r.exact, wilson(round(r.exact * n), n)) for name, r in five], "exact match")
    text += (
        f"Where the result goes: confidence top-k reveals the final-answer digits at call {conf.answer_call:.1f} "
        f"of {conf.nfe:.0f} on average, {_pct(conf.answer_last)}% of them in the last call, where 16 positions are "
        "decoded together and independently; DUS reveals them at call "
        f"{dus.answer_call:.1f} ({_pct(dus.answer_last)}% in the last call) and random top-k at call "
        f"{rnd.answer_call:.1f} ({_pct(rnd.answer_last)}%). Confidence ranks the predictable tokens first (in "
        "`docs/reveal_html.png` its first calls take EOS padding and characters copied from the prompt), so the "
        "digits that depend on the whole chain of thought are left to one crowded final call; DUS's dilated "
        "groups put far-apart positions in every call, so tokens revealed together are nearly independent given "
        "what is known, the condition under which decoding them in one call loses little. "
    )
    blocks = sorted((r for r in rows if r.family == "DUS"), key=lambda r: r.block_length)
    if len(blocks) > 1:
        text += "DUS by block length (semi-autoregressive below 32; early exit skips blocks after the EOS): " + ", ".join(
            f"B={r.block_length} {_pct(r.acc)}% at {r.nfe:.1f} calls" for r in blocks) + ". "
    adaptive = [r for r in rows if r.family in ("EB", "threshold", "spaced EB", "spaced threshold")]
    good = [r for r in adaptive if r.acc >= ref.acc - 0.01]
    if good:
        fast = min(good, key=lambda r: r.nfe)
        text += (
            "The adaptive planners set their count per call from the scores; the cheapest within one point of the "
            f"reference is {fast.family} ({fast.setting}): {fast.nfe:.1f} calls, {_pct(fast.acc)}%. "
        )
    return text


def render_tiny(result: TinyResult) -> str:
    """The report as markdown: settings, the table, the explanation."""
    lines = [
        "# tiny-arith: answer accuracy against NFE",
        "",
        f"Generated by `python benchmarks/tiny_accuracy.py` (or `unmask bench tiny`): the bundled tiny-arith model "
        f"(`unmask.tiny.load_tiny()`, a small bidirectional Llama trained with LLaDA's SFT objective) on the "
        f"first {result.n} held-out test problems, greedy, 32 generated tokens, {result.seconds:.0f} s on CPU.",
        "",
        "*answer*: final answer (after `A:`) right, with a 95% Wilson interval. *exact*: the whole chain of thought "
        "equals the reference. *NFE*: mean denoiser calls per problem (a row stops costing calls once its EOS is "
        "out, for blocks shorter than 32). *tok/s*: generated tokens per second over the batch (CPU, batches of "
        "problems). *answer call*: mean call, counted within each problem's calls, at which the final-answer "
        "digits were revealed, and the share revealed in the last call. Blocks of 32 (one block) unless stated; "
        "top-k with DUS counts reveals 2, 2, 4, 8, 16 positions in its 5 calls.",
        "",
        "| planner | setting | answer % [95% CI] | exact % | NFE | tok/s | answer call (last %) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in result.rows:
        lines.append(
            f"| {r.family} | {r.setting} | {_pct(r.acc)} [{_pct(r.lo)}, {_pct(r.hi)}] | {_pct(r.exact)} | "
            f"{r.nfe:.1f} | {r.tokens_per_s:.0f} | {r.answer_call:.1f} ({_pct(r.answer_last)}) |"
        )
    para = explain(result)
    if para:
        lines += ["", "## What the table shows", "", para.strip()]
    return "\n".join(lines) + "\n"


def plot_tiny(result: TinyResult, path: str | Path) -> None:
    """Answer accuracy against mean NFE (log x), one style per planner family, Wilson error bars (Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    fig = Figure(figsize=(7.5, 5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    families = list(STYLES) + [f for f in dict.fromkeys(r.family for r in result.rows) if f not in STYLES]
    for family in families:
        pts = sorted((r.nfe, r.acc, r.lo, r.hi, r.setting) for r in result.rows if r.family == family)
        if not pts:
            continue
        marker, ls = STYLES.get(family, ("o", "-"))
        x = [p[0] for p in pts]
        y = [100 * p[1] for p in pts]
        err = [[100 * (p[1] - p[2]) for p in pts], [100 * (p[3] - p[1]) for p in pts]]
        ax.errorbar(x, y, yerr=err, marker=marker, linestyle=ls or "none", label=family, capsize=2, ms=6)
        if family == "DUS":
            for p in pts:
                ax.annotate(p[4], (p[0], 100 * p[1]), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set_xscale("log")
    ticks = [t for t in (1, 2, 3, 5, 8, 12, 16, 24, 32) if t <= 1.2 * max(r.nfe for r in result.rows)]
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("mean NFE per problem (32 generated tokens)")
    ax.set_ylabel("answer accuracy (%)")
    ax.set_title(f"tiny-arith: accuracy vs denoiser calls ({result.n} held-out problems, greedy)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.savefig(path, dpi=120)
