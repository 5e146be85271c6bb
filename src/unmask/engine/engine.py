"""The engine: one denoiser call at a time over every live request.

Requests (prompt rows with their own :class:`~unmask.config.GenerationConfig`
and seeds) go in with :meth:`Engine.add`; each :meth:`Engine.step` runs one
denoiser call per call kind present (``full``, ``start``, ``segment``: see
:mod:`unmask.cache`) over every live row, whatever its request's length,
block size, planner or sampling; then each group of requests that share a
planner, sampling, call index and block size decides its reveals in one
:func:`~unmask.decide.decide`. A request that finishes (its last block, EOS,
a stop string, its listener dropping every row, cancellation) leaves at once
and frees its rows and arena slots; waiting requests join at the next step.
Rows that are done leave the calls at once, even while their request runs.

A uniform-state denoiser (``corruption == "uniform"``, DiffusionGemma) runs
one call kind of its own, ``canvas``: each row's canvas with its uncommitted
positions re-drawn from counter-based noise, after the encoder has read what
became final (:meth:`~unmask.engine.runner.Runner.run`); after the decision
the rows' processed logits go back to the denoiser as their next
self-conditioning state.

The key/value cache is one arena of row slots, allocated once (on the first
cached request) from :class:`EngineConfig`'s memory budget; nothing is
allocated per call or per shape. The split follows nano-vllm: the engine
(this file) drives, :mod:`~unmask.engine.scheduler` admits and frees,
:mod:`~unmask.engine.runner` builds and runs each call (eager, or the
compiled runner of :mod:`unmask.models.runner` beneath it).
"""

from __future__ import annotations

import dataclasses
import queue
import time
from collections.abc import Hashable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..cache import KINDS, check_cache, check_layout, resolve_cache
from ..canvas import canvas_length
from ..decide import broken
from ..denoiser import Denoiser
from ..output import CallEvent, GenerationOutput
from .arena import EngineConfig, arena_size
from .leads import decide_by_lead
from .request import Request, RequestState, check_prompts
from .runner import Part, Runner, split_padding
from .scheduler import Scheduler


@dataclass
class EngineStats:
    """What the engine has run: denoiser calls, rows summed over calls, requests finished."""

    calls: int = 0
    row_calls: int = 0
    requests: int = 0

    @property
    def rows_per_call(self) -> float:
        return self.row_calls / self.calls if self.calls else 0.0


Finished = tuple[Request, "GenerationOutput | Exception"]  # an output, or the error that ended the request


