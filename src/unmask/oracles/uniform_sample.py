"""Sampled runs of a uniform-state commit sampler: path KL, pair-KL samples and the KL sandwich, any canvas size.

The process is :mod:`.uniform_law`'s (uniform start; each call the posterior,
the commit rule, a draw for the committed positions, a uniform re-draw of the
rest), run batched with a ``torch.Generator``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .markov import DTYPE
from .uniform import UniformOracle
from .uniform_law import BLIND_LEVELS, _check, _commit, _log_p, posteriors
from .uniform_rules import CommitRule


@dataclass(frozen=True)
class UniformSamples:
    """Runs of a commit sampler: final sequences, and each run's summed log-probability of its commits."""

    sequences: Tensor  # [N, L] long
    log_q: Tensor  # [N] float64: sum over calls of log q(committed tokens | canvas)
    log_p: Tensor  # [N] float64: log p(x | prompt)
    calls: Tensor  # [N] long

    def path_kl(self) -> tuple[float, float]:
        """``(mean, standard error)`` of ``(log_q - log_p) / L``, nats per token.

        Its expectation is KL(q || p) plus E_x KL(q(re-draws | x) || uniform
        re-draws): exact when the commits do not depend on the re-draws (told
        view, rules that read the posterior only), an upper bound otherwise.
        """
        d = (self.log_q - self.log_p) / self.sequences.shape[1]
        return float(d.mean()), float(d.std() / math.sqrt(d.numel()))


def _run(oracle: UniformOracle, rule: CommitRule, g: int, n: int, view: str, prompt: list[int],
         generator: torch.Generator | None, levels: Tensor, forced: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """``n`` runs: final tokens ``[n, L]``, summed log q of the commits ``[n]``, calls ``[n]``.

    ``forced [n, L]``: commit these tokens instead of drawing (the weight of
    that sequence along fresh re-draws).
    """
    v, p_len = oracle.num_tokens, len(prompt)
    toks = torch.randint(0, v, (n, g), generator=generator)
    done = torch.zeros(n, g, dtype=torch.bool)
    log_q = torch.zeros(n, dtype=DTYPE)
    calls = torch.zeros(n, dtype=torch.long)
    pre = torch.tensor(prompt, dtype=torch.long).expand(n, p_len)
    for call in range(rule.max_calls(g)):
        act = ~done.all(-1)
        if not act.any():
            break
        calls += act.long()
        canvas = torch.cat([pre[act], toks[act]], 1)
        probs = posteriors(oracle, canvas, done[act], view, p_len, levels)
        if forced is None:
            drawn = torch.multinomial(probs.reshape(-1, v), 1, generator=generator).view(-1, g)
        else:
            drawn = forced[act]
        order = torch.rand(drawn.shape, generator=generator) if rule.reads_order else None
        commit = _commit(rule, probs, done[act], call, drawn, order)
        lq = torch.where(commit, probs.gather(-1, drawn.unsqueeze(-1)).squeeze(-1).log(), torch.zeros((), dtype=DTYPE))
        log_q[act] += lq.sum(-1)
        keep = done[act] | commit
        fresh = torch.randint(0, v, drawn.shape, generator=generator)
        toks[act] = torch.where(done[act], toks[act], torch.where(commit, drawn, fresh))
        done[act] = keep
    if not done.all():
        raise ValueError(f"{rule!r} left positions uncommitted after its max_calls")
    return toks, log_q, calls


@torch.no_grad()
def sample_uniform(oracle: UniformOracle, rule: CommitRule, gen_length: int, n: int, view: str = "told",
                   prompt: Sequence[int] = (), generator: torch.Generator | None = None,
                   levels: Tensor = BLIND_LEVELS) -> UniformSamples:
    """``n`` runs of the process, batched: uniform start, posterior, commit, draw, re-draw the rest."""
    prompt = _check(oracle, rule, gen_length, view, prompt)
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1, got {n!r}")
    toks, log_q, calls = _run(oracle, rule, gen_length, n, view, prompt, generator, levels)
    return UniformSamples(toks, log_q, _log_p(oracle, toks, prompt), calls)


@dataclass(frozen=True)
class KLSandwich:
    """Lower and upper estimates of KL(q || p) per token, each with its standard error."""

    lower: float
    lower_se: float
    upper: float
    upper_se: float
    samples: int
    redraws: int


@torch.no_grad()
def sandwich_kl(oracle: UniformOracle, rule: CommitRule, gen_length: int, n: int, redraws: int, view: str = "told",
                prompt: Sequence[int] = (), generator: torch.Generator | None = None,
                levels: Tensor = BLIND_LEVELS) -> KLSandwich:
    """KL(q || p) bracketed by importance sampling over the re-draws, for canvases too large to enumerate.

    q(x) = E_r[w(x)], with r the uniform re-draws along the path that commits
    ``x`` and w(x) = prod over calls of q(committed tokens of x | canvas). For
    each of ``n`` sampled ``x`` (with the re-draws that made it), ``redraws``
    = M fresh paths forced to ``x`` give weights w_1..w_M: log mean(w_1..w_M)
    is below log q(x) in expectation (Jensen; Burda et al. 2016, IWAE), and
    the same mean with w_M replaced by the generating path's weight is above
    it (one draw from the posterior over re-draws; Grosse et al. 2015,
    bidirectional Monte Carlo). Both tighten as M grows and meet at the exact
    KL; in the told view every weight is the same and both equal path KL.
    """
    prompt = _check(oracle, rule, gen_length, view, prompt)
    if not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an int >= 2, got {n!r}")
    if not isinstance(redraws, int) or redraws < 1:
        raise ValueError(f"redraws must be an int >= 1, got {redraws!r}")
    if rule.reads_draws:
        raise ValueError(f"{rule!r} chooses by the tokens drawn this call, so a path forced to x has no weight "
                         "that the sandwich can average; measure it with uniform_law (small cases) or the pair KL "
                         "of sample_uniform's sequences (unmask.oracles.pair_divergence)")
    g = gen_length
    x, log_q, _ = _run(oracle, rule, g, n, view, prompt, generator, levels)
    forced = x.repeat_interleave(redraws, 0)
    _, log_w, _ = _run(oracle, rule, g, n * redraws, view, prompt, generator, levels, forced)
    log_w = log_w.view(n, redraws)
    log_m = math.log(redraws)
    low = torch.logsumexp(log_w, -1) - log_m
    high = torch.logsumexp(torch.cat([log_w[:, :-1], log_q.unsqueeze(-1)], -1), -1) - log_m
    log_p = _log_p(oracle, x, prompt)
    lo, hi = (low - log_p) / g, (high - log_p) / g
    root = math.sqrt(n)
    return KLSandwich(float(lo.mean()), float(lo.std() / root), float(hi.mean()), float(hi.std() / root), n, redraws)
