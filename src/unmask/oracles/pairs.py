"""A consistent, sample-based error measure for every planner: pairwise marginals against the oracle's.

For every pair of generated positions ``(i, j)`` with ``1 <= j - i <= D``,
the sampler's empirical joint of ``(x_i, x_j)`` is compared with the oracle's
exact one by KL(q_hat_ij || p_ij); the measure is the mean over pairs, in
nats per pair. As samples grow it converges to the mean pairwise KL(q_ij ||
p_ij) of the sampler whatever the planner does (the estimate needs no path
probability, unlike :func:`~unmask.oracles.path_kl`), and it is 0 only if the
sampler gets every such pair right. At a finite sample size the plug-in
estimate is biased upward by about ``(V**2 - 1) / (2 N)``: :func:`pair_divergence`
reports beside it the same statistic for ``N`` exact samples from the
oracle (the *floor*), so only the excess over the floor is signal.

Each pairwise KL is at most the KL of the whole sequence (data processing),
so the measure is a consistent lower-level view of the error, not the
per-token KL itself; :func:`~unmask.oracles.enumerate_sampler` gives both
exactly on small cases, and the tests check one against the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .markov import DTYPE, ChainOracle


def pair_index(length: int, max_distance: int) -> tuple[Tensor, Tensor]:
    """Positions ``(i [P], j [P])`` of every pair with ``1 <= j - i <= max_distance`` in ``range(length)``."""
    if not isinstance(max_distance, int) or isinstance(max_distance, bool) or max_distance < 1:
        raise ValueError(f"max_distance must be a positive int, got {max_distance!r}")
    if not isinstance(length, int) or length < 2:
        raise ValueError(f"length must be an int >= 2 (pairs need two positions), got {length!r}")
    i = torch.cat([torch.arange(length - d) for d in range(1, min(max_distance, length - 1) + 1)])
    d = torch.cat([torch.full((length - d,), d) for d in range(1, min(max_distance, length - 1) + 1)])
    return i, i + d


@torch.no_grad()
def exact_pair_marginals(oracle: ChainOracle, gen_length: int, max_distance: int, prompt: Sequence[int] = ()) -> Tensor:
    """The oracle's exact joints ``[P, V, V]`` of the generated pairs (order of :func:`pair_index`), given ``prompt``.

    ``p(x_i = a, x_j = b) = p(x_i = a) p(x_j = b | x_i = a)``, both by
    forward-backward: one batched oracle call with each (position, token)
    observed in turn.
    """
    v, mask_id, p_len = oracle.num_tokens, oracle.spec.mask_id, len(prompt)
    base = torch.tensor([list(prompt) + [mask_id] * gen_length], dtype=torch.long)
    att = torch.ones_like(base, dtype=torch.bool)
    marg = oracle(base, att, att.long().cumsum(-1) - 1)[0, p_len:, :v].exp()  # [G, V]
    rows = base.repeat(gen_length * v, 1)  # row (i, a): x_i = a observed
    pos = torch.arange(gen_length).repeat_interleave(v)
    rows[torch.arange(rows.shape[0]), p_len + pos] = torch.arange(v).repeat(gen_length)
    att = torch.ones_like(rows, dtype=torch.bool)
    cond = oracle(rows, att, att.long().cumsum(-1) - 1)[:, p_len:, :v].exp().view(gen_length, v, gen_length, v)
    i, j = pair_index(gen_length, max_distance)
    return marg[i].unsqueeze(-1) * cond[i, :, j, :]  # [P, V, V]: p(a) p(b | a)


def sample_pair_marginals(sequences: Tensor, num_tokens: int, max_distance: int, weights: Tensor | None = None) -> Tensor:
    """Empirical (or ``weights``-weighted) joints ``[P, V, V]`` of the pairs of ``sequences [N, G]``."""
    seq = sequences.long().cpu()
    n, g = seq.shape
    w = torch.full((n,), 1.0 / n, dtype=DTYPE) if weights is None else weights.to(DTYPE).cpu() / weights.sum()
    i, j = pair_index(g, max_distance)
    cell = seq[:, i] * num_tokens + seq[:, j]  # [N, P]
    out = torch.zeros(i.numel(), num_tokens * num_tokens, dtype=DTYPE)
    out.scatter_add_(1, cell.T, w.unsqueeze(0).expand(i.numel(), -1).contiguous())
    return out.view(-1, num_tokens, num_tokens)


def _kl_per_pair(q: Tensor, p: Tensor) -> Tensor:
    """``[P]`` KL(q_ij || p_ij) of joints ``[P, V, V]``; cells with ``q = 0`` add 0, ``p`` must be > 0 where ``q`` is."""
    terms = torch.where(q > 0, q * (q.clamp_min(1e-300).log() - p.log()), torch.zeros((), dtype=q.dtype))
    return terms.sum((-1, -2))


def pair_kl(q: Tensor, p: Tensor) -> float:
    """Mean over pairs of KL(q_ij || p_ij), nats per pair (``q``, ``p``: ``[P, V, V]``; ``p > 0``)."""
    return float(_kl_per_pair(q, p).mean())


def pair_js(a: Tensor, b: Tensor) -> float:
    """Mean over pairs of the Jensen-Shannon divergence between two sets of joints ``[P, V, V]`` (nats)."""
    m = (a + b) / 2
    return float((0.5 * _kl_per_pair(a, m) + 0.5 * _kl_per_pair(b, m)).mean())


@dataclass(frozen=True)
class PairDivergence:
    """Mean pairwise KL of a sampler's samples against the oracle, and the same for exact samples."""

    value: float  # nats per pair
    floor: float  # the statistic for as many exact samples from the oracle
    samples: int
    max_distance: int

    @property
    def excess(self) -> float:
        """``value - floor``: the part of the measure that is the sampler's error."""
        return self.value - self.floor


@torch.no_grad()
def pair_divergence(oracle: ChainOracle, sequences: Tensor, max_distance: int = 8,
                    floor_seed: int = 0) -> PairDivergence:
    """Mean pairwise KL of unconditional samples ``[N, G]`` against ``oracle``, beside its sampling floor.

    The floor draws ``N`` exact samples with ``oracle.sample`` (seeded by
    ``floor_seed``) and scores them the same way.
    """
    if sequences.dim() != 2 or sequences.shape[0] < 2:
        raise ValueError(f"sequences must be [n >= 2, length], got shape {tuple(sequences.shape)}")
    n, g = sequences.shape
    v = oracle.num_tokens
    exact = exact_pair_marginals(oracle, g, max_distance)
    value = pair_kl(sample_pair_marginals(sequences, v, max_distance), exact)
    truth = oracle.sample(n, g, torch.Generator().manual_seed(floor_seed))
    floor = pair_kl(sample_pair_marginals(truth, v, max_distance), exact)
    return PairDivergence(value, floor, n, max_distance)
