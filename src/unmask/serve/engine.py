"""The worker side: one batch of requests through one :func:`unmask.generate` call, events out as it runs.

Runs in the scheduler's worker thread. A :class:`BatchListener` turns the
loop's events into each request's events: the positions and tokens each call
revealed (requests that asked for ``reveal_events``), the text each finished
block adds (streaming requests), and rows to drop: those of requests that
were cancelled (client gone, timeout) and rows already finished by a stop
string or ``max_tokens``, which stop costing calls. Events reach the asyncio
side through :meth:`Job.post` (``call_soon_threadsafe``).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from ..loop import generate
from ..output import BlockEvent, CallEvent, Listener
from ..text import first_eos, trim_at_stop
from ..viz import EOS_GLYPH, token_pieces
from .plan import Plan, Served


@dataclass
class Choice:
    index: int
    text: str
    finish_reason: str
    tokens: int  # generated tokens up to EOS, at most max_tokens
    nfe: int  # denoiser calls in which this row had masked positions
    ids: list[int]  # the whole canvas' generated ids
    reveal_call: list[int]  # call that revealed each generated position (FILLED = -1 after EOS)


@dataclass
class Result:
    choices: list[Choice]
    batch_rows: int  # rows of the generate call this request shared
    nfe: int  # batched denoiser calls of that generate call
    seconds: float


@dataclass
class Job:
    """One request in flight: its plan, where its events go, and its per-row stream state."""

    plan: Plan
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    arrived: float = field(default_factory=time.monotonic)
    cancelled: bool = False  # set on the asyncio side; read by the worker between blocks
    sent: list[str] = field(default_factory=list)  # text already streamed, per row
    finished: list[bool] = field(default_factory=list)  # rows whose final chunk was sent

    def __post_init__(self) -> None:
        rows = len(self.plan.rows)
        self.sent, self.finished = [""] * rows, [False] * rows

    def post(self, kind: str, data: Any) -> None:
        """Hand an event to the request's handler (from any thread)."""
        self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, data))


def usage(plan: Plan, result: Result) -> dict[str, int]:
    """OpenAI's usage object: prompt tokens once per prompt, completion tokens summed over choices."""
    prompt = sum(len(p) for p in plan.prompts)
    completion = sum(c.tokens for c in result.choices)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def row_text(tokenizer: Any, ids: list[int], eos: set[int], plan: Plan, complete: bool) -> tuple[str, str | None, int]:
    """A row's text from its first ``len(ids)`` generated ids: cut at ``max_tokens``, EOS and stop strings.

    Returns ``(text, finish_reason, tokens)``; the reason is None while the row
    may still grow (no EOS or stop string yet and not ``complete``).
    """
    ids = ids[: plan.max_tokens]
    end = first_eos(ids, eos)
    reason = None if end is None else "stop"
    ids = ids if end is None else ids[:end]
    text = tokenizer.decode(ids, skip_special_tokens=True)
    trimmed = trim_at_stop(text, plan.stop)
    if len(trimmed) < len(text):
        text, reason = trimmed, "stop"
    if reason is None and (complete or len(ids) >= plan.max_tokens):
        reason = "length"
    return text, reason, len(ids)


def visible(text: str, plan: Plan, finished: bool) -> str:
    """What may be streamed of an unfinished row: not a tail that could start a stop string or a split character."""
    if finished:
        return text
    hold = max((len(s) for s in plan.stop), default=1) - 1
    text = text[: len(text) - hold] if hold else text
    return text.rstrip("\ufffd")