class Engine:
    """Continuous batching of generation requests over one denoiser (see the module docstring)."""

    def __init__(self, denoiser: Denoiser, config: EngineConfig | None = None) -> None:
        if not isinstance(denoiser, Denoiser):
            raise ValueError(f"denoiser must be an unmask.Denoiser (subclass it), got {type(denoiser).__name__}")
        self.config = config or EngineConfig()
        self.denoiser = denoiser
        self.model = denoiser.compiled() if self.config.compile else denoiser
        self.spec = denoiser.spec
        self.device = denoiser.device
        self.uniform = denoiser.corruption == "uniform"  # uncommitted positions hold fresh random tokens
        self.runner = Runner(self.model)
        self.pad_budget = self.config.padding(self.device)
        self.length = self.config.slot_length(self.spec)
        self.slots = arena_size(self.model, self.config, self.length) if self.model.can_cache() else 0
        self.scheduler = Scheduler(self.config.max_rows, 0)
        self.stats = EngineStats()
        self._inbox: queue.SimpleQueue[RequestState] = queue.SimpleQueue()
        self._states: dict[int, RequestState] = {}

    # -- requests in and out ------------------------------------------------------------------------------------
    def add(self, request: Request) -> None:
        """Queue ``request`` (thread-safe); raises ``ValueError`` before any compute if it cannot run here."""
        cfg = request.config
        check_prompts(request.prompts, cfg, self.spec)
        check_cache(cfg.cache, self.model)
        check_layout(cfg.block_length, self.model)
        if cfg.cache == "auto":  # the model's own default: committed for block-causal models, else none
            cfg = request.config = dataclasses.replace(cfg, cache=resolve_cache(cfg.cache, self.model))
        if self.uniform and cfg.cfg_scale > 0:
            raise ValueError(f"cfg_scale={cfg.cfg_scale}: guidance needs a masked model (an unconditional row masks "
                             f"the prompt); {type(self.model).__name__} is uniform-state: use cfg_scale=0")
        if cfg.compile != self.config.compile:
            raise ValueError(f"config.compile={cfg.compile} but this engine runs compile={self.config.compile}: "
                             f"compilation is an engine setting (EngineConfig.compile)")
        if request.rows > self.config.max_rows:
            raise ValueError(f"the request has {request.rows} rows (guidance twins counted) but the engine runs at "
                             f"most max_rows={self.config.max_rows} per call")
        block = self.model.attention_block
        total = canvas_length(request.prompts, cfg.gen_length, None if block is None else cfg.block_length, block)
        if cfg.cache != "none" and total > self.length:
            raise ValueError(f"the canvas of {total} columns (longest prompt + gen_length) is longer than the "
                             f"engine's key/value slots of max_length={self.length} columns")
        if cfg.cache != "none" and request.rows > self.slots:
            raise ValueError(f"the request needs {request.rows} key/value slots (one per row, two with guidance) "
                             f"but the engine's arena has {self.slots}: raise kv_memory or kv_slots")
        if len(request.seeds) != len(request.prompts):
            raise ValueError(f"seeds must hold one seed per prompt ({len(request.prompts)}), got {len(request.seeds)}")
        state = RequestState(request, self.spec, self.device, block)
        self._states[request.id] = state
        self._inbox.put(state)

    def cancel(self, request: Request) -> None:
        """Stop working for ``request`` (thread-safe): its rows leave at the next step, without an output."""
        state = self._states.get(request.id)
        if state is not None:
            state.cancelled = True

    @property
    def has_work(self) -> bool:
        return bool(self._states)

    def holds(self, request_id: int) -> bool:
        """Whether the request of this id was added and has not finished or been dropped."""
        return request_id in self._states

    @property
    def waiting(self) -> int:
        return len(self.scheduler.waiting) + self._inbox.qsize()

    @property
    def live_rows(self) -> int:
        return self.scheduler.live_rows

    @property
    def arena_bytes(self) -> int:
        arena = self.runner.arena
        return int(getattr(arena, "nbytes", 0)) if arena is not None else 0

    def run(self) -> dict[int, GenerationOutput]:
        """Step until every request added so far has finished; their outputs by request id.

        Raises the error of the first request that failed (after the others finished)."""
        outputs, errors = {}, []
        while self.has_work:
            for req, out in self.step():
                if isinstance(out, Exception):
                    errors.append(out)
                else:
                    outputs[req.id] = out
        if errors:
            raise errors[0]
        return outputs

    # -- one step ---------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self) -> list[Finished]:
        """One denoiser call per call kind over every live row; returns the requests that finished.

        A request ends with an error instead of an output when its block check fails (non-finite logits);
        an error in the call itself ends every request of the step with it.
        """
        self._intake()
        live = list(self.scheduler.running)
        if not live:
            return []
        try:
            self._calls(live)
        except Exception as err:  # noqa: BLE001 - handed to every request of the call, none is lost
            return [self._drop(st, err) for st in live]
        return self._end_blocks()

    def _forget(self, st: RequestState) -> None:
        """The request leaves the live set or the queue, with its slots."""
        self.scheduler.remove(st)
        del self._states[st.request.id]

    def _drop(self, st: RequestState, err: Exception) -> Finished:
        self._forget(st)
        return st.request, err

    def _calls(self, live: list[RequestState]) -> None:
        by_kind: dict[str, list[Part]] = {}
        for st in live:
            rows = st.active()
            assert rows, "a live request without active rows"
            if self.uniform:  # one decoder call over every row's canvas (the encoder runs inside it)
                by_kind.setdefault("canvas", []).append(Part(st, rows, *st.bounds()))
                continue
            plan = st.plan(self.model.lookbehind)
            by_kind.setdefault(plan.kind, []).append(Part(st, rows, plan.start, plan.end))
        groups: dict[Hashable, list[tuple[Part, Tensor]]] = {}
        for kind in (*KINDS, "canvas"):
            budget = None if kind in ("segment", "canvas") else self.pad_budget  # short queries: cheap padding
            for parts in split_padding(by_kind.get(kind, []), budget):
                rows = sum(len(p.rows) * p.copies for p in parts)
                self.stats.calls += 1
                self.stats.row_calls += rows
                for p, logits in zip(parts, self.runner.run(kind, parts), strict=True):
                    p.state.shared_rows += rows
                    if kind in ("segment", "canvas"):
                        p.state.partial += 1
                    else:
                        p.state.full += 1
                    cfg = p.state.config
                    groups.setdefault((cfg.planner, cfg.sampling, p.state.call, cfg.block_length, p.state.num_blocks),
                                      []).append((p, logits))
        for members in groups.values():
            self._decide(members)

    def _intake(self) -> None:
        """New requests into the queue, cancelled ones out, the arena allocated, waiting ones admitted."""
        while not self._inbox.empty():
            self.scheduler.add(self._inbox.get())
        for st in [*self.scheduler.running, *self.scheduler.waiting]:
            if st.cancelled:
                self._forget(st)
        if self.runner.arena is None and any(st.config.cache != "none" for st in self.scheduler.waiting):
            self.runner.arena = self.model.new_arena(self.slots, self.length)  # type: ignore[attr-defined]
            self.scheduler.resize(self.slots)
        self.scheduler.admit()

    def _decide(self, members: list[tuple[Part, Tensor]]) -> None:
        """One decision for requests that share planner, sampling, call and block size, applied to each."""
        first = members[0][0].state
        cfg, call, mask_id = first.config, first.call, self.spec.mask_id
        planner = first.planner
        looks_back = planner.revises or "current" in planner.needs  # planners that read the block's tokens
        masked, masked_all, positions, keys, idx, tokens, states, leads = [], [], [], [], [], [], [], []
        for p, _ in members:
            row_leads = p.state.leads()
            leads += [row_leads[r] for r in p.rows]
            st, (lo, hi) = p.state, p.state.bounds()
            r = torch.tensor(p.rows, dtype=torch.long, device=st.x.device)
            idx.append(r)
            masked_all.append(st.x[:, lo:hi] == mask_id)  # [n, Bl]: rows outside the call have no masks or wait
            masked.append(masked_all[-1].index_select(0, r))
            positions.append(st.canvas.positions.index_select(0, r)[:, lo:hi])
            keys.append(st.noise.keys.index_select(0, r))
            if looks_back:
                tokens.append(st.x[:, lo:hi].index_select(0, r))
            states.append(st.rows_state(r))
        logits = torch.cat([lg for _, lg in members]) if len(members) > 1 else members[0][1]
        state = None if states[0] is None else tuple(torch.cat(parts) for parts in zip(*states, strict=True))
        d = decide_by_lead(logits, torch.cat(masked), torch.cat(keys), torch.cat(positions), cfg.planner,  # type: ignore[arg-type]
                           cfg.sampling, call, first.num_blocks, mask_id, leads,  # type: ignore[arg-type]
                           tokens=torch.cat(tokens) if looks_back else None, state=state)
        at = 0
        for (p, _), r, m, m_all in zip(members, idx, masked, masked_all, strict=True):
            k = len(p.rows)
            cut = lambda t, part=slice(at, at + k): None if t is None else t[part]  # noqa: E731
            p.state.keep_state(r, None if d.state is None else tuple(map(cut, d.state)), cut(d.pending))
            self._apply(p.state, r, m, m_all, cut(d.reveal), cut(d.tokens), cut(d.confidence), cut(d.logq),
                        cut(d.finite), cut(d.edit), cut(d.remask))
            if self.uniform:  # the rows' next self-conditioning state, from the logits this call decided on
                self.model.condition(self.runner.arena, [p.state.slots[i] for i in p.rows], cut(d.logits))  # type: ignore[attr-defined]
            at += k

    def _apply(self, st: RequestState, rows: Tensor, masked: Tensor, masked_all: Tensor, reveal: Tensor,
               tokens: Tensor, prob: Tensor, logq: Tensor, finite: Tensor | None,
               edit: Tensor | None = None, remask: Tensor | None = None) -> None:
        """Write one request's reveals (and a revising planner's edits and re-masks) into its canvas and trace,
        and tell its listener."""
        lo, hi = st.bounds()
        block = st.x[:, lo:hi]
        full = (st.n, hi - lo)
        reveal_all = torch.zeros(full, dtype=torch.bool, device=block.device).index_copy_(0, rows, reveal)
        prob_all = torch.ones(full, dtype=prob.dtype, device=block.device).index_copy_(0, rows, prob)
        logq_all = torch.zeros(full, dtype=logq.dtype, device=block.device).index_copy_(0, rows, logq)
        tokens_all = block.clone().index_copy_(0, rows, tokens)
        g = slice(lo - st.canvas.width, hi - st.canvas.width)
        if st.cap is None:
            st.x[:, lo:hi] = torch.where(reveal_all, tokens_all, block)
            st.recorder.record(st.block, g, masked_all, reveal_all, prob_all, logq_all)
            edit_all = remask_all = None
        else:
            edit_all, remask_all = self._revise(st, rows, reveal_all, tokens_all, edit, remask, g)
            ran = torch.zeros(st.n, dtype=torch.bool, device=block.device).index_fill_(0, rows, True)
            st.recorder.record(st.block, g, masked_all, reveal_all, prob_all, logq_all, ran, edit_all)
        st.broken |= broken(masked, reveal, edit, remask, st.planner.progress)
        if finite is not None:
            st.nonfinite |= ~finite.all()
        if st.request.listener is not None:
            st.request.listener.on_call(CallEvent(st.recorder.calls - 1, st.block, g.start, reveal_all, st.x[:, lo:hi],
                                                  edit_all, remask_all))
        st.call += 1

    def _revise(self, st: RequestState, rows: Tensor, reveal_all: Tensor, tokens_all: Tensor,
                edit: Tensor | None, remask: Tensor | None, g: slice) -> tuple[Tensor, Tensor]:
        """A revising planner's call: reveal, overwrite ``edit`` with the proposal, return ``remask`` to the mask;
        the trace keeps every edit and re-mask (old and new token)."""
        lo, hi = st.bounds()
        before = st.x[:, lo:hi].clone()
        none = torch.zeros_like(reveal_all)
        edit_all = none if edit is None else none.clone().index_copy_(0, rows, edit)
        remask_all = none if remask is None else none.clone().index_copy_(0, rows, remask)
        after = torch.where(reveal_all | edit_all, tokens_all, before).masked_fill_(remask_all, self.spec.mask_id)
        st.x[:, lo:hi] = after
        st.recorder.revise(g, edit_all | remask_all, before, after)
        return edit_all, remask_all

    def _end_blocks(self) -> list[Finished]:
        """Blocks that are full end (one host read for every adaptive request); finished requests leave."""
        live = self.scheduler.running
        adaptive = [st for st in live if st.fixed is None]
        if adaptive:
            flags = torch.cat([st.masked_rows() for st in adaptive]).tolist()
            at = 0
            for st in adaptive:
                st.has_masks, at = flags[at : at + st.n], at + st.n
        done: list[Finished] = []
        for st in list(live):
            if not st.block_complete():
                continue
            try:
                event = st.end_block()
            except ValueError as err:  # this request's logits were not finite: it alone ends
                done.append(self._drop(st, err))
                continue
            if st.request.listener is not None:
                st.request.listener.on_block(event)
            self.scheduler.release_rows(st, [i for i, d in enumerate(st.done_rows) if d])
            if st.finished:
                if st.x.device.type == "cuda":
                    torch.cuda.synchronize(st.x.device)
                out = st.output(time.perf_counter() - st.started)
                self._forget(st)
                self.stats.requests += 1
                done.append((st.request, out))
        return done
