"""From logits to proposed tokens and per-position scores, in one primitive.

Scores (confidence, margin, entropy) come from the model's clean distribution
``softmax(logits)``, never from noise-perturbed values; tokens are drawn from
the sampling distribution (temperature, top-k, top-p) with
counter-based noise (:mod:`unmask.noise`), so a row's draws do not depend on
its batch. Everything runs in float32 on the block slice only: no
float64 ``[L, V]`` softmax is ever materialised.
"""

from __future__ import annotations

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


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int | None = None


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
required when ``params.temperature > 0``. Raises ``ValueError`` if the logits
hold NaN or +inf.
    """
    z = logits.float()  # [N, L, V]; a copy only when the logits are half precision
    lse = torch.logsumexp(z, dim=-1)  # [N, L]
    if not torch.isfinite(lse).all():
        raise ValueError(
            "denoiser returned logits with NaN or +inf (or a position where every token has -inf); "
            "logits must be finite or -inf"
        )
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
    return Proposal(tokens=tokens, confidence=confidence, logq=logq, margin=margin, entropy=entropy)
