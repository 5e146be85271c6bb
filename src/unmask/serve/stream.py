"""Server-sent events for ``stream: true``: OpenAI chunks per finished block, reveal events per call.

The standard part is what a stock OpenAI client reads: ``text_completion``
(or ``chat.completion.chunk``) chunks, one choice each, carrying the text a
finished block added (a masked diffusion model fixes a block's tokens only
when the block is done), the finish reason on each choice's last chunk, a
usage chunk when ``stream_options.include_usage``, then ``data: [DONE]``.

With ``reveal_events: true`` the stream also carries ``unmask.reveal``
objects, shaped like OpenAI's usage chunk (``choices: []``) so clients that
skip empty chunks skip them, with a ``reveal`` field:

- ``{"type": "start", "gen_length", "max_tokens", "block_length", "planner", "expected_calls", "colors", "fgs"}``
- ``{"type": "call", "call", "block", "rows": [{"index", "positions", "tokens", "pieces"}]}`` after every call
- ``{"type": "done", "rows": [{"index", "calls", "num_calls", "colors", "fgs", "pieces"}]}`` with the final
  reveal order, coloured like the HTML replay (:mod:`unmask.viz.html`).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from ..viz import call_colors
from ..viz.html import replay_row
from ..viz.terminal import text_color_for
from .job import Job, Result, usage
from .schemas import ApiError

if TYPE_CHECKING:
    from .app import Handler


def sse(obj: dict[str, Any] | str) -> str:
    return f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n"


def reveal_start(job: Job) -> dict[str, Any]:
    cfg = job.plan.config
    per_block = cfg.planner.calls_per_block(cfg.block_length, cfg.num_blocks)  # type: ignore[union-attr]
    expected = None if per_block is None else per_block * cfg.num_blocks
    colors = call_colors(expected or cfg.gen_length)  # adaptive planners: a provisional palette, exact at "done"
    return {"type": "start", "gen_length": cfg.gen_length, "max_tokens": job.plan.max_tokens,
            "block_length": cfg.block_length, "planner": repr(cfg.planner), "expected_calls": expected,
            "colors": colors, "fgs": [text_color_for(c) for c in colors]}


def reveal_done(handler: Handler, result: Result) -> dict[str, Any]:
    rows = []
    for c in result.choices:
        row = replay_row(f"choice {c.index}", handler.worker.display.pieces(c.ids), c.reveal_call)
        rows.append({"index": c.index, **{k: row[k] for k in ("calls", "num_calls", "colors", "fgs", "pieces")}})
    return {"type": "done", "rows": rows}


class Chunks:
    """OpenAI stream objects for one request."""

    def __init__(self, job: Job, rid: str, created: int, model: str) -> None:
        self.chat = job.plan.kind == "chat"
        self.head = {"id": rid, "object": "chat.completion.chunk" if self.chat else "text_completion",
                     "created": created, "model": model}

    def choice(self, index: int, text: str | None, reason: str | None, role: bool = False) -> dict[str, Any]:
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {"content": text}
            body = {"index": index, "delta": delta, "finish_reason": reason, "logprobs": None}
        else:
            body = {"index": index, "text": text or "", "finish_reason": reason, "logprobs": None}
        return {**self.head, "choices": [body]}

    def extra(self, **fields: Any) -> dict[str, Any]:
        return {**self.head, "choices": [], **fields}

    def reveal(self, payload: dict[str, Any]) -> dict[str, Any]:
        return {**self.head, "object": "unmask.reveal", "choices": [], "reveal": payload}


async def event_stream(handler: Handler, job: Job, rid: str, created: int) -> AsyncIterator[str]:
    """The SSE body; cancels the job if the client goes away (the generator is closed) or time runs out."""
    plan, settings = job.plan, handler.served.settings
    chunks = Chunks(job, rid, created, settings.model_name)
    finished = False
    try:
        if chunks.chat:
            for k in range(len(plan.rows)):
                yield sse(chunks.choice(k, None, None, role=True))
        if plan.reveal:
            yield sse(chunks.reveal(reveal_start(job)))
        deadline = job.arrived + settings.timeout_s
        while True:
            try:
                kind, data = await handler.next_event(job, deadline)
            except ApiError as err:
                yield sse(err.body())
                return
            if kind == "call":
                yield sse(chunks.reveal({"type": "call", **data}))
            elif kind == "block":
                for k, delta, reason in data:
                    yield sse(chunks.choice(k, delta, reason))
            elif kind == "error":
                yield sse(data.body())
                return
            elif kind == "done":
                if plan.reveal:
                    yield sse(chunks.reveal(reveal_done(handler, data)))
                if plan.include_usage:
                    yield sse(chunks.extra(usage=usage(plan, data)))
                yield sse("[DONE]")
                finished = True
                handler.metrics.observe_latency(time.monotonic() - job.arrived)
                return
    finally:
        if not finished:
            handler.worker.cancel(job)
