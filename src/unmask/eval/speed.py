"""Per-task cost counters, so accuracy and speed come from the same run.

The lm-eval model records every request it serves under the request's task;
:func:`merge` sums the counters of all data-parallel ranks and
:func:`speed_report` turns them into the ``unmask_speed`` block of the results
JSON. Definitions (all per task):

- ``requests``: requests served (data-parallel padding duplicates excluded).
- ``nfe``: denoiser calls summed over requests, counting a call once for each
  request that took part in it (calls a request needs were it run alone). For
  ``loglikelihood`` a request costs ``mc_num`` draws plus its greedy-check calls.
- ``gen_positions``: generated canvas positions (gen_length per request, after
  rounding ``max_gen_toks`` up to whole blocks); ``answer_tokens``: tokens kept
  in the answer (before EOS, within ``max_gen_toks``).
- ``nfe_per_token`` = nfe / gen_positions; ``tokens_per_nfe`` = its inverse, the
  speed-up in calls over one-token-per-call decoding.
- ``seconds``: wall time of the batches, split evenly over their requests and
  summed over ranks (device-seconds); ``tokens_per_second`` = gen_positions /
  seconds, throughput per device.
"""

from __future__ import annotations

import sys

from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from typing import Any

UNKNOWN_TASK = "_unknown"  # requests that carry no task name (direct calls outside lm-eval)
SPEED_KEY = "unmask_speed"


@dataclass
class TaskSpeed:
    """Raw counters for one task (summable across batches and ranks)."""

    requests: int = 0
    nfe: int = 0
    gen_positions: int = 0
    answer_tokens: int = 0
    seconds: float = 0.0

    def add(self, other: TaskSpeed) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


class SpeedMeter:
    """Counters per task plus the number of real (batched) denoiser calls."""

    def __init__(self) -> None:
        self.tasks: dict[str, TaskSpeed] = {}
        self.denoiser_calls = 0

    def record(
        self, task: str | None, *, nfe: int, seconds: float, gen_positions: int = 0, answer_tokens: int = 0
    ) -> None:
        """Count one request of ``task``."""
        entry = self.tasks.setdefault(task or UNKNOWN_TASK, TaskSpeed())
        entry.add(TaskSpeed(1, int(nfe), int(gen_positions), int(answer_tokens), float(seconds)))

    def snapshot(self) -> dict[str, Any]:
        """Plain-data copy, safe to send between processes."""
        return {"tasks": {k: asdict(v) for k, v in self.tasks.items()}, "denoiser_calls": self.denoiser_calls}


def merge(snapshots: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Sum the snapshots of several ranks."""
    tasks: dict[str, TaskSpeed] = {}
    calls, ranks = 0, 0
    for snap in snapshots:
        ranks += 1
        calls += int(snap["denoiser_calls"])
        for name, raw in snap["tasks"].items():
            tasks.setdefault(name, TaskSpeed()).add(TaskSpeed(**raw))
    return {"tasks": {k: asdict(v) for k, v in tasks.items()}, "denoiser_calls": calls, "ranks": ranks}


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def derived(raw: dict[str, Any]) -> dict[str, Any]:
    """Counters plus the per-request, per-token and per-second figures."""
    s = TaskSpeed(**{f.name: raw[f.name] for f in fields(TaskSpeed)})
    return {
        **asdict(s),
        "nfe_per_request": _ratio(s.nfe, s.requests),
        "nfe_per_token": _ratio(s.nfe, s.gen_positions),
        "tokens_per_nfe": _ratio(s.gen_positions, s.nfe) if s.gen_positions else None,
        "tokens_per_second": _ratio(s.gen_positions, s.seconds) if s.gen_positions else None,
        "answer_tokens_per_second": _ratio(s.answer_tokens, s.seconds) if s.gen_positions else None,
    }


def speed_report(merged: dict[str, Any], wall_seconds: float, world_size: int) -> dict[str, Any]:
    """The ``unmask_speed`` block: one entry per task and a ``_total`` entry."""
    report = {name: derived(raw) for name, raw in sorted(merged["tasks"].items())}
    total = TaskSpeed()
    for raw in merged["tasks"].values():
        total.add(TaskSpeed(**raw))
    report["_total"] = {
        **derived(asdict(total)),
        "denoiser_calls": merged["denoiser_calls"],
        "eval_wall_seconds": wall_seconds,
        "world_size": world_size,
    }
    return report


def print_speed(report: dict[str, Any]) -> None:
    """Print the ``unmask_speed`` block as a table."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="unmask speed (from the same run as the accuracy above)")
    cols = ("task", "requests", "NFE", "NFE/request", "NFE/token", "tokens/NFE", "seconds", "tokens/s")
    for col in cols:
        table.add_column(col, justify="left" if col == "task" else "right", overflow="fold")  # wrap, never cut

    def fmt(v: Any, digits: int = 2) -> str:
        return "-" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)

    for name, row in report.items():
        table.add_row(
            name, fmt(row["requests"]), fmt(row["nfe"]), fmt(row["nfe_per_request"]), fmt(row["nfe_per_token"], 3),
            fmt(row["tokens_per_nfe"]), fmt(row["seconds"]), fmt(row["tokens_per_second"], 1),
        )
    Console(width=None if sys.stdout.isatty() else 1000).print(table)  # a log or a pipe: the table's own width
