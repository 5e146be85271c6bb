"""The server's engine worker: requests with any settings share calls and get what they get offline, alone;
cancelled rows leave; failures stay with their request; the queue limit; shutdown does not block the event loop."""

from __future__ import annotations

import asyncio
import time

import pytest

pytest.importorskip("fastapi")

import torch  # noqa: E402

import unmask  # noqa: E402
from unmask.denoiser import Denoiser  # noqa: E402
from unmask.serve import Served, ServeSettings  # noqa: E402
from unmask.serve.job import Job  # noqa: E402
from unmask.serve.listener import Display, JobListener  # noqa: E402
from unmask.serve.metrics import Metrics  # noqa: E402
from unmask.serve.plan import build_plan  # noqa: E402
from unmask.serve.prompts import completion_prompts  # noqa: E402
from unmask.serve.schemas import ApiError, CompletionRequest  # noqa: E402
from unmask.serve.worker import QueueFull, Worker  # noqa: E402

PROMPTS = ["Q:26+34-6+33;", "Q:7+5;", "Q:86*2+89;", "Q:41-17*3+2-9;"]
MIXED = [  # different max_tokens, planners, blocks, sampling, stop strings and n: one engine serves them all
    dict(max_tokens=32, block_length=16, seed=11),
    dict(max_tokens=16, block_length=8, planner="threshold(tau=0.9)", temperature=0.8, seed=3, n=2),
    dict(max_tokens=24, block_length=8, planner="topk(counts='dilated')", stop=";A:"),
    dict(max_tokens=48, block_length=16, planner="eb(gamma=0.5)", temperature=1.0, top_p=0.9, seed=5, cache="dual"),
]


@pytest.fixture(scope="module")
def served() -> Served:
    den, tok = unmask.load("tiny-arith")
    return Served(den, tok, ServeSettings(max_batch=16))


def _job(served: Served, loop, prompt: str, **fields) -> Job:  # type: ignore[no-untyped-def]
    req = CompletionRequest(prompt=prompt, **fields)
    return Job(build_plan(req, served, lambda: completion_prompts(req, served)), loop)


def _serve(served: Served, body):  # type: ignore[no-untyped-def]
    async def main():  # type: ignore[no-untyped-def]
        worker = Worker(served, Metrics())
        worker.start()
        try:
            return await body(worker, asyncio.get_running_loop())
        finally:
            await worker.stop()

    return asyncio.run(main())


async def _final(job: Job) -> tuple[str, object]:
    while True:
        kind, data = await asyncio.wait_for(job.events.get(), 60)
        if kind in ("done", "error"):
            assert job.events.empty()
            return kind, data


def _offline(served: Served, job: Job):  # type: ignore[no-untyped-def]
    """What offline generate gives the request alone, cut as the server cuts it."""
    from unmask.serve.job import row_text

    out = unmask.generate(served.denoiser, job.plan.rows, job.plan.config, seeds=job.plan.seeds)
    eos = set(served.denoiser.spec.eos_ids)
    return [row_text(served.tokenizer, ids, eos, job.plan, True)[0] for ids in out.generated.tolist()]


def test_requests_with_any_settings_share_calls_and_answer_as_offline_alone(served: Served) -> None:
    async def body(worker: Worker, loop):  # type: ignore[no-untyped-def]
        jobs = [_job(served, loop, p, **fields) for p, fields in zip(PROMPTS, MIXED, strict=True)]
        for job in jobs:
            worker.submit(job)
        return jobs, [await _final(job) for job in jobs], worker.metrics.rows_per_call()

    jobs, finals, rows_per_call = _serve(served, body)
    for job, (kind, result) in zip(jobs, finals, strict=True):
        assert kind == "done"
        assert [c.text for c in result.choices] == _offline(served, job)
    assert rows_per_call > 1.5, "requests with different settings did not share calls"


def test_a_request_that_arrives_later_joins_the_running_ones(served: Served) -> None:
    async def body(worker: Worker, loop):  # type: ignore[no-untyped-def]
        long = _job(served, loop, PROMPTS[0], max_tokens=48, block_length=8, planner="topk(steps=48)")
        worker.submit(long)
        await asyncio.sleep(0.05)
        short = _job(served, loop, PROMPTS[1], max_tokens=8, block_length=8)
        worker.submit(short)
        done_short = await _final(short)
        still_running = not long.events.qsize() and worker.engine.has_work
        return long, short, done_short, await _final(long), still_running

    long, short, (k1, r1), (k2, r2), still_running = _serve(served, body)
    assert k1 == k2 == "done" and still_running, "the short request waited for the long one"
    assert [c.text for c in r1.choices] == _offline(served, short)
    assert [c.text for c in r2.choices] == _offline(served, long)


