"""The tuner's frontier as a rich table, markdown and a plot (score against calls per block)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ..planners import Planner
from .types import Score, TuneResult

SPEC_WIDTH = 46  # longer specs (searched schedules) are cut in the terminal table
STATUS_MARK = {"exact": "", "upper bound": " ≤", "biased": " †"}
OVER = "✗ over budget (mean calls per block measured on every calibration prompt)"
SCREENED = "✗* over budget (screened: measured on the first {n} prompts only, not run on the rest)"
STATUS_NOTE = "self KL: ≤ an upper bound (random order), † biased (the planner picks by the tokens just drawn), see pair JS"


def notes(result: TuneResult) -> str:
    """The notes for the marks the table holds: over budget (fully measured, or screened), self KL status."""
    out = []
    if any(not s.eligible and s.screened is None for s in result.scores):
        out.append(OVER)
    screened = sorted({s.screened for s in result.scores if s.screened is not None})
    out += [SCREENED.format(n=n) for n in screened]
    if result.config.sampled:
        out.append(STATUS_NOTE)
    return "; ".join(out)


def _num(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def columns(result: TuneResult) -> list[str]:
    if result.config.sampled:
        return ["spec", "calls/block", "max calls/block", "self KL/token", "± se", "pair JS", "log p/token"]
    return ["spec", "calls/block", "max calls/block", "agreement %", "Δ log p/token"]


def cells(s: Score, sampled: bool) -> list[str]:
    calls = f"{s.calls:.2f}" + ("" if s.eligible else " ✗" if s.screened is None else " ✗*")
    if sampled:
        kl = "-" if s.kl is None else f"{s.kl:.4f}" + STATUS_MARK.get(s.kl_status or "", "")
        return [s.candidate.spec, calls, str(s.calls_max), kl, _num(s.kl_se, ".4f"), _num(s.js, ".4f"),
                _num(s.loglik, ".4f")]
    agree = "-" if s.agreement is None else f"{100 * s.agreement:.1f}"
    return [s.candidate.spec, calls, str(s.calls_max), agree, _num(s.loglik, ".4f")]


def _order(result: TuneResult) -> list[Score]:
    if result.config.sampled:
        return sorted(result.scores, key=lambda s: (not s.eligible, s.kl if s.kl is not None else float("inf")))
    return sorted(result.scores, key=lambda s: (not s.eligible, -(s.agreement or 0.0)))


def model_args(planner: Planner) -> str | None:
    """The planner as lm-eval ``model_args`` keys (``planner=dilated,base=2,skip_exp=2``), or None when a value
    holds a comma (``model_args`` are split on commas: use the spec string with the API or ``unmask generate``)."""
    from ..eval.settings import planner_spec

    parts = [f"planner={planner.name}"]
    for f in dataclasses.fields(planner):  # type: ignore[arg-type]
        value = getattr(planner, f.name)
        if f.name == "inner":
            parts.append(f"inner={planner_spec(value)}")
        elif value != f.default:
            parts.append(f"{f.name}={value}")
    text = ",".join(parts)
    return None if text.count(",") != len(parts) - 1 else text


def winner_line(result: TuneResult) -> str:
    r, c = result.report, result.config
    if c.sampled:
        got = f"self KL {r.kl:.4f} ± {r.kl_se:.4f}/token" + STATUS_MARK.get(r.kl_status or "", "")
    else:
        got = f"agreement {100 * (r.agreement or 0):.1f}%"
    lines = [f"winner: {result.spec}  ({r.calls:.2f} calls per block, at most {r.calls_max}; on the "
             f"{result.n_report} report prompts: {got})",
             f"use it: unmask generate --planner \"{result.spec}\" --block-length {c.block_length} ..."]
    args = model_args(result.winner.candidate.planner)
    if args is not None:
        lines.append(f"        unmask eval --model_args ...,{args},block_length={c.block_length}")
    return "\n".join(lines)


def print_tune(result: TuneResult, console: Console | None = None) -> None:
    console = console or Console()
    c = result.config
    table = Table(title=f"calibration frontier at {c.budget} calls per {c.block_length}-token block "
                        f"({result.n_calibration} prompts, temperature {c.temperature:g})")
    for col in columns(result):
        table.add_column(col, no_wrap=True, justify="left" if col == "spec" else "right")
    for s in _order(result):
        style = "bold green" if s is result.winner else ("dim" if not s.eligible else None)
        row = cells(s, c.sampled)
        if len(row[0]) > SPEC_WIDTH:  # a searched schedule: the full spec is in the winner line and the markdown
            row[0] = row[0][: SPEC_WIDTH - 3] + "..."
        table.add_row(*row, style=style)
    console.print(table)
    if notes(result):
        console.print(notes(result), style="dim", highlight=False)
    if result.js_floor is not None:
        console.print(f"pair JS floor (reference against reference): {result.js_floor:.4f}")
    console.print(winner_line(result), highlight=False)
    if result.files:
        console.print("wrote " + ", ".join(map(str, result.files)))


def render_markdown(result: TuneResult) -> str:
    head = ["planner"] + columns(result)
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" if h in ("planner", "spec") else "---:" for h in head) + "|"]
    for s in _order(result):
        row = [s.candidate.family, f"`{s.candidate.spec}`"] + cells(s, result.config.sampled)[1:]
        if s is result.winner:
            row = [f"**{x}**" for x in row]
        lines.append("| " + " | ".join(row) + " |")
    floor = "" if result.js_floor is None else f"\n\npair JS floor: {result.js_floor:.4f}"
    winner = "; ".join(line.strip() for line in winner_line(result).splitlines())
    note = f"\n\n{notes(result)}" if notes(result) else ""
    return "\n".join(lines) + f"{note}{floor}\n\n{winner}\n"


def render_budgets(results: list[TuneResult]) -> str:
    """:func:`render_markdown` of one result, or one section per budget of a several-budget run."""
    if len(results) == 1:
        return render_markdown(results[0])
    return "\n".join(f"## {r.config.budget} calls per {r.config.block_length}-token block\n\n{render_markdown(r)}"
                     for r in results)


SCORE_FIELDS = ("calls", "calls_max", "eligible", "screened", "agreement", "loglik", "kl", "kl_se", "kl_status", "js",
                "seconds")


def score_json(s: Score) -> dict:
    return {"family": s.candidate.family, "spec": s.candidate.spec, **{k: getattr(s, k) for k in SCORE_FIELDS}}


def to_json(results: list[TuneResult]) -> dict:
    """Every budget's scores, winner and report-set score as plain JSON values (``--json``)."""
    c = results[0].config
    return {
        "settings": {k: getattr(c, k) for k in ("gen_length", "block_length", "temperature", "seed", "cache")},
        "n_calibration": results[0].n_calibration, "n_report": results[0].n_report,
        "reference_seconds": results[0].reference_seconds,
        "budgets": [{"budget": r.config.budget, "winner": r.spec, "report": score_json(r.report),
                     "js_floor": r.js_floor, "seconds": r.seconds, "scores": [score_json(s) for s in r.scores]}
                    for r in results],
    }


