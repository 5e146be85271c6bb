"""The exact output law of a uniform-state commit sampler on a small oracle, and a sampled estimate for any size.

The process (DiffusionGemma's loop with commits that stay, temperature 1): the
canvas starts as uniform random tokens; each call the denoiser's posterior is
computed from the current canvas, a :mod:`commit rule <.uniform_rules>`
picks positions to commit, each of them takes a token drawn from its
posterior, and every uncommitted position is re-drawn uniformly. The
denoiser's *view* of the canvas is one of

- ``"told"``: it knows which positions are committed (``eps = 0`` there, 1
  elsewhere). A re-drawn token is then independent of everything, so the
  posterior depends on the committed tokens only and the law equals the same
  rule's law on the absorbing (masked) process;
- ``"matched"``: a shared level ``eps = u / L`` at every generated position
  (``u`` uncommitted of ``L``), as a time-conditioned denoiser is told the
  level whose expected re-drawn fraction matches the canvas;
- ``"blind"``: no level (DiffusionGemma's decoder input): the exact mixture of
  :meth:`UniformOracle.blind` over a prior on levels.

In the last two the posterior, hence the commit choice and the committed
tokens, depends on the re-drawn tokens, and the law averages over them:
q(s' | s) = V^-u sum_y sum_{C = rule(q(.|y))} prod_{i in C} q(x_i | y) over
the ``V^u`` re-draws ``y`` of state ``s``. :func:`uniform_law` sums that
exactly (a dense table over the ``(V + 1)^L`` states, committed token or
"uncommitted" per position), so it is exact; :func:`~.uniform_sample.sample_uniform` runs
the process and gives the path-KL estimate (exact in expectation for the told
view, an upper bound otherwise, see its docstring) and samples for
:func:`~unmask.oracles.pair_divergence`; :func:`~.uniform_sample.sandwich_kl` brackets the
exact KL between a lower and an upper estimate that meet as the number of
re-draws per sample grows, for canvases too large to enumerate. Any unmask
planner is a commit rule through
:class:`~unmask.oracles.uniform_planner.PlannerCommit`; rules that choose by
the tokens drawn or a random order are summed over those too, and
:func:`~unmask.oracles.uniform_planner.uniform_estimators` says what each
sampled estimate is worth for a rule and view.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .markov import DTYPE
from .uniform import UniformOracle
from .uniform_rules import CommitRule

VIEWS = ("told", "matched", "blind")
BLIND_LEVELS = torch.linspace(0.05, 1.0, 20, dtype=DTYPE)  # default prior of the blind view: uniform on this grid


@dataclass(frozen=True)
class UniformLaw:
    """A commit sampler's exact output law on an oracle (after one fixed prompt)."""

    sequences: Tensor  # [M, L] long
    prob: Tensor  # [M] float64, sums to 1
    log_p: Tensor  # [M] float64: log p(x | prompt)
    expected_calls: float
    expected_path_kl: float  # E[UniformSamples.path_kl's per-token estimate], exactly

    @property
    def kl(self) -> float:
        """KL(q || p) in nats per generated token, exactly."""
        q, keep = self.prob, self.prob > 0
        return float((q[keep] * (q[keep].log() - self.log_p[keep])).sum()) / self.sequences.shape[1]


def _check(oracle: UniformOracle, rule: CommitRule, gen_length: int, view: str, prompt: Sequence[int]) -> list[int]:
    if not isinstance(oracle, UniformOracle):
        raise ValueError(f"oracle must be a UniformOracle, got {type(oracle).__name__}")
    if not isinstance(rule, CommitRule):
        raise ValueError(f"rule must be a CommitRule, got {type(rule).__name__}")
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    if not isinstance(gen_length, int) or gen_length < 1:
        raise ValueError(f"gen_length must be an int >= 1, got {gen_length!r}")
    prompt = [int(t) for t in prompt]
    if any(not 0 <= t < oracle.num_tokens for t in prompt):
        raise ValueError(f"prompt must hold token ids in [0, {oracle.num_tokens}), got {prompt!r}")
    rule.max_calls(gen_length)  # a rule built for another length says so here
    return prompt


def posteriors(oracle: UniformOracle, canvas: Tensor, committed: Tensor, view: str, p_len: int,
               levels: Tensor = BLIND_LEVELS) -> Tensor:
    """The denoiser's posteriors ``[B, L, V]`` at the generated positions of ``canvas [B, P + L]`` under ``view``."""
    n, length = committed.shape
    if view == "blind":  # the prompt is known clean, the commits are not
        prompt_only = torch.cat([torch.ones(n, p_len, dtype=torch.bool), torch.zeros_like(committed)], 1)
        return oracle.blind(canvas, levels, clean=prompt_only)[:, p_len:].exp()
    clean = torch.cat([torch.ones(n, p_len, dtype=torch.bool), committed], 1)
    if view == "told":
        eps = (~clean).to(DTYPE)
    else:
        frac = (~committed).sum(-1, keepdim=True).to(DTYPE) / length
        eps = torch.cat([torch.zeros(n, p_len, dtype=DTYPE), frac.expand(n, length)], 1)
    return oracle.posterior(canvas, eps)[0][:, p_len:]


