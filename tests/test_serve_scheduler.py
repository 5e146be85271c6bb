"""The server's batching: which requests share a generate call, isolation of failures, and exactness.

Scheduler rules run against a recording stand-in for the engine (no model);
exactness runs the real engine on the bundled model: a request's tokens are
the same batched with others (different prompt lengths, n > 1, sampled rows)
as alone, and the same as offline ``generate`` with the request's seed.
"""

from __future__ import annotations

import asyncio
import time

import pytest

pytest.importorskip("fastapi")

import unmask  # noqa: E402
from unmask.config import GenerationConfig  # noqa: E402
from unmask.serve import Served, ServeSettings  # noqa: E402
from unmask.serve.engine import BatchListener, Choice, Engine, Job, Result  # noqa: E402
from unmask.serve.metrics import Metrics  # noqa: E402
from unmask.serve.plan import Plan, build_plan  # noqa: E402
from unmask.serve.prompts import completion_prompts  # noqa: E402
from unmask.serve.scheduler import QueueFull, Scheduler  # noqa: E402
from unmask.serve.schemas import ApiError, CompletionRequest  # noqa: E402

A = GenerationConfig(gen_length=8, block_length=8)
B = GenerationConfig(gen_length=16, block_length=8)


def plan(config: GenerationConfig = A, n: int = 1, prompt: int = 5) -> Plan:
    return Plan(kind="completion", prompts=[[prompt]], n=n, config=config, max_tokens=config.gen_length, stop=(),
                seeds=list(range(n)), stream=False, reveal=False, include_usage=False)


class Recorder:
    """Stands in for the engine: records batches; a batch holding prompt 99 raises."""

    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[list[Job]] = []
        self.delay = delay

    def __call__(self, jobs: list[Job]) -> list[Result | None]:
        self.batches.append(list(jobs))
        time.sleep(self.delay)
        if any(job.plan.prompts == [[99]] for job in jobs):
            raise RuntimeError("poisoned batch")
        rows = sum(len(j.plan.rows) for j in jobs)
        return [Result([Choice(0, "x", "length", 1, 1, [], [])], rows, 1, 0.0) for _ in jobs]


async def _finals(jobs: list[Job]) -> list[tuple[str, object]]:
    out = []
    for job in jobs:
        kind, data = await asyncio.wait_for(job.events.get(), 10)
        out.append((kind, data))
        assert job.events.empty()  # exactly one final event per job
    return out


def _run(coro_fn, recorder: Recorder, **settings):  # type: ignore[no-untyped-def]
    async def main():  # type: ignore[no-untyped-def]
        scheduler = Scheduler(recorder, ServeSettings(**settings), Metrics())
        scheduler.start()
        try:
            return await coro_fn(scheduler, asyncio.get_running_loop())
        finally:
            await scheduler.stop()

    return asyncio.run(main())


def test_compatible_requests_share_a_call_up_to_max_batch() -> None:
    rec = Recorder()

    async def go(s: Scheduler, loop):  # type: ignore[no-untyped-def]
        jobs = [Job(plan(A), loop) for _ in range(5)] + [Job(plan(B), loop), Job(plan(A, n=2), loop), Job(plan(B), loop)]
        for job in jobs:
            s.submit(job)
        await _finals(jobs)
        return jobs

    jobs = _run(go, rec, max_batch=4, batch_wait_ms=200.0)
    idx = [[jobs.index(j) for j in batch] for batch in rec.batches]
    # FIFO heads; each batch one config; rows <= 4 (job 6 has two rows and waits for the next A batch)
    assert idx == [[0, 1, 2, 3], [4, 6], [5, 7]]


def test_batch_wait_bounds_the_wait_for_a_lone_request() -> None:
    rec = Recorder()

    async def go(s: Scheduler, loop):  # type: ignore[no-untyped-def]
        job = Job(plan(), loop)
        t0 = time.monotonic()
        s.submit(job)
        await _finals([job])
        return time.monotonic() - t0

    waited = _run(go, rec, max_batch=8, batch_wait_ms=100.0)
    assert 0.09 <= waited < 5.0 and len(rec.batches) == 1


def test_a_failing_batch_is_split_and_only_the_bad_request_fails() -> None:
    rec = Recorder()

    async def go(s: Scheduler, loop):  # type: ignore[no-untyped-def]
        jobs = [Job(plan(), loop), Job(plan(prompt=99), loop), Job(plan(), loop)]
        for job in jobs:
            s.submit(job)
        return await _finals(jobs)

    finals = _run(go, rec, max_batch=8, batch_wait_ms=100.0)
    assert [k for k, _ in finals] == ["done", "error", "done"]
    err = finals[1][1]
    assert isinstance(err, ApiError) and err.status == 500 and "poisoned batch" in err.message
    assert [len(b) for b in rec.batches] == [3, 1, 1, 1]  # the batch, then each alone