def plot_tune(result: TuneResult, path: str | Path) -> Path:
    """One bar per scored candidate (best at the top), labelled with its calls per block; the winner in black."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    c = result.config
    value = (lambda s: s.kl) if c.sampled else (lambda s: 100 * (s.agreement or 0.0))
    scored = [s for s in _order(result) if value(s) is not None][::-1]  # matplotlib draws bottom-up
    families = list(dict.fromkeys(s.candidate.family for s in result.scores))
    fig = Figure(figsize=(8, 1.2 + 0.28 * len(scored)), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    colors = [colormaps["tab20"](families.index(s.candidate.family) % 20) for s in scored]
    bars = ax.barh(range(len(scored)), [value(s) for s in scored], color=colors,
                   edgecolor=["black" if s is result.winner else "none" for s in scored], linewidth=2)
    labels = [f"{s.candidate.spec}  ({s.calls:.2f} calls, max {s.calls_max}{'' if s.eligible else ', over budget'})"
              for s in scored]
    ax.set_yticks(range(len(scored)), labels, fontsize=7)
    for bar, s in zip(bars, scored):
        if not s.eligible:
            bar.set_alpha(0.35)
    if c.sampled:
        ax.set_xscale("symlog", linthresh=1e-3)
        ax.set_xlabel("self KL (nats per token, lower is better; † / ≤ rows in the table are biased / bounds)")
    else:
        ax.set_xlim(max(0.0, min(value(s) for s in scored) - 5), 100)
        ax.set_xlabel("agreement with one token per call on the calibration prompts (%)")
    ax.grid(True, axis="x", alpha=0.3)
    ax.set_title(f"unmask tune: {c.budget} calls per {c.block_length}-token block; winner {result.spec}", fontsize=9)
    fig.savefig(path, dpi=110)
    return Path(path)