def test_cancelled_jobs_leave_and_others_keep_their_tokens(served: Served) -> None:
    async def body(worker: Worker, loop):  # type: ignore[no-untyped-def]
        jobs = [_job(served, loop, p, max_tokens=48, block_length=8, planner="topk(steps=48)") for p in PROMPTS[:3]]
        for job in jobs:
            worker.submit(job)
        worker.cancel(jobs[1])
        finals = [await _final(jobs[0]), await _final(jobs[2])]
        deadline = time.monotonic() + 10
        while worker.engine.has_work and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return jobs, finals, worker.engine.has_work, jobs[1].events.qsize()

    jobs, finals, busy, cancelled_events = _serve(served, body)
    assert not busy and cancelled_events == 0  # the cancelled job got no answer and holds nothing
    for job, (kind, result) in zip((jobs[0], jobs[2]), finals, strict=True):
        assert kind == "done" and [c.text for c in result.choices] == _offline(served, job)


def test_queue_limit(served: Served) -> None:
    settings = ServeSettings(max_batch=1, queue_limit=1)
    small = Served(served.denoiser, served.tokenizer, settings)
    loop = asyncio.new_event_loop()
    try:
        worker = Worker(small, Metrics())  # not started: nothing leaves the queue
        worker.submit(_job(small, loop, PROMPTS[0], max_tokens=8, block_length=8))
        with pytest.raises(QueueFull) as full:
            worker.submit(_job(small, loop, PROMPTS[1], max_tokens=8, block_length=8))
        assert full.value.retry_after >= 1
    finally:
        loop.close()


class NaNFor(Denoiser):
    """The bundled model, except that rows whose first token is ``bad`` get NaN logits."""

    def __init__(self, inner: Denoiser, bad: int) -> None:
        self.inner, self.spec, self.bad = inner, inner.spec, bad

    def __call__(self, ids, attention_mask, position_ids, window=None):  # type: ignore[no-untyped-def]
        logits = self.inner(ids, attention_mask, position_ids, window)
        first = ids.gather(1, attention_mask.long().argmax(-1, keepdim=True))
        return torch.where((first == self.bad).unsqueeze(-1), torch.nan, logits)


def test_a_failing_request_gets_its_error_and_the_others_their_answers(served: Served) -> None:
    q = completion_prompts(CompletionRequest(prompt="Q:9+9;"), served)[0][0]  # the first token of "Q:..."
    nan = Served(NaNFor(served.denoiser, q), served.tokenizer, served.settings)

    async def body(worker: Worker, loop):  # type: ignore[no-untyped-def]
        good = _job(nan, loop, "7+5;", max_tokens=8, block_length=8)  # starts with another token
        bad = _job(nan, loop, "Q:9+9;", max_tokens=8, block_length=8)
        worker.submit(good)
        worker.submit(bad)
        return await _final(good), await _final(bad)

    (k_good, _), (k_bad, err) = _serve(nan, body)
    assert k_good == "done" and k_bad == "error"
    assert isinstance(err, ApiError) and err.status == 400 and "NaN" in str(err.body())


def test_listener_drops_finished_and_cancelled_rows(served: Served) -> None:
    loop = asyncio.new_event_loop()
    try:
        job = _job(served, loop, PROMPTS[0], n=3, max_tokens=8, block_length=8)
        listener = JobListener(job, Display(served.tokenizer, served.denoiser.spec.eos_ids))
        assert listener.dropped() == []
        listener.done_rows.add(2)
        assert listener.dropped() == [2]
        job.cancelled = True
        assert listener.dropped() == [0, 1, 2]
    finally:
        loop.close()


def test_stop_does_not_block_the_event_loop_and_answers_jobs_in_flight(served: Served) -> None:
    async def body(worker: Worker, loop):  # type: ignore[no-untyped-def]
        step = worker.engine.step

        def slow_step():  # type: ignore[no-untyped-def]
            time.sleep(0.3)
            return step()

        worker.engine.step = slow_step  # type: ignore[method-assign]
        job = _job(served, loop, PROMPTS[0], max_tokens=48, block_length=8, planner="topk(steps=48)")
        worker.submit(job)
        await asyncio.sleep(0.05)  # the worker is inside a step now
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.005)

        ticker = asyncio.create_task(tick())
        await worker.stop()
        ticker.cancel()
        return await _final(job), ticks

    (kind, data), ticks = _serve(served, body)
    assert ticks > 10, "stop() blocked the event loop while it waited for the step"
    assert kind == "error" and data.status == 503 and data.body()["error"]["code"] == "shutting_down"


def test_an_engine_fault_answers_every_job_and_the_worker_goes_on(served: Served) -> None:
    async def body(worker: Worker, loop):  # type: ignore[no-untyped-def]
        step = worker.engine.step

        def broken():  # type: ignore[no-untyped-def]
            raise RuntimeError("the device fell over")

        worker.engine.step = broken  # type: ignore[method-assign]
        jobs = [_job(served, loop, p, max_tokens=8, block_length=8) for p in PROMPTS[:2]]
        for job in jobs:
            worker.submit(job)
        faults = [await _final(job) for job in jobs]
        after = _job(served, loop, PROMPTS[2], max_tokens=8, block_length=8)
        worker.submit(after)  # the fresh engine serves it
        assert worker.engine.step != broken and step is not None
        return faults, await _final(after)

    faults, (kind, result) = _serve(served, body)
    assert all(k == "error" and e.status == 500 and "fell over" in str(e.body()) for k, e in faults)
    assert kind == "done" and [c.text for c in result.choices] == _offline(served, _job(served, None, PROMPTS[2], max_tokens=8, block_length=8))
