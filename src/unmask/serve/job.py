"""A request in flight on the asyncio side: its plan, its events, and the text of its rows.

A :class:`Job` is created by the HTTP handler, handed to the worker
(:mod:`.worker`), and receives its events through :meth:`Job.post`, which is
safe to call from the engine's thread. The text helpers cut a row's ids at
``max_tokens``, EOS and stop strings, the same way for streamed chunks and
final answers.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from ..engine import Request
from ..text import first_eos, trim_at_stop
from .plan import Plan


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
    batch_rows: float  # mean rows (of every request) per denoiser call this request was in
    nfe: int  # denoiser calls this request was in
    seconds: float


@dataclass(eq=False)
class Job:
    """One request in flight: its plan, where its events go, and its per-row stream state."""

    plan: Plan
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    arrived: float = field(default_factory=time.monotonic)
    cancelled: bool = False  # set on the asyncio side; the engine drops the rows at its next step
    sent: list[str] = field(default_factory=list)  # text already streamed, per row
    finished: list[bool] = field(default_factory=list)  # rows whose final chunk was sent
    request: Request | None = None  # the engine request, once submitted

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
