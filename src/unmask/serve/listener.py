"""The engine's events of one request, turned into its job's events.

A :class:`JobListener` is the engine request's listener: after every call it
posts the positions and tokens revealed (jobs that asked for
``reveal_events``), after every block the text each row added (streaming
jobs) and which rows are finished (a stop string, ``max_tokens``), and it
tells the engine which rows to drop: those finished rows and, for a cancelled
job, all of them. On block-causal models a row's prompt tail fills the first
``lead`` offsets of its generated block 0 (:func:`~unmask.canvas.prompt_leads`):
the events count from the row's first generated token, past its lead. :class:`Display` turns token ids into display strings for
the reveal view, cached (the vocabulary is fixed).
"""

from __future__ import annotations

from typing import Any

from ..output import BlockEvent, CallEvent, Listener
from ..viz import EOS_GLYPH, token_pieces
from .job import Job, row_text, visible


class Display:
    """The tokenizer's view of ids: single-token display strings and the EOS set."""

    def __init__(self, tokenizer: Any, eos_ids: tuple[int, ...]) -> None:
        self.tokenizer = tokenizer
        self.eos = set(eos_ids)
        self._pieces: dict[int, str] = {}

    def pieces(self, ids: list[int]) -> list[str]:
        missing = [t for t in dict.fromkeys(ids) if t not in self._pieces]
        self._pieces.update(zip(missing, token_pieces(self.tokenizer, missing, eos_glyph=EOS_GLYPH), strict=True))
        return [self._pieces[t] for t in ids]


class JobListener(Listener):
    """Routes one engine request's events to its job (runs in the engine's thread)."""

    def __init__(self, job: Job, display: Display, leads: list[int] | None = None) -> None:
        self.job, self.display = job, display
        self.leads = leads or [0] * len(job.plan.rows)  # each row's prompt tail before its generated tokens
        plan = job.plan
        # rows whose text is followed block by block: streamed, or able to finish before the canvas does
        self.tracked = plan.stream or bool(plan.stop) or plan.max_tokens < plan.config.gen_length
        self.done_rows: set[int] = set()

    def on_call(self, event: CallEvent) -> None:
        job = self.job
        if not job.plan.reveal or job.cancelled:
            return
        reveal, tokens = event.reveal.tolist(), event.tokens.tolist()
        rows = []
        g = job.plan.config.gen_length  # a block layout runs on past a row's gen_length tokens: those are dropped
        for r, hits in enumerate(reveal):
            cols = [i for i, hit in enumerate(hits) if hit and event.offset + i - self.leads[r] < g]
            if cols:
                toks = [tokens[r][i] for i in cols]
                rows.append({"index": r, "positions": [event.offset + i - self.leads[r] for i in cols], "tokens": toks,
                             "pieces": self.display.pieces(toks)})
        if rows:
            job.post("call", {"call": event.call, "block": event.block, "rows": rows})

    def on_block(self, event: BlockEvent) -> None:
        job = self.job
        if not self.tracked or job.cancelled:
            return
        end = event.offset + job.plan.config.block_length
        deltas = []
        for k, ids in enumerate(event.generated[:, :end].tolist()):
            if job.finished[k]:
                continue
            lead = self.leads[k]
            text, reason, _ = row_text(self.display.tokenizer, ids[lead:], self.display.eos, job.plan,
                                       end - lead >= job.plan.max_tokens)
            if reason is not None:
                self.done_rows.add(k)
            shown = visible(text, job.plan, reason is not None)
            delta = shown[len(job.sent[k]):] if shown.startswith(job.sent[k]) else ""
            job.sent[k] += delta
            job.finished[k] = reason is not None
            if delta or reason is not None:
                deltas.append((k, delta, reason))
        if job.plan.stream and deltas:
            job.post("block", deltas)

    def dropped(self) -> list[int]:
        if self.job.cancelled:
            return list(range(len(self.job.plan.rows)))
        return sorted(self.done_rows)