class BatchListener(Listener):
    """Routes one batch's loop events to its jobs; ``spans[j]`` are job j's rows ``[a, b)`` in the batch."""

    def __init__(self, engine: Engine, jobs: list[Job], spans: list[tuple[int, int]]) -> None:
        self.engine, self.jobs, self.spans = engine, jobs, spans
        self.reveal = [j for j, job in enumerate(jobs) if job.plan.reveal]
        gen = jobs[0].plan.config.gen_length
        # rows whose text is followed block by block: streamed, or able to finish before the canvas does
        self.tracked = [j for j, job in enumerate(jobs) if job.plan.stream or job.plan.stop or job.plan.max_tokens < gen]
        self.done_rows: set[int] = set()

    def on_call(self, event: CallEvent) -> None:
        if not self.reveal:
            return
        reveal, tokens = event.reveal.tolist(), event.tokens.tolist()
        for j in self.reveal:
            job, (a, b) = self.jobs[j], self.spans[j]
            rows = []
            for r in range(a, b):
                cols = [i for i, hit in enumerate(reveal[r]) if hit]
                if cols and not job.cancelled:
                    toks = [tokens[r][i] for i in cols]
                    rows.append({"index": r - a, "positions": [event.offset + i for i in cols], "tokens": toks,
                                 "pieces": self.engine.pieces(toks)})
            if rows:
                job.post("call", {"call": event.call, "block": event.block, "rows": rows})

    def on_block(self, event: BlockEvent) -> None:
        if not self.tracked:
            return
        end = event.offset + self.jobs[0].plan.config.block_length
        generated = event.generated[:, :end].tolist()
        for j in self.tracked:
            job, (a, _) = self.jobs[j], self.spans[j]
            deltas = []
            for k in range(len(job.sent)):
                if job.finished[k] or job.cancelled:
                    continue
                text, reason, _ = row_text(self.engine.tokenizer, generated[a + k], self.engine.eos, job.plan,
                                           end >= job.plan.max_tokens)
                if reason is not None:
                    self.done_rows.add(a + k)
                shown = visible(text, job.plan, reason is not None)
                delta = shown[len(job.sent[k]):] if shown.startswith(job.sent[k]) else ""
                job.sent[k] += delta
                job.finished[k] = reason is not None
                if delta or reason is not None:
                    deltas.append((k, delta, reason))
            if job.plan.stream and deltas:
                job.post("block", deltas)

    def dropped(self) -> list[int]:
        gone = [r for j, (a, b) in enumerate(self.spans) if self.jobs[j].cancelled for r in range(a, b)]
        return sorted(self.done_rows.union(gone))


class Engine:
    """Runs batches of jobs that share one config; called in the worker thread only."""

    def __init__(self, served: Served) -> None:
        self.served = served
        self.tokenizer = served.tokenizer
        self.eos = set(served.denoiser.spec.eos_ids)
        self._pieces: dict[int, str] = {}

    def pieces(self, ids: list[int]) -> list[str]:
        """Display strings of single tokens (cached: the vocabulary is fixed)."""
        missing = [t for t in dict.fromkeys(ids) if t not in self._pieces]
        self._pieces.update(zip(missing, token_pieces(self.tokenizer, missing, eos_glyph=EOS_GLYPH)))
        return [self._pieces[t] for t in ids]

    def run(self, jobs: list[Job]) -> list[Result | None]:
        """One generate call for ``jobs``; a result per job (None for jobs cancelled meanwhile)."""
        config = jobs[0].plan.config
        assert all(job.plan.config == config for job in jobs), "a batch must share one config"
        rows, seeds, spans = [], [], []
        for job in jobs:
            spans.append((len(rows), len(rows) + len(job.plan.rows)))
            rows += job.plan.rows
            seeds += job.plan.seeds
        out = generate(self.served.denoiser, rows, config, seeds=seeds, listener=BatchListener(self, jobs, spans))
        generated, reveal, nfe = out.generated.tolist(), out.trace.reveal_call.tolist(), out.nfe_per_row.tolist()
        results: list[Result | None] = []
        for job, (a, b) in zip(jobs, spans, strict=True):
            if job.cancelled:
                results.append(None)
                continue
            choices = []
            for r in range(a, b):
                text, reason, count = row_text(self.tokenizer, generated[r], self.eos, job.plan, True)
                choices.append(Choice(r - a, text, reason or "length", count, int(nfe[r]), generated[r], reveal[r]))
            results.append(Result(choices, len(rows), out.nfe, out.seconds))
        return results
