"""From logits to proposed tokens and per-position scores, in one primitive.

Scores (confidence, margin, entropy) come from the model's clean distribution
``softmax(logits)``, never from noise-perturbed values; tokens are drawn from
the sampling distribution (temperature, top-k, top-p) with
counter-based noise (:mod:`unmask.noise`), so a row's draws do not depend on
its batch. Everything runs in float32 on the block slice only: no
float64 ``[L, V]`` softmax is ever materialised.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .noise import TOKENS, CallNoise

SCORES = ("confidence", "margin", "entropy")


@dataclass(frozen=True)
class Proposal:
    """Per-position proposals for one call, all ``[N, L]``."""

    tokens: Tensor  # long: the token each position would take if revealed now
    confidence: Tensor  # float: model probability of that token
    logq: Tensor  # float: its log-probability under the sampling distribution (0 when greedy)
    margin: Tensor | None = None  # float: top-1 minus top-2 model probability
    entropy: Tensor | None = None  # float: model entropy in nats
    finite: Tensor | None = None  # bool scalar: False if some position's logits held NaN, +inf, or only -inf


@dataclass(frozen=True)
class SamplingParams:
    """How tokens are drawn: ``temperature`` 0 is greedy; ``top_p`` / ``top_k`` truncate before drawing."""

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int | None = None

    def __post_init__(self) -> None:
        if not _is_number(self.temperature) or not 0.0 <= self.temperature < math.inf:
            raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {self.temperature!r}")
        if not _is_number(self.top_p) or not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if self.top_k is not None and (not isinstance(self.top_k, int) or isinstance(self.top_k, bool) or self.top_k < 1):
            raise ValueError(f"top_k must be a positive int or None, got {self.top_k!r}")
        object.__setattr__(self, "temperature", float(self.temperature))
        object.__setattr__(self, "top_p", float(self.top_p))


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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
    scores to compute (``"margin"``, ``"entropy"``); confidence and logq are
    always computed. ``noise`` supplies the uniforms of the draws and is
required when ``params.temperature > 0``. Logits holding NaN or +inf (or only
-inf at a position) give ``finite = False``, which the caller must check
(:func:`unmask.decide.check_block` does, once per block).
    """
    z = logits.float()  # [N, L, V]; a copy only when the logits are half precision
    lse = torch.logsumexp(z, dim=-1)  # [N, L]
    finite = torch.isfinite(lse).all()  # checked by the caller once per block: no host synchronisation here
    if params.temperature == 0.0:
        top, tokens = z.max(-1)
        confidence = (top - lse).exp()
        logq = torch.zeros_like(confidence)
    else:
        zq = _truncate(z / params.temperature, params.top_k, params.top_p)
        logq_all = torch.log_softmax(zq, dim=-1)
        if noise is None:
            raise ValueError("sampling with temperature > 0 needs noise (an unmask.noise.CallNoise)")
        # Gumbel-max via exponential races: argmax(q / E), E = -log(U) ~ Exp(1)
        races = -torch.log(noise.uniform(TOKENS, z.shape[-1]))  # [N, L, V]
        tokens = (logq_all - races.log()).argmax(-1)
        logq = logq_all.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        confidence = (z.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - lse).exp()
    margin = entropy = None
    if "margin" in need:
        top2 = (torch.topk(z, 2, dim=-1).values - lse.unsqueeze(-1)).exp()
        margin = top2[..., 0] - top2[..., 1]
    if "entropy" in need:
        entropy = torch.special.entr((z - lse.unsqueeze(-1)).exp()).sum(-1)
    return Proposal(tokens=tokens, confidence=confidence, logq=logq, margin=margin, entropy=entropy, finite=finite)
