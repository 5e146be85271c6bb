"""The server's counters in Prometheus' text exposition format (``GET /metrics``), without a client library.

Requests by endpoint and status (500s included), queue depth, live rows,
denoiser calls and the rows they carried (rows per call is their ratio),
generated tokens, request latency and connections the server closed, as
counters, gauges and histograms. Updated from the event loop and the
engine's thread, hence the lock.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Histogram:
    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * len(self.buckets)
        self.total, self.sum = 0, 0.0

    def observe(self, value: float) -> None:
        for i, edge in enumerate(self.buckets):
            if value <= edge:
                self.counts[i] += 1
        self.total += 1
        self.sum += value

    def lines(self, name: str) -> list[str]:
        out = [f'{name}_bucket{{le="{edge:g}"}} {count}' for edge, count in zip(self.buckets, self.counts)]
        return out + [f'{name}_bucket{{le="+Inf"}} {self.total}', f"{name}_sum {self.sum:.6f}", f"{name}_count {self.total}"]


class Metrics:
    """Everything ``/metrics`` reports; ``render()`` gives the exposition text."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.queue_depth = 0
        self.live_rows = 0
        self.cancelled = 0
        self.call_rows = Histogram(BATCH_BUCKETS)
        self.latency = Histogram(LATENCY_BUCKETS)
        self.calls = 0
        self.row_calls = 0
        self.tokens = 0
        self.finished = 0
        self.request_seconds = 0.0
        self.closed: dict[str, int] = defaultdict(int)

    def request(self, endpoint: str, status: int) -> None:
        with self._lock:
            self.requests[(endpoint, status)] += 1

    def connection_closed(self, reason: str) -> None:
        """A connection the server closed on its own: ``"limit"`` (over --max-connections) or ``"read_timeout"``."""
        with self._lock:
            self.closed[reason] += 1

    def set_queue(self, depth: int) -> None:
        with self._lock:
            self.queue_depth = depth

    def cancel(self) -> None:
        with self._lock:
            self.cancelled += 1

    def observe_latency(self, seconds: float) -> None:
        with self._lock:
            self.latency.observe(seconds)

    def step(self, calls: int, row_calls: int, live_rows: int, waiting: int) -> None:
        """An engine step ran ``calls`` denoiser calls carrying ``row_calls`` rows in all."""
        with self._lock:
            if calls:
                self.call_rows.observe(row_calls / calls)
            self.calls += calls
            self.row_calls += row_calls
            self.live_rows, self.queue_depth = live_rows, waiting

    def request_done(self, result: Any) -> None:
        """A request finished with ``result`` (its choices, calls and seconds)."""
        with self._lock:
            self.tokens += sum(c.tokens for c in result.choices)
            self.finished += 1
            self.request_seconds += result.seconds

    def mean_request_seconds(self) -> float:
        with self._lock:
            return self.request_seconds / self.finished if self.finished else 1.0

    def rows_per_call(self) -> float:
        with self._lock:
            return self.row_calls / self.calls if self.calls else 0.0

    def render(self) -> str:
        with self._lock:
            out = ["# HELP unmask_requests_total HTTP requests answered, by endpoint and status code.",
                   "# TYPE unmask_requests_total counter"]
            out += [f'unmask_requests_total{{endpoint="{e}",code="{c}"}} {n}' for (e, c), n in sorted(self.requests.items())]
            out += ["# HELP unmask_queue_depth Requests waiting to join the engine (rows or key/value slots full).",
                    "# TYPE unmask_queue_depth gauge", f"unmask_queue_depth {self.queue_depth}",
                    "# HELP unmask_live_rows Rows in the engine after the last step.", "# TYPE unmask_live_rows gauge",
                    f"unmask_live_rows {self.live_rows}",
                    "# HELP unmask_cancelled_total Requests abandoned: client gone or past the timeout.",
                    "# TYPE unmask_cancelled_total counter", f"unmask_cancelled_total {self.cancelled}",
                    "# HELP unmask_denoiser_calls_total Denoiser calls (one batched call counts once).",
                    "# TYPE unmask_denoiser_calls_total counter", f"unmask_denoiser_calls_total {self.calls}",
                    "# HELP unmask_denoiser_row_calls_total Rows summed over denoiser calls.",
                    "# TYPE unmask_denoiser_row_calls_total counter", f"unmask_denoiser_row_calls_total {self.row_calls}",
                    "# HELP unmask_nfe_total Denoiser calls (the same as unmask_denoiser_calls_total).",
                    "# TYPE unmask_nfe_total counter", f"unmask_nfe_total {self.calls}",
                    "# HELP unmask_step_rows Rows per denoiser call, one observation per engine step.",
                    "# TYPE unmask_step_rows histogram", *self.call_rows.lines("unmask_step_rows"),
                    "# HELP unmask_generated_tokens_total Tokens returned to clients.",
                    "# TYPE unmask_generated_tokens_total counter", f"unmask_generated_tokens_total {self.tokens}",
                    "# HELP unmask_request_latency_seconds Time from arrival to the last byte of the answer.",
                    "# TYPE unmask_request_latency_seconds histogram", *self.latency.lines("unmask_request_latency_seconds"),
                    "# HELP unmask_connections_closed_total Connections closed by the server: over the limit, or too slow "
                    "to send a request.", "# TYPE unmask_connections_closed_total counter"]
            out += [f'unmask_connections_closed_total{{reason="{r}"}} {self.closed.get(r, 0)}' for r in ("limit", "read_timeout")]
        return "\n".join(out) + "\n"
