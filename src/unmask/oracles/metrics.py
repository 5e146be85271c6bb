"""Exact error metrics for samplers run on oracle denoisers.

- :func:`path_kl`: per-sample path KL of a generation, in nats per generated
  token; its mean is the exact KL(q || p) only for planners whose choice
  depends on the state alone (:func:`path_kl_status` says which).
- :func:`schedule_kl`: the exact expected path KL of a fixed unmasking schedule
  on a first-order Markov oracle, without sampling.
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from ..output import FILLED, GenerationOutput
from ..planners import EB, Edit, EntropySum, Planner, Remask, Spaced, Stable, TopK, Wino
from ..planners.scheduled import _LevelPlanner
from ..schedules import check_levels
from .markov import DTYPE, ChainOracle, MarkovOracle

EXACT, BOUND, BIASED = "exact", "upper bound", "biased"


def path_kl_status(planner: Planner) -> str:
    """What the mean of :func:`path_kl` is for ``planner`` at temperature 1: ``"exact"``, ``"upper bound"`` or ``"biased"``.

    - ``"exact"``: the revealed set is a function of the state before the
      call (fixed schedules without confidence deferral, margin and entropy
      ranks, EB, and ``spaced`` over such a planner when it also ranks by a
      state score): every output has one path, so the mean is KL(q || p).
    - ``"upper bound"``: random top-k. The estimate averages the KL of each
      fixed order, which is at least the KL of their mixture (convexity).
    - ``"biased"``: the set depends on the tokens just drawn (confidence
      ranks, threshold, factor, confidence deferral, spaced over a planner
      that ranks by confidence). The estimate leaves out the selection and
      can be far below the truth (enumeration on small chains: 0.214 true
      against -0.007 estimated for threshold 0.5); use
      :func:`~unmask.oracles.pair_divergence` or
      :func:`~unmask.oracles.enumerate_sampler` instead.

    Revising and history-aware planners (measured by enumeration on three
    small oracles, V=3, one block of 5; gap = E[estimate] - KL, nats/token):

    - ``edit``: its inner planner's status. An exact oracle's posterior at a
      revealed position is a point mass on its token, so an edit never fires
      and the post-fill calls reveal nothing (gap 0 over ``dilated``).
    - ``wino``: ``"biased"``, it reveals by confidence and, on an exact
      oracle, never re-masks (the current token's probability is 1): its law
      is ``threshold(tau=wide)``'s (gap -0.13 to -0.33 at wide=0.5).
    - ``remask`` with ``eta > 0``: ``"biased"``. The trace keeps only the last
      draw at a re-drawn position, and the output is a mixture over the
      discarded draws; the estimate overshoots even over a fixed schedule with
      a state-determined (``score='current'``) choice (gap +0.005 to +0.07 at
      eta=0.5); ``eta=0`` is its inner planner's status.
    - ``stable``: ``"biased"`` (the run of equal drawn proposals decides;
      gap -0.022 to +0.001 over ``dilated``, window 2), except ``window=1,
      tau=0``, which is its inner planner (its status).

    The tests check every claim by exact enumeration.
    """
    if isinstance(planner, Edit):
        return path_kl_status(planner.inner)
    if isinstance(planner, Remask):
        return path_kl_status(planner.inner) if planner.eta == 0 else BIASED
    if isinstance(planner, Stable):
        return path_kl_status(planner.inner) if planner.window == 1 and planner.tau == 0 else BIASED
    if isinstance(planner, Wino):
        return BIASED
    if isinstance(planner, _LevelPlanner):
        return EXACT if planner.confidence_threshold is None else BIASED
    if isinstance(planner, TopK):
        return {"margin": EXACT, "entropy": EXACT, "position": EXACT, "random": BOUND}.get(planner.score, BIASED)
    if isinstance(planner, (EB, EntropySum)):
        return EXACT
    if isinstance(planner, Spaced):  # filters the inner picks in the order of the inner priority
        inner = path_kl_status(planner.inner)
        ranks_by_state = isinstance(planner.inner, (EB, EntropySum)) or (isinstance(planner.inner, TopK) and planner.inner.score != "confidence")
        return inner if ranks_by_state else BIASED
    return BIASED


def _prompt_rows(prompts: Sequence[Sequence[int]] | Tensor, n: int) -> list[list[int]]:
    if isinstance(prompts, Tensor):
        prompts = [row.tolist() for row in (prompts.unsqueeze(0) if prompts.dim() == 1 else prompts)]
    rows = [[int(t) for t in (p.reshape(-1).tolist() if isinstance(p, Tensor) else p)] for p in prompts]
    if len(rows) != n:
        raise ValueError(f"prompts must hold one prompt per generated row ({n}), got {len(rows)}")
    return rows


def path_kl(
    oracle: ChainOracle, output: GenerationOutput, prompts: Sequence[Sequence[int]] | Tensor, planner: Planner | None = None
) -> Tensor:
    """Per-sample path KL ``[N]`` (nats per generated token) of a generation on ``oracle``.

    For each row: ``(sum_i trace.token_logq[i] - log p(generated | prompt)) / G``
    with ``log p(gen | prompt) = log p(prompt + gen) - log p(prompt)``; use
    ``prompts=[[]] * N`` for unconditional generation.

    Why it estimates a KL: a call that reveals the set S draws each token
    independently from its marginal q_i, so the sum of ``token_logq`` over a
    run is log q(path), the log-probability of the run's reveals; by the chain
    rule log p(x) = sum over calls of log p(x_S | revealed before), so each
    sample gives sum over calls of log [prod_i q_i(x_i) / p(x_S | revealed)].
    At temperature 1 with ``top_p = 1`` (q_i = p_i exactly) and a planner whose
    choice of S is a function of the state before the call (fixed schedules
    such as ``Dilated``, entropy or margin ranks, EB), every output has exactly
    one path and the mean is KL(q(x) || p(x)) exactly. With a random order it
    averages the KL of the fixed orders: an upper bound. When S depends on
    the drawn tokens (confidence ranks, ``Threshold``, ``Factor``, confidence
    deferral) the selection biases q and the estimate ignores it: it can be
    far below the truth, even negative. :func:`path_kl_status` classifies a
    planner; pass ``planner`` to have biased uses refused (``ValueError``).
    One token per call makes it exactly 0 (the chain rule). Meaningless at
    other temperatures or with top-p/top-k truncation, and undefined after
    an EOS early exit (raises ``ValueError``; run with ``early_exit=False``).
    """
    if planner is not None and path_kl_status(planner) == BIASED:
        raise ValueError(
            f"path_kl is biased for {planner}: it picks positions by the tokens just drawn; measure it with "
            "unmask.oracles.pair_divergence (any size) or enumerate_sampler (small cases)"
        )
    gen = output.generated.cpu()
    n, g = gen.shape
    if g == 0:
        raise ValueError("output has no generated tokens (gen_length must be >= 1)")
    if (output.trace.reveal_call == FILLED).any():
        raise ValueError("output was filled with EOS after an early exit; generate with early_exit=False")
    rows = _prompt_rows(prompts, n)
    if [len(r) for r in rows] != list(output.prompt_lengths):
        raise ValueError(f"prompt lengths {[len(r) for r in rows]} differ from the output's {output.prompt_lengths}")
    log_q = output.trace.token_logq.cpu().to(DTYPE).sum(-1)  # [N]
    log_p = torch.empty(n, dtype=DTYPE)
    for length in sorted(set(map(len, rows))):
        idx = [i for i, r in enumerate(rows) if len(r) == length]
        prompt = torch.tensor([rows[i] for i in idx], dtype=torch.long).reshape(len(idx), length)
        full = torch.cat([prompt, gen[idx]], 1)  # [n_l, length + G]
        log_p[idx] = oracle.log_prob(full) - oracle.log_prob(prompt)
    return (log_q - log_p) / g


# --- exact expected KL of a fixed schedule on a first-order chain ---------------------------------


def _stationary(a: Tensor) -> Tensor:
    """Stationary distribution ``[V]`` of the row-stochastic ``a [V, V]`` (least squares)."""
    v = a.shape[0]
    lhs = torch.cat([a.T - torch.eye(v, dtype=DTYPE), torch.ones(1, v, dtype=DTYPE)], 0)  # [V + 1, V]
    rhs = torch.zeros(v + 1, 1, dtype=DTYPE)
    rhs[-1] = 1.0
    s = torch.linalg.lstsq(lhs, rhs).solution.squeeze(-1).clamp_min(0)
    return s / s.sum()


class _Bridges:
    """Distance-d transition tables between tokens and the virtual BOS (left) / END (right) ends.

    Left role index: tokens 0..V-1 then BOS; right role: tokens then END.
    ``left[d] [V + 1, V]``: p(x_{l + d} = c | x_l = a) (BOS at position -1:
    the marginal pi A^{d-1}); ``right_t[d] [V + 1, V]``: p(x_{i + d} = b |
    x_i = c) indexed [b, c], 1 for b = END (nothing observed to the right);
    ``mid[d] = A^d``; ``ends[d] [V + 1, V + 1]``: left to right. ``*_log``: logs.
    """

    def __init__(self, oracle: MarkovOracle, max_d: int) -> None:
        a, v = oracle.first, oracle.num_tokens
        power = torch.eye(v, dtype=DTYPE)
        self.left, self.right_t, self.mid, self.ends = [power], [power], [power], [power]  # index = distance
        for _ in range(max_d):
            prev, power = power, power @ a  # A^(d-1), A^d
            left = torch.cat([power, (oracle.pi @ prev).unsqueeze(0)], 0)  # [V + 1, V]
            self.left.append(left)
            self.right_t.append(torch.cat([power.T, torch.ones(1, v, dtype=DTYPE)], 0))  # [V + 1, V]
            self.mid.append(power)
            self.ends.append(torch.cat([left, torch.ones(v + 1, 1, dtype=DTYPE)], 1))  # [V + 1, V + 1]
        self.left_log = [t.log() for t in self.left]
        self.right_t_log = [t.log() for t in self.right_t]
        self.mid_log = [t.log() for t in self.mid]
        self.ends_log = [t.log() for t in self.ends]


def _split_gap(t: _Bridges, lo: int, hi: int, inside: list[int], q: Tensor) -> tuple[float, dict[tuple[int, int], Tensor]]:
    """Reveal ``inside`` (sorted, lo < i < hi) in the gap between revealed ``lo`` and ``hi``.

    ``q [V + 1, V + 1]``: the sampler's joint of (x_lo, x_hi). Returns the
    expected KL(prod of marginals || joint) of the tokens revealed together,
    averaged over q, and the sampler's joints of the new adjacent pairs.
    """
    v = t.mid[1].shape[0]
    # p_j[a, b, c] = p(x_{i_j} = c | x_lo = a, x_hi = b)  [A, B, V]
    p = [t.left[i - lo][:, None, :] * t.right_t[hi - i][None, :, :] / t.ends[hi - lo][:, :, None] for i in inside]
    # E_prod[log prod_j p_j - log p(x_inside | ends)], the joint a chain of bridges: [A, B]
    kl = sum((pj * pj.log()).sum(-1) for pj in p) + t.ends_log[hi - lo]
    kl = kl - (p[0] * t.left_log[inside[0] - lo][:, None, :]).sum(-1)
    kl = kl - (p[-1] * t.right_t_log[hi - inside[-1]][None, :, :]).sum(-1)
    for j in range(len(inside) - 1):
        kl = kl - ((p[j] @ t.mid_log[inside[j + 1] - inside[j]]) * p[j + 1]).sum(-1)
    pairs: dict[tuple[int, int], Tensor] = {}
    qp = [q.unsqueeze(-1) * pj for pj in p]  # [A, B, V]: q(a, b) p_j(c | a, b)
    first = torch.zeros(v + 1, v + 1, dtype=DTYPE)
    first[:, :v] = qp[0].sum(1)  # (x_lo, x_i1); END column 0
    pairs[(lo, inside[0])] = first
    for j in range(len(inside) - 1):
        inner = torch.zeros(v + 1, v + 1, dtype=DTYPE)
        inner[:v, :v] = qp[j].reshape(-1, v).T @ p[j + 1].reshape(-1, v)  # (x_ij, x_ij+1)
        pairs[(inside[j], inside[j + 1])] = inner
    last = torch.zeros(v + 1, v + 1, dtype=DTYPE)
    last[:v, :] = qp[-1].sum(0).T  # (x_im, x_hi); BOS row 0
    pairs[(inside[-1], hi)] = last
    return float((q * kl).sum()), pairs


def ordered_partitions(n: int, k: int) -> Iterator[tuple[tuple[int, ...], ...]]:
    """Every fixed schedule of ``k`` calls over ``n`` offsets: ordered partitions into non-empty groups (k! S(n, k))."""
    for labels in itertools.product(range(k), repeat=n):
        if len(set(labels)) == k:
            yield tuple(tuple(i for i in range(n) if labels[i] == g) for g in range(k))


_TABLES: weakref.WeakKeyDictionary[MarkovOracle, _Bridges] = weakref.WeakKeyDictionary()


def schedule_kl(oracle: MarkovOracle, levels: Sequence[Sequence[int]], context: str = "start") -> float:
    """Exact expected path KL (nats per token) of revealing one block by a fixed schedule.

    ``levels``: the offsets revealed by each call (a partition of
    ``range(B)``), each token drawn from its exact marginal given the tokens
    already revealed. ``context="start"``: the block is an unconditional
    sequence of B tokens; ``"stationary"``: it follows one observed token
    drawn from the chain's stationary distribution, and nothing after it is
    observed. For a first-order chain, tokens in different gaps between
    revealed positions are independent, and a gap's tokens depend on the
    revealed ones only through its two ends, so the KL is the sum over calls
    and gaps of the expected KL(prod of marginals || joint) of the tokens
    revealed together in the gap given its ends, each a chain of bridges
    (O(m V^3) per gap of m tokens), averaged over the sampler's exact joint of
    the two ends, which is carried forward pair by pair. Equals the mean of
    :func:`path_kl` for that schedule.
    """
    if not isinstance(oracle, MarkovOracle) or oracle.order != 1:
        raise ValueError("schedule_kl needs a MarkovOracle with order=1")
    b = sum(map(len, levels))
    check_levels(levels, b)
    if context not in ("start", "stationary"):
        raise ValueError(f"context must be 'start' or 'stationary', got {context!r}")
    tables = _TABLES.get(oracle)
    if tables is None or len(tables.mid) < b + 2:
        tables = _TABLES[oracle] = _Bridges(oracle, b + 1)
    v = oracle.num_tokens
    q0 = torch.zeros(v + 1, v + 1, dtype=DTYPE)  # (x_{-1}, x_B=END)
    if context == "start":
        q0[v, v] = 1.0
    else:
        q0[:v, v] = _stationary(oracle.first)
    gaps: dict[tuple[int, int], Tensor] = {(-1, b): q0}
    total = 0.0
    for level in levels:
        members, new = set(level), {}
        for (lo, hi), q in gaps.items():
            inside = [i for i in range(lo + 1, hi) if i in members]
            if not inside:
                new[(lo, hi)] = q
                continue
            kl, pairs = _split_gap(tables, lo, hi, inside, q)
            total += kl
            new.update(pairs)
        gaps = new
    return total / b