def test_cancelled_requests_leave_the_queue_and_a_full_queue_refuses() -> None:
    rec = Recorder(delay=0.2)

    async def go(s: Scheduler, loop):  # type: ignore[no-untyped-def]
        first = Job(plan(), loop)
        s.submit(first)
        await asyncio.sleep(0.05)  # first is running now (0.2 s)
        waiting = [Job(plan(), loop), Job(plan(), loop)]
        for job in waiting:
            s.submit(job)
        with pytest.raises(QueueFull) as full:
            s.submit(Job(plan(), loop))
        assert full.value.retry_after >= 1
        s.cancel(waiting[0])
        await _finals([first, waiting[1]])
        return first, waiting

    first, waiting = _run(go, rec, max_batch=8, batch_wait_ms=0.0, queue_limit=2)
    assert [[j for j in b] for b in rec.batches] == [[first], [waiting[1]]]


@pytest.fixture
def loop():  # type: ignore[no-untyped-def]
    """An event loop the engine's events are posted to (never run: the tests read results, not events)."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def test_listener_drops_cancelled_and_finished_rows(loop) -> None:
    jobs = [Job(plan(n=2), loop), Job(plan(), loop)]
    listener = BatchListener(Engine.__new__(Engine), jobs, [(0, 2), (2, 3)])
    assert listener.dropped() == []
    jobs[0].cancelled = True
    listener.done_rows.add(2)
    assert listener.dropped() == [0, 1, 2]


@pytest.fixture(scope="module")
def served() -> Served:
    den, tok = unmask.load("tiny-arith")
    return Served(den, tok, ServeSettings(max_batch=16))


PROMPTS = ["Q:26+34-6+33;", "Q:7+5;", "Q:86*2+89;"]


def _job(served: Served, loop, prompt: str, **fields) -> Job:  # type: ignore[no-untyped-def]
    req = CompletionRequest(prompt=prompt, **fields)
    return Job(build_plan(req, served, lambda: completion_prompts(req, served)), loop)


@pytest.mark.parametrize("sampling", [{}, {"temperature": 1.0, "top_p": 0.9}], ids=["greedy", "sampled"])
def test_rows_are_the_same_batched_or_alone_and_offline(served: Served, loop, sampling: dict) -> None:
    engine = Engine(served)
    fields = {"block_length": 16, "seed": 11, **sampling}
    jobs = [_job(served, loop, p, n=1 + (i % 2), **fields) for i, p in enumerate(PROMPTS)]  # 4 rows, 3 widths
    together = engine.run(jobs)
    alone = [engine.run([job])[0] for job in jobs]
    for t, a in zip(together, alone, strict=True):
        assert t is not None and a is not None
        assert [c.ids for c in t.choices] == [c.ids for c in a.choices]
        assert [c.text for c in t.choices] == [c.text for c in a.choices]
        assert t.batch_rows == 4 and a.batch_rows == len(a.choices)
    # a request with seed s is offline generate(..., GenerationConfig(seed=s)) on its prompt (n rows)
    den, tok = served.denoiser, served.tokenizer
    for job, res in zip(jobs, together, strict=True):
        cfg = GenerationConfig(gen_length=32, block_length=16, sampling={"temperature": 0.0, **sampling}, seed=11)
        out = unmask.generate(den, job.plan.rows, cfg, tokenizer=tok)
        assert out.texts == [c.text for c in res.choices]
        assert out.generated.tolist() == [c.ids for c in res.choices]


def test_cancelled_job_is_dropped_and_others_keep_their_tokens(served: Served, loop) -> None:
    engine = Engine(served)
    reference = engine.run([_job(served, loop, p, block_length=16) for p in PROMPTS])
    jobs = [_job(served, loop, p, block_length=16) for p in PROMPTS]
    jobs[1].cancelled = True
    results = engine.run(jobs)
    assert results[1] is None
    for i in (0, 2):
        assert results[i].choices[0].ids == reference[i].choices[0].ids  # type: ignore[union-attr]


def test_stop_string_finishes_a_row_early(served: Served, loop) -> None:
    engine = Engine(served)
    full = engine.run([_job(served, loop, PROMPTS[0], block_length=8)])[0]
    stopped = engine.run([_job(served, loop, PROMPTS[0], block_length=8, stop=";")])[0]
    assert full is not None and stopped is not None
    assert stopped.choices[0].text == full.choices[0].text.split(";")[0]
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.choices[0].nfe < full.choices[0].nfe  # the row left the call after its first block