def _commit(rule: CommitRule, probs: Tensor, committed: Tensor, call: int, drawn: Tensor | None = None,
            order: Tensor | None = None) -> Tensor:
    new = rule.commit(probs, committed, call, drawn, order)
    if (new & committed).any() or not bool(new.any(-1).all()):
        raise ValueError(f"{rule!r} broke the commit-rule contract at call {call} (commit at least one new position)")
    return new


def all_orders(n: int) -> Tensor:
    """``[n!, n]`` float32 order uniforms: every order of ``n`` positions once (each equally likely for i.i.d. uniforms)."""
    perms = torch.tensor(list(itertools.permutations(range(n))), dtype=torch.float32).reshape(math.factorial(n), n)
    return (perms + 1.0) / (n + 1.0)


def _product(vec: Tensor, lvec: Tensor) -> tuple[Tensor, Tensor]:
    """Outer products over positions of ``vec [B, L, K]`` -> ``[B, K^L]``, and of the log-weighted sum:
    ``sum_j (prod_{i != j} vec_i) lvec_j`` (``lvec = vec log vec`` at committed positions), for E[log q]."""
    out, outl = vec[:, 0], lvec[:, 0]
    for j in range(1, vec.shape[1]):
        outl = (outl.unsqueeze(-1) * vec[:, j].unsqueeze(1) + out.unsqueeze(-1) * lvec[:, j].unsqueeze(1)).flatten(1)
        out = (out.unsqueeze(-1) * vec[:, j].unsqueeze(1)).flatten(1)
    return out, outl


def _branch(rule: CommitRule, probs: Tensor, toks: Tensor, done: Tensor, mask: Tensor, call: int, w: Tensor,
            a: Tensor, joint: Tensor | None, ords: Tensor | None) -> tuple:
    """One call's commits from rows ``(state, re-draw)``: ``probs [B, L, V]``, tokens, ``done [B, L]``, weights
    ``w`` and ``a`` (E[log q so far] times weight) ``[B]``.

    A rule that reads the draws is branched over every joint draw ``joint [c, u]`` of the uncommitted
    positions ``mask``: returns ``(next symbols [B c k, L], weights, weighted log q sums)``. Otherwise returns
    ``(None, w, a, probs, toks, done, commit)`` for the outer product, rows branched over the orders ``ords
    [k, u]`` (each equally likely) and then merged where an order gives the same commit set.
    """
    g, v = toks.shape[1], probs.shape[-1]
    drawn = pd = None
    if joint is not None:
        c = joint.shape[0]
        drawn = toks.repeat_interleave(c, 0)
        drawn[:, mask] = joint.repeat(toks.shape[0], 1)
        probs, done = probs.repeat_interleave(c, 0), done.repeat_interleave(c, 0)
        pd = torch.where(done, 1.0, probs.gather(-1, drawn.unsqueeze(-1)).squeeze(-1))  # [B c, L]
        w, a = w.repeat_interleave(c) * pd.prod(-1), a.repeat_interleave(c) * pd.prod(-1)
    order, k = None, 1
    if ords is not None:
        k = ords.shape[0]
        order = torch.zeros(k, g)
        order[:, mask] = ords
        order = order.repeat(probs.shape[0], 1)
        rep = torch.arange(probs.shape[0]).repeat_interleave(k)
        probs, done, toks, w, a = probs[rep], done[rep], toks[rep], w[rep] / k, a[rep] / k
        if drawn is not None:
            drawn, pd = drawn[rep], pd[rep]
    commit = _commit(rule, probs, done, call, drawn, order)
    if drawn is not None:
        lq = torch.where(commit, pd.log(), 0.0).sum(-1)  # type: ignore[union-attr]
        return torch.where(done | commit, drawn, v), w, a + w * lq
    if k > 1:  # merge the orders that commit the same set
        bits = (commit.long() << torch.arange(g)).sum(-1)
        row = torch.arange(commit.shape[0]) // k
        key, inv = torch.unique(row * (1 << g) + bits, return_inverse=True)
        first = torch.zeros(key.numel(), dtype=torch.long).scatter_(0, inv, torch.arange(inv.numel()))
        w = torch.zeros(key.numel(), dtype=DTYPE).index_add_(0, inv, w)
        a = torch.zeros(key.numel(), dtype=DTYPE).index_add_(0, inv, a)
        probs, toks, done, commit = probs[first], toks[first], done[first], commit[first]
    return None, w, a, probs, toks, done, commit


