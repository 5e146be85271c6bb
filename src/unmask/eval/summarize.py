"""Paper-style tables and an accuracy-vs-NFE plot from a directory of lm-eval results JSON files.

Each results file written by ``unmask eval`` carries the metrics
(``results[task]``), the model settings (``config.unmask``: planner spec, block
length...) and the cost (``unmask_speed[task]``). One row per (file, task):
the task's headline metric, NFE per request and per token, tokens/s, and two
speed-ups: in calls over one-token-per-call decoding (``tokens_per_nfe``), and
in NFE per request over the slowest row of the same task and model.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .speed import SPEED_KEY

LOG_WIDTH = 1000  # columns of the summary table off a terminal: wide enough that no cell is cut

# headline metric per task, first match wins (metric,filter keys of lm-eval)
METRIC_PREFERENCE = (
    "exact_match,flexible-extract", "exact_match,strict-match", "exact_match,get-answer", "exact_match,custom-extract",
    "math_verify,none", "exact_match,none", "pass@1,create_test", "pass@1,extract_code", "pass_at_1,none", "pass@1,none",
    "prompt_level_strict_acc,none", "acc_norm,none", "acc,none",
)


@dataclass
class Row:
    """One (results file, task) entry of the summary table."""

    task: str
    model: str
    planner: str
    block_length: int | None
    metric: str
    value: float | None
    nfe_per_request: float | None
    nfe_per_token: float | None
    tokens_per_second: float | None
    speedup_vs_one_per_call: float | None
    speedup_vs_slowest: float | None = None
    source: str = ""


def _headline(metrics: dict[str, Any], wanted: str | None) -> tuple[str, float | None]:
    numeric = {k: v for k, v in metrics.items() if "," in k and "_stderr" not in k and isinstance(v, (int, float))}
    if wanted is not None:
        for key in numeric:
            if key == wanted or key.split(",")[0] == wanted:
                return key, float(numeric[key])
        return wanted, None
    for key in METRIC_PREFERENCE:
        if key in numeric:
            return key, float(numeric[key])
    if numeric:
        key = sorted(numeric)[0]
        return key, float(numeric[key])
    return "-", None


def _model_name(config: dict[str, Any]) -> str:
    args = config.get("model_args")
    if isinstance(args, str):
        args = dict(kv.split("=", 1) for kv in args.split(",") if "=" in kv)
    unmask = config.get("unmask") or {}
    name = (args or {}).get("pretrained") or unmask.get("pretrained") or unmask.get("factory") or config.get("model", "?")
    return str(name).rstrip("/").split("/")[-1]


def load_rows(results_dir: Path, metric: str | None = None) -> list[Row]:
    """Rows for every task of every ``*.json`` results file under ``results_dir`` (recursively)."""
    if not results_dir.is_dir():
        raise FileNotFoundError(f"results directory {results_dir} does not exist")
    rows: list[Row] = []
    for path in sorted(results_dir.rglob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path} is not a results JSON file: {err}") from err
        if not isinstance(data, dict) or "results" not in data:
            continue  # samples files and other JSON
        config = data.get("config") or {}
        unmask = config.get("unmask") or {}
        speed = data.get(SPEED_KEY) or {}
        for task, metrics in data["results"].items():
            key, value = _headline(metrics, metric)
            cost = speed.get(task) or {}
            rows.append(Row(
                task=task, model=_model_name(config), planner=str(unmask.get("planner", config.get("model", "?"))),
                block_length=unmask.get("block_length"), metric=key, value=value,
                nfe_per_request=cost.get("nfe_per_request"), nfe_per_token=cost.get("nfe_per_token"),
                tokens_per_second=cost.get("tokens_per_second"), speedup_vs_one_per_call=cost.get("tokens_per_nfe"),
                source=str(path.relative_to(results_dir)),
            ))
    slowest: dict[tuple[str, str], float] = {}
    for r in rows:
        if r.nfe_per_request:
            k = (r.task, r.model)
            slowest[k] = max(slowest.get(k, 0.0), r.nfe_per_request)
    for r in rows:
        if r.nfe_per_request:
            r.speedup_vs_slowest = slowest[(r.task, r.model)] / r.nfe_per_request
    rows.sort(key=lambda r: (r.task, r.model, -(r.nfe_per_request or math.inf), r.planner))
    return rows


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


COLUMNS = ("task", "model", "planner", "B", "metric", "value", "NFE/req", "NFE/token", "tokens/s", "x vs 1/call", "x vs slowest")


def _cells(r: Row) -> list[str]:
    return [r.task, r.model, r.planner, _fmt(r.block_length), r.metric, _fmt(r.value, 4), _fmt(r.nfe_per_request, 1),
            _fmt(r.nfe_per_token, 3), _fmt(r.tokens_per_second, 1), _fmt(r.speedup_vs_one_per_call),
            _fmt(r.speedup_vs_slowest)]


def markdown(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def plot(rows: list[Row], path: Path) -> Path:
    """Accuracy against NFE per request, one panel per task, one point per planner run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r.task for r in rows if r.value is not None and r.nfe_per_request})
    if not tasks:
        raise ValueError("no row has both a metric value and NFE: nothing to plot")
    cols = min(3, len(tasks))
    nrows = math.ceil(len(tasks) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5 * cols, 4 * nrows), squeeze=False)
    families = sorted({r.planner.split("(")[0] for r in rows})
    colors = {f: plt.get_cmap("tab10")(i % 10) for i, f in enumerate(families)}
    for ax, task in zip(axes.flat, tasks):
        for r in (r for r in rows if r.task == task and r.value is not None and r.nfe_per_request):
            fam = r.planner.split("(")[0]
            ax.scatter(r.nfe_per_request, r.value, color=colors[fam], label=fam)
            ax.annotate(f"{r.planner} B={_fmt(r.block_length)}", (r.nfe_per_request, r.value), fontsize=6, alpha=0.7)
        ax.set_xscale("log")
        ax.set_xlabel("NFE per request (log)")
        ax.set_ylabel(next(r.metric for r in rows if r.task == task))
        ax.set_title(task)
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles))
        ax.legend(unique.values(), unique.keys(), fontsize=7)
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def summarize(results_dir: Path, out_dir: Path | None = None, metric: str | None = None) -> dict[str, Path]:
    """Write ``summary.md``, ``summary.csv`` and ``accuracy_vs_nfe.png``; print the table."""
    from rich.console import Console
    from rich.table import Table

    rows = load_rows(results_dir, metric)
    if not rows:
        raise ValueError(f"no lm-eval results JSON (with a 'results' key) under {results_dir}")
    out = out_dir or results_dir
    out.mkdir(parents=True, exist_ok=True)
    written = {"markdown": out / "summary.md", "csv": out / "summary.csv"}
    written["markdown"].write_text(markdown(rows), encoding="utf-8")
    with written["csv"].open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(asdict(rows[0])))
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
    if any(r.value is not None and r.nfe_per_request for r in rows):
        written["plot"] = plot(rows, out / "accuracy_vs_nfe.png")
    table = Table(title=f"unmask eval summary: {results_dir}")
    for col in COLUMNS:  # a narrow terminal wraps a cell (fold), never cuts it
        table.add_column(col, justify="left" if col in ("task", "model", "planner", "metric") else "right",
                         overflow="fold")
    for r in rows:
        table.add_row(*_cells(r))
    Console(width=None if sys.stdout.isatty() else LOG_WIDTH).print(table)  # a log or a pipe: the table's own width
    return written
