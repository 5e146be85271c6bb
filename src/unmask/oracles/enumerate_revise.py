"""Exact output law of revising and history-aware planners on a small oracle, by enumerating every branch.

:func:`~unmask.oracles.enumerate_sampler` hands planners that revise (``edit``,
``wino``, ``remask``) or keep per-row history (``stable``) to
:func:`enumerate_stateful`. The state of a branch after each call is the pair
(canvas, planner state): the canvas, the planner's per-row ``Selection.state``
and its ``pending`` flag, exactly what the engine keeps per row
(``RequestState.plan_state`` and ``pending``). Each call branches, as
:func:`~unmask.oracles.enumerate._branch` does, over every joint draw of the
masked positions (and every order when the planner asks for a random one),
asks ``planner.select`` with the block's tokens, the current tokens'
probabilities and the state, and applies reveals, edits and re-masks as
``Engine._revise`` does (``where(reveal | edit, proposal, before)``, then the
re-masked positions to the mask). A row runs a call while its block has a
mask or it is pending, and the block ends at the planner's
``max_calls_per_block`` (revising planners), as in the engine. Branches with
equal canvas, state and pending flag are merged.

The oracle's logits at a revealed position are a point mass on its token
(the exact posterior), so the proposal there is the current token with
probability 1: the draws range over the masked positions only, an edit never
fires and the current token's probability is 1. On an exact oracle ``edit``
is its inner planner plus its post-fill calls, and ``wino`` re-masks nothing.

Besides q(x) and the expected NFE, the law carries the exact expected value of
:func:`~unmask.oracles.path_kl`'s estimate as the trace would give it: the
trace keeps, per position, the log-probability of the last token written there
(a reveal or an edit), so a re-drawn position counts its last draw only.
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor

from ..decide import broken, current_prob
from ..planners import Planner, PlanStep, State
from .enumerate import SamplerLaw, _FixedOrder, _orders, _proposals, _repeat_rows
from .markov import DTYPE, ChainOracle


def _rep(t: Tensor | None, k: int) -> Tensor | None:
    return None if t is None else t.repeat_interleave(k, 0)


class _Branches:
    """The live branches: canvas [S, T], weight [S], acc [S, G] (weighted recorded logq per generated position),
    pending [S] and the planner state (a tuple of [S, ...] tensors, or None)."""

    def __init__(self, canvas: Tensor, weight: Tensor, acc: Tensor, pending: Tensor, state: State) -> None:
        self.canvas, self.weight, self.acc, self.pending, self.state = canvas, weight, acc, pending, state

    def take(self, idx: Tensor) -> _Branches:
        st = None if self.state is None else tuple(t[idx] for t in self.state)
        return _Branches(self.canvas[idx], self.weight[idx], self.acc[idx], self.pending[idx], st)

    @staticmethod
    def cat(parts: list[_Branches]) -> _Branches:
        states = [p.state for p in parts if p.state is not None]
        if states and len(states) != len(parts):  # rows that never ran a call of the block: zero state
            like = states[0]
            parts = [p if p.state is not None else
                     _Branches(p.canvas, p.weight, p.acc, p.pending,
                               tuple(torch.zeros((p.canvas.shape[0], *t.shape[1:]), dtype=t.dtype) for t in like))
                     for p in parts]
        state = None if not states else tuple(torch.cat(ts) for ts in zip(*(p.state for p in parts), strict=True))
        return _Branches(torch.cat([p.canvas for p in parts]), torch.cat([p.weight for p in parts]),
                         torch.cat([p.acc for p in parts]), torch.cat([p.pending for p in parts]), state)

    def merge(self, idle: Tensor) -> _Branches:
        """Sum the branches with equal canvas, pending flag and state; ``idle`` rows (done with the block)
        forget their state first, so they merge by canvas alone."""
        s = self.canvas.shape[0]
        cols = [self.canvas.to(DTYPE), self.pending.to(DTYPE).unsqueeze(-1)]
        state = None
        if self.state is not None:
            state = tuple(torch.where(idle.view(-1, *[1] * (t.dim() - 1)), torch.zeros((), dtype=t.dtype), t)
                          for t in self.state)
            cols += [t.reshape(s, -1).to(DTYPE) for t in state]
        uniq, inv = torch.unique(torch.cat(cols, -1), dim=0, return_inverse=True)
        first = torch.full((uniq.shape[0],), s, dtype=torch.long).scatter_reduce_(0, inv, torch.arange(s), "amin")
        w = torch.zeros(uniq.shape[0], dtype=DTYPE).index_add_(0, inv, self.weight)
        a = torch.zeros(uniq.shape[0], self.acc.shape[1], dtype=DTYPE).index_add_(0, inv, self.acc)
        st = None if state is None else tuple(t[first] for t in state)
        return _Branches(self.canvas[first], w, a, self.pending[first], st)


def _branch(oracle: ChainOracle, planner: Planner, br: _Branches, lo: int, hi: int, g0: int, call: int,
            num_blocks: int, max_rows: int) -> _Branches:
    """One call from branches sharing their masked offsets (``g0``: generated index of column ``lo``)."""
    v, mask_id = oracle.num_tokens, oracle.spec.mask_id
    att = torch.ones_like(br.canvas, dtype=torch.bool)
    z64 = oracle(br.canvas, att, att.long().cumsum(-1) - 1, window=(lo, hi))  # [S, Bl, V + 2] float64
    z64[..., mask_id] = float("-inf")
    block = br.canvas[:, lo:hi]
    masked = block[0] == mask_id
    at_token = z64.gather(-1, block.clamp_max(z64.shape[-1] - 1).unsqueeze(-1)).squeeze(-1)
    assert bool((at_token[:, ~masked] == 0).all()), "the oracle must give revealed positions a point mass"
    m = int(masked.sum())
    draws = torch.tensor(list(itertools.product(range(v), repeat=m)), dtype=torch.long).reshape(v**m, m)
    c = draws.shape[0]
    need = planner.needs - {"current"}
    prop = _proposals(z64.float(), block, masked, draws, need)
    exact = _proposals(z64, block, masked, draws, frozenset()).logq  # [S C, Bl] float64
    current = current_prob(z64.float(), block) if "current" in planner.needs else None
    n = prop.tokens.shape[0]

    def step(rows: int, k: int, noise: _FixedOrder, p) -> PlanStep:
        state = None if br.state is None else tuple(t.repeat_interleave(c * k, 0) for t in br.state)
        return PlanStep(masked.expand(rows, -1), p, call, hi - lo, num_blocks, noise, 0,  # type: ignore[arg-type]
                        block.repeat_interleave(c * k, 0), _rep(current, c * k), state)

    probe = _FixedOrder(_orders(masked, 1)[:1].expand(n, -1))
    sel = planner.select(step(n, 1, probe, prop))
    k = 1
    if probe.used:
        k = math.factorial(m)
        if n * k > max_rows:
            raise ValueError(f"a call has {v}**{m} joint draws times {m}! orders, over max_rows={max_rows}")
        prop, exact = _repeat_rows(prop, k), exact.repeat_interleave(k, 0)
        sel = planner.select(step(n * k, k, _FixedOrder(_orders(masked, n)), prop))
    rows = n * k
    zero = torch.zeros(rows, hi - lo, dtype=torch.bool)
    edit = zero if sel.edit is None else sel.edit
    remask = zero if sel.remask is None else sel.remask
    assert not bool(broken(masked.expand(rows, -1), sel.reveal, edit, remask)), f"{planner} broke the planner contract"
    p_draw = exact.sum(-1).exp() / k  # [S C k]: the joint draw (and order; orders equally likely)
    own = br.weight.repeat_interleave(c * k) * p_draw
    acc = br.acc.repeat_interleave(c * k, 0) * p_draw.unsqueeze(-1)
    written = sel.reveal | edit
    acc[:, g0 : g0 + hi - lo] = torch.where(written, own.unsqueeze(-1) * exact, acc[:, g0 : g0 + hi - lo])
    nxt = br.canvas.repeat_interleave(c * k, 0)
    before = nxt[:, lo:hi]
    nxt[:, lo:hi] = torch.where(written, prop.tokens, before).masked_fill(remask, mask_id)
    pending = torch.zeros(rows, dtype=torch.bool) if sel.pending is None else sel.pending.bool()
    return _Branches(nxt, own, acc, pending, sel.state)


def enumerate_stateful(oracle: ChainOracle, planner: Planner, num_blocks: int, block_length: int, prompt: list[int],
                       gen_length: int, max_rows: int) -> SamplerLaw:
    """The exact law of a revising or history-aware ``planner`` (already parsed and checked); see the module."""
    p_len, mask_id, v = len(prompt), oracle.spec.mask_id, oracle.num_tokens
    cap = planner.max_calls_per_block(block_length) if planner.revises else None
    br = _Branches(torch.tensor([prompt + [mask_id] * gen_length], dtype=torch.long), torch.ones(1, dtype=DTYPE),
                   torch.zeros(1, gen_length, dtype=DTYPE), torch.zeros(1, dtype=torch.bool), None)
    nfe = 0.0
    for b in range(num_blocks):
        lo, hi = p_len + b * block_length, p_len + (b + 1) * block_length
        call = 0
        while cap is None or call < cap:
            masks = (br.canvas[:, lo:hi] == mask_id).any(-1)
            running = masks | br.pending
            if not bool(running.any()):
                break
            nfe += float(br.weight[running].sum())
            parts = [br.take((~running).nonzero().squeeze(-1))]
            run_idx = running.nonzero().squeeze(-1)
            patterns, group = torch.unique(br.canvas[run_idx, lo:hi] == mask_id, dim=0, return_inverse=True)
            for gi in range(patterns.shape[0]):
                rows = run_idx[group == gi]
                m = int(patterns[gi].sum())
                if v**m > max_rows:
                    raise ValueError(f"a call has {v}**{m} joint draws, over max_rows={max_rows}")
                step = max(1, max_rows // (v**m * math.factorial(m)))  # room for a random order's branches
                for i in range(0, rows.numel(), step):
                    parts.append(_branch(oracle, planner, br.take(rows[i : i + step]), lo, hi, lo - p_len, call,
                                         num_blocks, max_rows))
                    held = sum(int(part.weight.numel()) for part in parts)
                    if held > max_rows:  # branches whose planner state differs do not merge: stop before memory runs out
                        raise ValueError(f"call {call} of block {b} holds {held} branches (canvas and planner state), "
                                         f"over max_rows={max_rows}: enumerate a smaller case (fewer tokens, "
                                         f"positions or calls)")
            br = _Branches.cat(parts)
            idle = ~((br.canvas[:, lo:hi] == mask_id).any(-1) | br.pending)
            br = br.merge(idle)
            call += 1
        assert not bool((br.canvas[:, lo:hi] == mask_id).any()), f"{planner} left masks in block {b}"
        br = _Branches(br.canvas, br.weight, br.acc, torch.zeros_like(br.pending), None).merge(
            torch.ones_like(br.pending))
    gen = br.canvas[:, p_len:]
    full = oracle.log_prob(br.canvas)
    log_p = full - (oracle.log_prob(br.canvas[:, :p_len]) if p_len else 0.0)
    path = (float(br.acc.sum()) - float((br.weight * log_p).sum())) / gen_length
    return SamplerLaw(gen, br.weight, log_p, nfe, path)
