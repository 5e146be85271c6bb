"""A request to the engine, and the state of one request being generated.

A :class:`Request` is a batch of prompt rows that share one
:class:`~unmask.config.GenerationConfig` (one ``generate`` call, or one server
request with its ``n`` choices). Its rows move from block to block together:
a row whose block is full waits, at no cost, for the others, so a request's
NFE, trace and tokens are those of the rows run alone as one batch. Requests
are independent: each is at its own block and call, with its own settings.

:class:`RequestState` is the engine's per-request state: the canvas being
filled, the block and the call within it, the rows that are done, the trace
recorder and the device flags checked once per block.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..cache import CallPlan, plan_call, plan_committed
from ..canvas import Canvas
from ..config import GenerationConfig
from ..decide import check
from ..denoiser import TokenSpec
from ..noise import Noise
from ..output import PENDING, BlockEvent, GenerationOutput, Listener, Recorder, Trace
from ..planners import Planner, State
from ..text import decode_rows, first_eos, trim_at_stop

_ids = itertools.count()


@dataclass(eq=False)
class Request:
    """Prompt rows (token ids), their config and one seed per row; events go to ``listener``.

    ``tokenizer`` (optional) decodes the output's texts and lets stop strings
    end a row after the block that completes one.
    """

    prompts: list[list[int]]
    config: GenerationConfig
    seeds: list[int]
    listener: Listener | None = None
    tokenizer: Any = None
    id: int = field(default_factory=lambda: next(_ids))

    @property
    def rows(self) -> int:
        return len(self.prompts) * (2 if self.config.cfg_scale > 0 else 1)  # guidance: a twin row per prompt


class RequestState:
    """One request in the engine: its canvas, where it is, and what it has cost."""

    def __init__(self, request: Request, spec: TokenSpec, device: torch.device,
                 attention_block: int | None = None) -> None:
        cfg = request.config
        self.request, self.config, self.spec = request, cfg, spec
        self.planner: Planner = cfg.planner  # type: ignore[assignment]
        # block-causal models: blocks laid out from each row's position 0 (the prompt tail in block 0)
        self.attention_block = attention_block
        self.canvas = Canvas.build(request.prompts, cfg.gen_length, spec, device,
                                   None if attention_block is None else cfg.block_length, attention_block)
        self.x = self.canvas.ids.clone()  # [n, T]: filled in place, call by call
        self.n = len(request.prompts)
        region = self.total - self.canvas.width  # with a block layout, masks may run on past the last block
        self.num_blocks = -(-(max(self.canvas.leads or [0]) + cfg.gen_length) // cfg.block_length)
        self.committed = 0  # committed cache: columns before this hold final keys/values in every row's slot
        self.recorder = Recorder(self.n, region, device)
        self.noise = Noise.from_seeds(request.seeds, device)
        self.eos = torch.tensor(spec.eos_ids, dtype=torch.long, device=device)
        self.done = torch.zeros(self.n, dtype=torch.bool, device=device)
        self.done_rows: list[bool] = [False] * self.n  # host copy of ``done``
        self.has_masks: list[bool] = [True] * self.n  # host: rows with masks in the current block (adaptive)
        self.block = 0
        self.call = 0  # within the block
        self.fixed = self.planner.calls_per_block(cfg.block_length, self.num_blocks)  # None: adaptive
        # revising planners: the declared bound on calls per block, and which rows still edit (device, [n])
        self.cap = self.planner.max_calls_per_block(cfg.block_length) if self.planner.revises else None
        self.pending = torch.zeros(self.n, dtype=torch.bool, device=device)
        self.plan_state: State = None  # the planner's per-row state within the block (all n rows)
        self.full = self.partial = 0
        self.shared_rows = 0  # rows of every request summed over the calls this one was in
        self.skipped = 0
        self.slots: list[int] = []  # arena slots: the rows', then their guidance twins' (cached modes)
        self.prompt_lengths = self.canvas.prompt_mask.sum(-1, keepdim=True)  # [n, 1]
        # device flags, checked once per block: an invariant failed, logits were not finite
        self.broken = torch.zeros((), dtype=torch.bool, device=device)
        self.nonfinite = torch.zeros((), dtype=torch.bool, device=device)
        self.started = time.perf_counter()
        self.finished = False
        self.cancelled = False

    @property
    def total(self) -> int:
        return int(self.x.shape[1])

    @property
    def guided(self) -> bool:
        return self.config.cfg_scale > 0

    def bounds(self) -> tuple[int, int]:
        """Canvas columns ``[lo, hi)`` of the current block."""
        return self.canvas.block(self.block, self.config.block_length)

    def active(self) -> list[int]:
        """Rows that run in this call: not done and, for adaptive planners, with masks in the block."""
        adaptive = self.fixed is None
        return [i for i in range(self.n) if not self.done_rows[i] and (not adaptive or self.has_masks[i])]

    def plan(self, lookbehind: int) -> CallPlan:
        lo, hi = self.bounds()
        if self.config.cache != "committed":
            return plan_call(self.config.cache, self.call, lo, hi, self.total, lookbehind)
        assert self.attention_block is not None
        m, pads = self.attention_block, self.canvas.pads
        starts = [p + (lo - p) // m * m for p in pads]  # each row's model block holding the generated block
        ends = [min(p + -(-(hi - p) // m) * m, self.total) for p in pads]
        plan = plan_committed(lo, self.committed, starts, ends, lookbehind)
        if self.call == 0:  # every row runs this call: what lies before each row's model block becomes final
            self.committed = min(starts)
        return plan

    def leads(self) -> list[int]:
        """Each row's filled offsets of the current block before its first call (its prompt tail in block 0)."""
        return [self.canvas.lead(i) if self.block == 0 else 0 for i in range(self.n)]

    def masked_rows(self) -> Tensor:
        """``[n]`` bool on the device: rows with masks left in the current block."""
        lo, hi = self.bounds()
        masks = (self.x[:, lo:hi] == self.spec.mask_id).any(-1)
        return masks | self.pending if self.cap is not None else masks

    def rows_state(self, rows: Tensor) -> State:
        """The planner state of ``rows`` (None at the block's first call or for stateless planners)."""
        return None if self.plan_state is None else tuple(t.index_select(0, rows) for t in self.plan_state)

    def keep_state(self, rows: Tensor, state: State, pending: Tensor | None) -> None:
        """Store the planner's new state and still-editing flags for ``rows`` (rows outside the call keep theirs)."""
        if state is not None:
            if self.plan_state is None:  # first call of the block: rows outside the call start from zeros
                self.plan_state = tuple(torch.zeros((self.n, *t.shape[1:]), dtype=t.dtype, device=t.device)
                                        for t in state)
            for kept, new in zip(self.plan_state, state, strict=True):
                kept.index_copy_(0, rows, new)
        if pending is not None:
            self.pending.index_copy_(0, rows, pending)

    def block_complete(self) -> bool:
        """Whether the current block is finished (host state only; ``has_masks`` is refreshed by the engine)."""
        if self.fixed is not None:
            return self.call >= self.fixed
        if self.cap is not None and self.call >= self.cap:  # the planner left no mask at its last allowed call
            return True
        return not any(m and not d for m, d in zip(self.has_masks, self.done_rows, strict=True))

    def end_block(self) -> BlockEvent:
        """Check the block, apply early exit, stop strings and dropped rows; move to the next block or finish."""
        check(self.nonfinite, self.broken, self.planner)
        cfg, c, x, b = self.config, self.canvas, self.x, self.block
        lo, hi = self.bounds()
        assert not bool((x[:, lo:hi] == self.spec.mask_id).any()), f"{self.planner} left masks in block {b}"
        last = b == self.num_blocks - 1
        finished = torch.zeros_like(self.done)
        if cfg.early_exit:  # rows with EOS in finished blocks (a prompt tail not counted)
            finished |= (torch.isin(x[:, c.width : hi], self.eos) & self._generated(hi)).any(-1)
        if c.leads:  # a row whose gen_length tokens are all in finished blocks is done (the rest is trimmed)
            finished |= torch.tensor([t + cfg.gen_length <= hi - c.width for t in c.leads], device=x.device)
        stopped = self._stopped(hi)
        if self.request.listener is not None:
            stopped += self.request.listener.dropped()
        if self.cancelled:
            stopped = list(range(self.n))
        if stopped:
            finished[torch.tensor(sorted(set(stopped)), dtype=torch.long, device=x.device)] = True
        finished &= ~self.done
        if not last:
            x[finished, hi:] = self.eos[0]
            self.recorder.fill(finished, hi - c.width)
        self.done |= finished
        self.done_rows = self.done.tolist()
        event = BlockEvent(b, hi - c.width - cfg.block_length, x[:, c.width :], self.done)
        if last or all(self.done_rows):
            self.finished = True
            if not last:
                self.skipped = self.num_blocks - 1 - b
        else:
            self.block, self.call = b + 1, 0
            self.has_masks = [not d for d in self.done_rows]
            self.plan_state = None
            self.pending.zero_()
        return event

    def _stopped(self, hi: int) -> list[int]:
        """Rows whose text (up to EOS) holds a stop string once this block is done."""
        stop, tok = self.config.stop, self.request.tokenizer
        if not stop or tok is None:
            return []
        eos, out = set(self.spec.eos_ids), []
        for i, row in enumerate(self.x[:, self.canvas.width : hi].tolist()):
            row = row[self.canvas.lead(i) :]
            if not self.done_rows[i]:
                text = tok.decode(row[: first_eos(row, eos)], skip_special_tokens=True)
                if len(trim_at_stop(text, stop)) < len(text):
                    out.append(i)
        return out

    def _generated(self, hi: int) -> Tensor:
        """``[n, hi - width]`` bool: generated columns (not a row's prompt tail) of the finished blocks."""
        c = self.canvas
        cols = torch.arange(hi - c.width, device=self.x.device)
        return cols >= torch.tensor(c.leads or [0] * self.n, device=self.x.device).unsqueeze(1)

    def output(self, seconds: float) -> GenerationOutput:
        cfg, c, rec = self.config, self.canvas, self.recorder
        trace = rec.trace()
        x, mask = self.x, c.attention_mask
        if c.leads:  # each row's gen_length tokens after its prompt tail, laid out as an ordinary canvas
            trace, x, mask = self._trimmed(trace)
        assert not bool((trace.reveal_call == PENDING).any()), "a position was never revealed"
        width = x.shape[1] - cfg.gen_length
        cpb = self.fixed
        out = GenerationOutput(
            sequences=x, attention_mask=mask, prompt_lengths=mask[:, :width].sum(-1).tolist(),
            nfe=rec.calls, nfe_per_row=rec.nfe_rows, trace=trace, full_forwards=self.full,
            partial_forwards=self.partial, skipped_blocks=self.skipped,
            calls_saved=None if cpb is None else cpb * self.num_blocks - rec.calls, seconds=seconds,
            rows_per_call=self.shared_rows / rec.calls if rec.calls else 0.0,
        )
        if self.request.tokenizer is not None:
            out.texts = decode_rows(self.request.tokenizer, x[:, width:], self.spec.eos_ids, cfg.stop)
        return out

    def _trimmed(self, trace: Trace) -> tuple[Trace, Tensor, Tensor]:
        """The trace, sequences and attention mask of the rows' own ``gen_length`` tokens (block layout)."""
        c, g = self.canvas, self.config.gen_length
        plain = Canvas.build(self.request.prompts, g, self.spec, self.x.device)
        x = plain.ids.clone()
        x[:, plain.width :] = c.trim(self.x[:, c.width :], g)
        calls = c.trim(trace.reveal_call, g)
        per_call = (calls.unsqueeze(0) == torch.arange(trace.num_calls, device=calls.device)[:, None, None]).sum(-1)
        return (Trace(calls, c.trim(trace.token_prob, g), c.trim(trace.token_logq, g), per_call, trace.block_of_call),
                x, plain.attention_mask)


def check_prompts(rows: list[list[int]], config: GenerationConfig, spec: TokenSpec) -> None:
    """Raise ``ValueError`` for an empty batch, ids outside the vocabulary or the mask id, or a canvas too long."""
    if not rows:
        raise ValueError("prompts must hold at least one prompt, got an empty batch")
    for i, row in enumerate(rows):
        bad = [t for t in row if not 0 <= t < spec.vocab_size or t == spec.mask_id]
        if bad:
            raise ValueError(
                f"prompts[{i}] holds token id {bad[0]}: ids must lie in [0, {spec.vocab_size}) and not be "
                f"the mask id {spec.mask_id}"
            )
        total = len(row) + config.gen_length
        if spec.max_length is not None and total > spec.max_length:
            raise ValueError(
                f"prompts[{i}] has {len(row)} tokens; with gen_length={config.gen_length} that is {total}, "
                f"over the model's maximum length {spec.max_length}"
            )
