"""The engine's thread: requests in, one engine step at a time, results and stream events out.

One :class:`unmask.engine.Engine` serves every request (continuous
batching): a request joins the engine's live set at the next step after it
arrives, whatever its settings, and each step is one denoiser call per call
kind over every live row; rows that finish (EOS, a stop string,
``max_tokens``, a cancelled job) leave at the next block end or step. The
worker thread owns the engine; the asyncio side only submits and cancels
(both thread-safe) and reads events from each job's queue. Per-request seeds
and counter-based noise keep every answer equal to offline ``generate`` of
that request alone.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading

from ..canvas import prompt_leads
from ..engine import Engine, EngineConfig, Request
from ..output import GenerationOutput
from .job import Choice, Job, Result, row_text
from .listener import Display, JobListener
from .metrics import Metrics
from .plan import Served
from .schemas import ApiError

log = logging.getLogger("unmask.serve")
IDLE_WAIT_S = 0.5  # an idle worker re-checks for work this often (a submission wakes it at once)
STOP_WAIT_S = 10.0  # how long shutdown waits for the current step


class QueueFull(Exception):
    """``queue_limit`` requests wait; retry after ``retry_after`` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"queue full, retry after {retry_after} s")
        self.retry_after = retry_after


class Worker:
    """The engine and its thread; :meth:`start` and :meth:`stop` inside the server's event loop."""

    def __init__(self, served: Served, metrics: Metrics) -> None:
        s = served.settings
        self.settings, self.metrics = s, metrics
        self.engine = Engine(served.denoiser, EngineConfig(max_rows=s.max_batch, kv_memory=s.kv_memory,
                                                           max_length=s.max_length, compile=s.compile))
        self.display = Display(served.tokenizer, served.denoiser.spec.eos_ids)
        self.jobs: dict[int, Job] = {}  # engine request id -> its job
        self._wake = threading.Event()
        self._swap = threading.Lock()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="unmask-engine", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Stop after the current step, without blocking the event loop; jobs still in flight get 503."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, STOP_WAIT_S)
        for job in list(self.jobs.values()):
            job.post("error", ApiError(503, "the server is shutting down", None, "shutting_down", type="server_error"))
        self.jobs.clear()

    @property
    def waiting(self) -> int:
        return self.engine.waiting

    def submit(self, job: Job) -> None:
        """Queue a job, or raise :class:`QueueFull` (503) or :class:`ApiError` (400: the engine cannot take it)."""
        if self.engine.waiting >= self.settings.queue_limit:
            raise QueueFull(max(1, math.ceil(self.metrics.mean_request_seconds())))
        plan = job.plan
        block = plan.config.block_length if self.engine.model.attention_block is not None else None
        listener = JobListener(job, self.display, prompt_leads(plan.rows, block))
        request = Request(plan.rows, plan.config, plan.seeds, listener)
        job.request = request
        with self._swap:  # not while a failed engine is being replaced
            self.jobs[request.id] = job  # before the engine can finish it (or fail it) in its thread
            try:
                self.engine.add(request)
            except ValueError as err:
                del self.jobs[request.id]
                raise ApiError(400, f"the request cannot run on this server: {err}", None, "invalid_value") from None
        self.metrics.set_queue(self.engine.waiting)
        self._wake.set()

    def cancel(self, job: Job) -> None:
        """Stop working for ``job``: its rows leave the engine at the next step."""
        if job.cancelled:
            return
        job.cancelled = True
        self.metrics.cancel()
        if job.request is not None:
            self.engine.cancel(job.request)

    def health(self) -> dict[str, int]:
        e = self.engine
        return {"queue_depth": e.waiting, "running_rows": e.live_rows, "max_batch": self.settings.max_batch,
                "kv_slots": e.slots, "kv_slots_free": len(e.scheduler.free_slots) if e.runner.arena is not None else e.slots}

    def _loop(self) -> None:
        while not self._stopping:
            if not self.engine.has_work:
                self._wake.wait(IDLE_WAIT_S)
                self._wake.clear()
                continue
            stats = self.engine.stats
            calls, row_calls = stats.calls, stats.row_calls
            try:
                finished = self.engine.step()
            except Exception as err:
                log.exception("the engine failed; answering every request in flight and starting a fresh engine")
                self._restart(err)
                continue
            self.metrics.step(stats.calls - calls, stats.row_calls - row_calls, self.engine.live_rows,
                              self.engine.waiting)
            for request, out in finished:
                job = self.jobs.pop(request.id, None)
                if job is None:
                    continue
                if isinstance(out, Exception):
                    log.warning("request %d failed: %s", request.id, out)
                    job.post("error", _as_api_error(out))
                else:
                    result = self._result(job, out)
                    self.metrics.request_done(result)
                    job.post("done", result)

    def _restart(self, err: Exception) -> None:
        """A fresh engine takes the next requests; every job of the failed one gets ``err`` (as a 500)."""
        fault = ApiError(500, f"generation failed: {type(err).__name__}: {err}", None, "internal_error", type="server_error")
        with self._swap:
            old, self.engine = self.engine, Engine(self.engine.denoiser, self.engine.config)
            for rid in [rid for rid in self.jobs if old.holds(rid)]:
                self.jobs.pop(rid).post("error", fault)

    def _result(self, job: Job, out: GenerationOutput) -> Result:
        generated, reveal, nfe = out.generated.tolist(), out.trace.reveal_call.tolist(), out.nfe_per_row.tolist()
        choices = []
        for r, ids in enumerate(generated):
            text, reason, count = row_text(self.display.tokenizer, ids, self.display.eos, job.plan, True)
            choices.append(Choice(r, text, reason or "length", count, int(nfe[r]), ids, reveal[r]))
        return Result(choices, out.rows_per_call, out.nfe, out.seconds)


def _as_api_error(err: Exception) -> ApiError:
    if isinstance(err, ValueError):  # a user mistake the per-request checks did not catch
        return ApiError(400, f"the request could not be generated: {err}", None, "invalid_value")
    return ApiError(500, f"generation failed: {type(err).__name__}: {err}", None, "internal_error", type="server_error")