@torch.no_grad()
def uniform_law(oracle: UniformOracle, rule: CommitRule, gen_length: int, view: str = "told",
                prompt: Sequence[int] = (), sum_redraws: bool | None = None, levels: Tensor = BLIND_LEVELS,
                chunk_entries: int = 2**22) -> UniformLaw:
    """The exact law of ``rule`` on ``oracle`` by enumeration (see the module docstring).

    ``sum_redraws`` (None: all but the told view) sums over every re-draw of
    the uncommitted positions; the told view's posterior does not depend on
    them, so skipping the sum there is exact too (the tests check both agree).
    A rule that ``reads_draws`` is also summed over every joint draw of the
    uncommitted positions (``V^u``), one that ``reads_order`` over every
    order of them (``u!``). Cost about ``(2 V (V + 1))^L`` per call (times
    ``V^L`` for rules that read the draws): for ``V^L`` in the hundreds.
    """
    prompt = _check(oracle, rule, gen_length, view, prompt)
    v, g, p_len = oracle.num_tokens, gen_length, len(prompt)
    sums = view != "told" if sum_redraws is None else bool(sum_redraws)
    base = v + 1  # state symbol per position: a committed token, or v = uncommitted
    width = base**g
    if width > 2**24:
        raise ValueError(f"the exact law holds (V + 1)^L = {width} states, over 2^24: use sample_uniform")
    place = base ** torch.arange(g - 1, -1, -1)  # [L]
    dist = torch.zeros(width, dtype=DTYPE)
    acc = torch.zeros(width, dtype=DTYPE)  # E[sum of log q of the commits so far; state]
    dist[v * int(place.sum())] = 1.0  # every position uncommitted
    calls, limit = 0.0, rule.max_calls(g)
    pre = torch.tensor(prompt, dtype=torch.long)
    for call in range(limit + 1):
        states = dist.nonzero().squeeze(-1)
        sym = (states.unsqueeze(-1) // place) % base  # [S, L]
        pending = (sym == v).any(-1)
        if not pending.any():
            break
        if call == limit:
            raise ValueError(f"{rule!r} left positions uncommitted after its max_calls={limit}")
        calls += float(dist[states[pending]].sum())
        new, new_acc = torch.zeros(width, dtype=DTYPE), torch.zeros(width, dtype=DTYPE)
        new[states[~pending]] = dist[states[~pending]]
        new_acc[states[~pending]] = acc[states[~pending]]
        for mask in torch.unique(sym[pending] == v, dim=0):  # states sharing their uncommitted positions
            rows = states[pending][((sym[pending] == v) == mask).all(-1)]
            u = int(mask.sum())
            redraws = (torch.tensor(list(itertools.product(range(v), repeat=u)), dtype=torch.long).reshape(-1, u)
                       if sums else torch.zeros(1, u, dtype=torch.long))
            joint = (torch.tensor(list(itertools.product(range(v), repeat=u)), dtype=torch.long).reshape(-1, u)
                     if rule.reads_draws else None)
            ords = all_orders(u) if rule.reads_order else None
            r, c, k = redraws.shape[0], 1 if joint is None else joint.shape[0], 1 if ords is None else ords.shape[0]
            pairs = rows.numel() * r  # (state, re-draw) rows, taken in chunks
            per_row = c * k * g * (base + 8) if joint is not None else k * g * base + 2 * width * min(k, 2**u)
            step = max(1, chunk_entries // per_row)
            for i in range(0, pairs, step):
                idx = torch.arange(i, min(i + step, pairs))
                s, rd = rows[idx // r], redraws[idx % r]
                toks = (s.unsqueeze(-1) // place) % base  # [B, L]
                toks[:, mask] = rd
                done = ~mask.expand_as(toks)
                probs = posteriors(oracle, torch.cat([pre.expand(toks.shape[0], p_len), toks], 1), done, view, p_len, levels)
                w, a = dist[s] / r, acc[s] / r
                step_args = _branch(rule, probs, toks, done, mask, call, w, a, joint, ords)
                if step_args[0] is not None:  # the next state of each row is known: add its weight there
                    nxt, w, wl = step_args[0], step_args[1], step_args[2]
                    new.index_add_(0, (nxt * place).sum(-1), w)
                    new_acc.index_add_(0, (nxt * place).sum(-1), wl)
                    continue
                _, w, a, probs, toks, done, commit = step_args
                vec = torch.zeros(toks.shape[0], g, base, dtype=DTYPE)  # next symbol's law per position
                vec[..., v] = 1.0
                vec[done] = torch.nn.functional.one_hot(toks[done], base).to(DTYPE)
                vec[commit] = torch.cat([probs[commit], torch.zeros(int(commit.sum()), 1, dtype=DTYPE)], -1)
                lvec = torch.zeros_like(vec)
                lvec[commit] = torch.where(vec[commit] > 0, vec[commit] * vec[commit].clamp_min(1e-300).log(), 0.0)
                out, outl = _product(vec, lvec)
                new += w @ out
                new_acc += a @ out + w @ outl
        dist, acc = new, new_acc
    final = dist.nonzero().squeeze(-1)
    seqs = (final.unsqueeze(-1) // place) % base
    log_p = _log_p(oracle, seqs, prompt)
    path = (float(acc[final].sum()) - float((dist[final] * log_p).sum())) / g
    return UniformLaw(seqs, dist[final], log_p, calls, path)


def _log_p(oracle: UniformOracle, seqs: Tensor, prompt: list[int]) -> Tensor:
    full = torch.cat([torch.tensor(prompt, dtype=torch.long).expand(seqs.shape[0], len(prompt)), seqs], 1)
    return oracle.chain.log_prob(full) - (oracle.chain.log_prob(full[:1, : len(prompt)]) if prompt else 0.0)
