"""From logits to proposed tokens and per-position scores, in one primitive.

Scores (confidence, margin, entropy) come from the model's clean distribution
``softmax(logits)`` (or, with ``SamplingParams.score_temperature``, from the
tempered and truncated sampling distribution, as Dream's ``maskgit_plus``
does), never from noise-perturbed values; tokens are drawn from the sampling
distribution (temperature, top-k, top-p) with counter-based noise
(:mod:`unmask.noise`), so a row's draws do not depend on its batch.

Scores rank exactly to the precision of the logits. A float32 confidence near
1 is coarse (spacing 6e-8 below 1, and ``exp(max - logsumexp)`` loses the
gap entirely once logits reach ~50), so two positions at p = 1 - 1.00e-6 and
1 - 1.02e-6 would tie. :func:`scores` therefore also returns the complements
that planners rank and threshold on, computed from sums of positive terms
without cancellation: ``doubt = 1 - p`` and ``1 - margin`` keep full relative
precision as p -> 1, and the entropy is a sum of two non-negative parts.
Everything runs in float32 on the block slice only: no float64 ``[L, V]``
softmax is ever materialised.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .noise import TOKENS, CallNoise


@dataclass(frozen=True)
class Proposal:
    """Per-position proposals for one call, all ``[N, L]``.

    ``doubt`` and ``margin_doubt`` are the ranking keys (lower = more certain);
    when a hand-built proposal leaves them out they are ``1 - confidence`` and
    ``1 - margin``.
    """

    tokens: Tensor  # long: the token each position would take if revealed now
    confidence: Tensor  # float: probability of that token (rounds to 1.0 above 1 - 6e-8)
    logq: Tensor  # float: its log-probability under the sampling distribution (0 when greedy)
    margin: Tensor | None = None  # float: top-1 minus top-2 probability
    entropy: Tensor | None = None  # float: entropy in nats
    doubt: Tensor = None  # type: ignore[assignment]  # float: 1 - confidence, full relative precision
    margin_doubt: Tensor | None = None  # float: 1 - margin, full relative precision
    finite: Tensor | None = None  # [N] bool: False for a row where some position's logits held NaN, +inf, or only -inf

    def __post_init__(self) -> None:
        if self.doubt is None:
            object.__setattr__(self, "doubt", 1.0 - self.confidence)
        if self.margin is not None and self.margin_doubt is None:
            object.__setattr__(self, "margin_doubt", 1.0 - self.margin)


@dataclass(frozen=True)
class SamplingParams:
    """How tokens are drawn and scored: ``temperature`` 0 is greedy; ``top_p`` / ``top_k`` truncate before drawing.

    ``score_temperature``: score on the sampling distribution (logits divided
    by the temperature when it is > 0, then truncated by top-k / top-p), as
    Dream's ``maskgit_plus`` does, instead of the clean model distribution
    (LLaDA's ``low_confidence``; the default). The trace's token probabilities
    follow the scores.
    """

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int | None = None
    score_temperature: bool = False

    def __post_init__(self) -> None:
        if not _is_number(self.temperature) or not 0.0 <= self.temperature < math.inf:
            raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {self.temperature!r}")
        if not _is_number(self.top_p) or not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if self.top_k is not None and (not isinstance(self.top_k, int) or isinstance(self.top_k, bool) or self.top_k < 1):
            raise ValueError(f"top_k must be a positive int or None, got {self.top_k!r}")
        if not isinstance(self.score_temperature, bool):
            raise ValueError(f"score_temperature must be True or False, got {self.score_temperature!r}")
        object.__setattr__(self, "temperature", float(self.temperature))
        object.__setattr__(self, "top_p", float(self.top_p))


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Scores:
    """Scores of one token per position under one distribution, all ``[N, L]`` float32."""

    confidence: Tensor
    doubt: Tensor
    margin: Tensor | None = None
    margin_doubt: Tensor | None = None
    entropy: Tensor | None = None


def scores(z: Tensor, tokens: Tensor, need: frozenset[str] = frozenset(),
           peak: tuple[Tensor, Tensor] | None = None) -> Scores:
    """Score ``tokens [N, L]`` under ``softmax(z)``, ``z [N, L, V]`` float32 (``-inf`` allowed).

    With ``m = max z`` at index ``a``, ``e_j = exp(z_j - m)`` and
    ``s = sum_{j != a} e_j`` (``T = 1 + s`` normalises): ``p = e_tok / T``;
    ``1 - p = s / T`` for the argmax and ``(1 + s - e_tok) / T >= 1/2`` for any
    other token; ``1 - margin = (s + e_2) / T`` with ``e_2`` the runner-up;
    entropy ``= log1p(s) + sum_j e_j (m - z_j) / T``. Every sum has positive
    terms, so each score keeps the relative precision of a float32 sum (about
    ``log2(V) * 2^-24``) however close p is to 1. ``need`` names the optional
    scores (``"margin"``, ``"entropy"``); ``peak = (m, a)`` reuses a max the
    caller already has. One exp pass over the vocabulary, plus one for the
    entropy and one for the margin when asked.
    """
    m, a = z.max(-1) if peak is None else peak  # [N, L]
    e = (z - m.unsqueeze(-1)).exp_()  # [N, L, V]; e_a = 1
    e.scatter_(-1, a.unsqueeze(-1), 0.0)  # drop the argmax so the sums below exclude it exactly
    s = e.sum(-1)  # [N, L]
    total = 1.0 + s
    is_top = tokens == a
    e_tok = torch.where(is_top, 1.0, e.gather(-1, tokens.unsqueeze(-1)).squeeze(-1))
    doubt = torch.where(is_top, s, (1.0 - e_tok) + s) / total
    margin = margin_doubt = entropy = None
    if "margin" in need:
        e2 = e.max(-1).values  # the runner-up, argmax dropped
        margin, margin_doubt = (1.0 - e2) / total, (s + e2) / total
    if "entropy" in need:
        entropy = torch.log1p(s) + torch.special.entr(e).sum(-1) / total  # entr(e_j) = e_j (m - z_j), 0 at e_j = 0
    return Scores(e_tok / total, doubt, margin, margin_doubt, entropy)


def _truncate(z: Tensor, top_k: int | None, top_p: float) -> Tensor:
    """Set logits outside the top-k / nucleus to -inf; ``z`` is ``[..., V]`` float32."""
    if top_k is not None and top_k < z.shape[-1]:
        kth = torch.topk(z, top_k, dim=-1).values[..., -1:]
        z = z.masked_fill(z < kth, float("-inf"))
    if top_p < 1.0:
        sorted_z, order = torch.sort(z, dim=-1, descending=True)
        cum = sorted_z.softmax(-1).cumsum(-1)
        # drop a token when the mass before it already reaches top_p (the first always stays)
        drop_sorted = (cum - sorted_z.softmax(-1)) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        z = z.masked_fill(drop, float("-inf"))
    return z


def propose(
    logits: Tensor,
    params: SamplingParams,
    noise: CallNoise | None = None,
    need: frozenset[str] = frozenset(),
) -> Proposal:
    """Draw one token per position and score it.

    ``logits``: ``[N, L, V]`` (any float dtype). ``need`` names the optional
    scores to compute (``"margin"``, ``"entropy"``); confidence, its doubt
    and logq are always computed. ``noise`` supplies the uniforms of the
    draws and is required when ``params.temperature > 0``. Logits holding
    NaN or +inf (or only -inf at a position) give ``finite = False``, which
    the caller must check (:func:`unmask.decide.check` does, once per block).
    """
    z = logits.float()  # [N, L, V]; a copy only when the logits are half precision
    peak = z.max(-1)  # [N, L] values and argmax; NaN propagates into the max
    finite = torch.isfinite(peak.values).all(-1)  # [N], per row: checked by the caller, no host synchronisation here
    scored = z
    if params.temperature == 0.0:
        tokens = peak.indices
        logq = torch.zeros_like(peak.values)
        if params.score_temperature and (params.top_k is not None or params.top_p < 1.0):
            scored = _truncate(z, params.top_k, params.top_p)
    else:
        zq = _truncate(z / params.temperature, params.top_k, params.top_p)
        logq_all = torch.log_softmax(zq, dim=-1)
        if noise is None:
            raise ValueError("sampling with temperature > 0 needs noise (an unmask.noise.CallNoise)")
        # Gumbel-max via exponential races: argmax(q / E), E = -log(U) ~ Exp(1)
        races = -torch.log(noise.uniform(TOKENS, z.shape[-1]))  # [N, L, V]
        tokens = (logq_all - races.log()).argmax(-1)
        logq = logq_all.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        scored = zq if params.score_temperature else z
    sc = scores(scored, tokens, need, (peak.values, peak.indices) if scored is z else None)
    return Proposal(tokens=tokens, confidence=sc.confidence, logq=logq, margin=sc.margin, entropy=sc.entropy,
                    doubt=sc.doubt, margin_doubt=sc.margin_doubt, finite=finite)
