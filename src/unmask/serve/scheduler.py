"""Request batching above :func:`unmask.generate`: gather compatible requests, run them as one call.

Requests wait in one FIFO queue. The oldest decides the next batch: every
waiting request with an equal :class:`~unmask.config.GenerationConfig`
(canvas length, planner, sampling, cache, guidance) joins it, oldest first,
up to ``max_batch`` rows; the scheduler waits at most ``batch_wait_ms`` after
the oldest arrived for more to come, and not at all once the batch is full.
Batches run one at a time in a worker thread (one model, one device); while
one runs, the next gathers. Each row carries its request's seeds, so a row's
tokens do not depend on its batch.

A batch whose call raises is split: each request reruns alone, so one bad
request cannot take others down with it; its error reaches only its own
client. Cancelled requests leave the queue, or their rows are dropped
between blocks of the running call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from .engine import Job, Result
from .metrics import Metrics
from .schemas import ApiError
from .settings import ServeSettings

log = logging.getLogger("unmask.serve")
RunBatch = Callable[[list[Job]], list[Result | None]]


class QueueFull(Exception):
    """The queue holds ``queue_limit`` requests; retry after ``retry_after`` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"queue full, retry after {retry_after} s")
        self.retry_after = retry_after


class Scheduler:
    """Owns the queue and the worker thread; :meth:`start` inside the server's event loop."""

    def __init__(self, run_batch: RunBatch, settings: ServeSettings, metrics: Metrics) -> None:
        self.run_batch, self.settings, self.metrics = run_batch, settings, metrics
        self.pending: list[Job] = []
        self.running: list[Job] = []
        self._wake = asyncio.Event()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="unmask-generate")
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._serve(), name="unmask-scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._worker.shutdown(wait=True, cancel_futures=True)

    def submit(self, job: Job) -> None:
        """Queue a job, or raise :class:`QueueFull`."""
        if len(self.pending) >= self.settings.queue_limit:
            batches = len(self.pending) / self.settings.max_batch + 1
            raise QueueFull(max(1, math.ceil(batches * self.metrics.mean_batch_seconds())))
        self.pending.append(job)
        self.metrics.set_queue(len(self.pending))
        self._wake.set()

    def cancel(self, job: Job) -> None:
        """Stop working for ``job``: it leaves the queue, or its rows leave the running call after this block."""
        if job.cancelled:
            return
        job.cancelled = True
        self.metrics.cancel()
        if job in self.pending:
            self.pending.remove(job)
            self.metrics.set_queue(len(self.pending))

    def _gather(self, head: Job) -> tuple[list[Job], int]:
        batch, rows = [], 0
        for job in self.pending:
            size = len(job.plan.rows)
            if job.plan.config == head.plan.config and rows + size <= self.settings.max_batch:
                batch.append(job)
                rows += size
        return batch, rows

    async def _next_batch(self) -> list[Job]:
        """Wait for a request, then up to ``batch_wait_ms`` for compatible ones (less once the batch is full)."""
        while True:
            while not self.pending:
                self._wake.clear()
                await self._wake.wait()
            head = self.pending[0]
            batch, rows = self._gather(head)
            left = head.arrived + self.settings.batch_wait_ms / 1000 - time.monotonic()
            if rows >= self.settings.max_batch or left <= 0:
                break
            self._wake.clear()
            with contextlib.suppress(TimeoutError):  # the wait is over; the next turn runs what has gathered
                await asyncio.wait_for(self._wake.wait(), left)
        for job in batch:
            self.pending.remove(job)
        self.metrics.set_queue(len(self.pending))
        return batch

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            self.running = batch
            await loop.run_in_executor(self._worker, self._run, batch)
            self.running = []

    def _run(self, batch: list[Job]) -> None:
        """In the worker thread: the batch, or each job alone if the batch fails."""
        t0 = time.perf_counter()
        try:
            results = self.run_batch(batch)
        except Exception as err:  # noqa: BLE001 - isolated below, reported to the client(s) it belongs to
            if len(batch) == 1:
                log.exception("generation failed for one request")
                batch[0].post("error", _as_api_error(err))
                return
            log.warning("a batch of %d requests failed (%s); running each alone", len(batch), err)
            for job in batch:
                self._run([job])
            return
        self.metrics.batch_done(results, time.perf_counter() - t0)
        for job, result in zip(batch, results, strict=True):
            if result is not None:
                job.post("done", result)


def _as_api_error(err: Exception) -> ApiError:
    if isinstance(err, ValueError):  # a user mistake the per-request checks did not catch
        return ApiError(400, f"the request could not be generated: {err}", None, "invalid_value")
    return ApiError(500, f"generation failed: {type(err).__name__}: {err}", None, "internal_error", type="server_error")
