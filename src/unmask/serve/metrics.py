"""The server's counters in Prometheus' text exposition format (``GET /metrics``), without a client library.

Requests by endpoint and status (500s included), queue depth, batch sizes
(rows per generate call), denoiser calls (NFE), generated tokens and
tokens/s, request latency and connections the server closed, as counters,
gauges and histograms. Updated from the event loop and the worker thread,
hence the lock.
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
        self.cancelled = 0
        self.batch_rows = Histogram(BATCH_BUCKETS)
        self.latency = Histogram(LATENCY_BUCKETS)
        self.nfe = 0
        self.tokens = 0
        self.batch_seconds = 0.0
        self.last_tokens_per_second = 0.0
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

    def batch_done(self, results: Sequence[Any], seconds: float) -> None:
        """A generate call finished: ``results`` per job (None for cancelled ones), ``seconds`` of wall time."""
        done = [r for r in results if r is not None]
        tokens = sum(c.tokens for r in done for c in r.choices)
        with self._lock:
            if done:
                self.batch_rows.observe(done[0].batch_rows)
                self.nfe += done[0].nfe
            self.tokens += tokens
            self.batch_seconds += seconds
            self.last_tokens_per_second = tokens / seconds if seconds > 0 else 0.0

    def mean_batch_seconds(self) -> float:
        with self._lock:
            return self.batch_seconds / self.batch_rows.total if self.batch_rows.total else 1.0

    def mean_batch_rows(self) -> float:
        with self._lock:
            return self.batch_rows.sum / self.batch_rows.total if self.batch_rows.total else 0.0

    def render(self) -> str:
        with self._lock:
            out = ["# HELP unmask_requests_total HTTP requests answered, by endpoint and status code.",
                   "# TYPE unmask_requests_total counter"]
            out += [f'unmask_requests_total{{endpoint="{e}",code="{c}"}} {n}' for (e, c), n in sorted(self.requests.items())]
            out += ["# HELP unmask_queue_depth Requests waiting for a batch.", "# TYPE unmask_queue_depth gauge",
                    f"unmask_queue_depth {self.queue_depth}",
                    "# HELP unmask_cancelled_total Requests abandoned: client gone or past the timeout.",
                    "# TYPE unmask_cancelled_total counter", f"unmask_cancelled_total {self.cancelled}",
                    "# HELP unmask_batch_rows Rows (prompts x n) per generate call.", "# TYPE unmask_batch_rows histogram",
                    *self.batch_rows.lines("unmask_batch_rows"),
                    "# HELP unmask_nfe_total Denoiser calls (one batched call counts once).", "# TYPE unmask_nfe_total counter",
                    f"unmask_nfe_total {self.nfe}",
                    "# HELP unmask_generated_tokens_total Tokens returned to clients.",
                    "# TYPE unmask_generated_tokens_total counter", f"unmask_generated_tokens_total {self.tokens}",
                    "# HELP unmask_generate_seconds_total Wall time spent in generate calls.",
                    "# TYPE unmask_generate_seconds_total counter", f"unmask_generate_seconds_total {self.batch_seconds:.6f}",
                    "# HELP unmask_tokens_per_second Tokens per second of the last generate call.",
                    "# TYPE unmask_tokens_per_second gauge", f"unmask_tokens_per_second {self.last_tokens_per_second:.3f}",
                    "# HELP unmask_request_latency_seconds Time from arrival to the last byte of the answer.",
                    "# TYPE unmask_request_latency_seconds histogram", *self.latency.lines("unmask_request_latency_seconds"),
                    "# HELP unmask_connections_closed_total Connections closed by the server: over the limit, or too slow "
                    "to send a request.", "# TYPE unmask_connections_closed_total counter"]
            out += [f'unmask_connections_closed_total{{reason="{r}"}} {self.closed.get(r, 0)}' for r in ("limit", "read_timeout")]
        return "\n".join(out) + "\n"
