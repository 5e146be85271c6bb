"""From logits to proposed tokens and per-position scores, in one primitive.

Scores (confidence, margin, entropy) come from the model's clean distribution
``softmax(logits)`` (or, with ``SamplingParams.tempered_scores``, from the
tempered and truncated sampling distribution, as Dream's ``maskgit_plus``
does), never from noise-perturbed values; tokens are drawn from the sampling
distribution (temperature, top-k, top-p) by inverting its cumulative
distribution at one counter-based uniform per position (:mod:`unmask.noise`),
so a row's draws do not depend on its batch and cost one pass over the
vocabulary beyond the scores (:func:`draw`).

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
    entropy_reference: Tensor | None = None  # float64 bits, the EB reference's -sum p log2(p + 1e-10)

    def __post_init__(self) -> None:
        if self.doubt is None:
            object.__setattr__(self, "doubt", 1.0 - self.confidence)
        if self.margin is not None and self.margin_doubt is None:
            object.__setattr__(self, "margin_doubt", 1.0 - self.margin)


# Logits are divided by the temperature in float32: a value outside the normal float32 range
# would round to 0 or inf there, and (z - max) / T would give NaN.
TEMPERATURE_MIN = float(torch.finfo(torch.float32).tiny)  # 2^-126
TEMPERATURE_MAX = float(torch.finfo(torch.float32).max)


@dataclass(frozen=True)
class SamplingParams:
    """How tokens are drawn and scored: ``temperature`` 0 is greedy; ``top_p`` / ``top_k`` truncate before drawing.

    ``tempered_scores``: score on the sampling distribution (logits divided
    by the temperature when it is > 0, then truncated by top-k / top-p), as
    Dream's ``maskgit_plus`` does, instead of the clean model distribution
    (LLaDA's ``low_confidence``; the default). The trace's token probabilities
    follow the scores.
    """

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int | None = None
    tempered_scores: bool = False

    def __post_init__(self) -> None:
        if not _is_number(self.temperature) or not (
                self.temperature == 0.0 or TEMPERATURE_MIN <= self.temperature <= TEMPERATURE_MAX):
            raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy) and, when > 0, in "
                             f"[{TEMPERATURE_MIN:.3g}, {TEMPERATURE_MAX:.3g}] (logits are divided by it in float32), "
                             f"got {self.temperature!r}")
        if not _is_number(self.top_p) or not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if self.top_k is not None and (not isinstance(self.top_k, int) or isinstance(self.top_k, bool) or self.top_k < 1):
            raise ValueError(f"top_k must be a positive int or None, got {self.top_k!r}")
        if not isinstance(self.tempered_scores, bool):
            raise ValueError(f"tempered_scores must be True or False, got {self.tempered_scores!r}")
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
    entropy_reference: Tensor | None = None  # float64, bits: -sum p log2(p + 1e-10)


REFERENCE_EPS = 1e-10  # the EB / DUS reference code's entropy: -sum p log2(p + 1e-10), in float64


def scores(z: Tensor, tokens: Tensor, need: frozenset[str] = frozenset(),
           peak: tuple[Tensor, Tensor] | None = None, e: Tensor | None = None) -> Scores:
    """Score ``tokens [N, L]`` under ``softmax(z)``, ``z [N, L, V]`` float32 (``-inf`` allowed).

    With ``m = max z`` at index ``a``, ``e_j = exp(z_j - m)`` and
    ``s = sum_{j != a} e_j`` (``T = 1 + s`` normalises): ``p = e_tok / T``;
    ``1 - p = s / T`` for the argmax and ``(1 + s - e_tok) / T >= 1/2`` for any
    other token; ``1 - margin = (s + e_2) / T`` with ``e_2`` the runner-up;
    entropy ``= log1p(s) + sum_j e_j (m - z_j) / T``. Every sum has positive
    terms, so each score keeps the relative precision of a float32 sum (about
    ``log2(V) * 2^-24``) however close p is to 1, and p itself keeps it near 0.
    ``need`` names the optional scores (``"margin"``, ``"entropy"``,
    ``"entropy_reference"``: the EB reference's ``-sum p log2(p + 1e-10)`` in
    float64 bits); ``peak = (m, a)`` reuses a max the caller already has, and
    ``e`` the tensor ``exp(z - m)`` (it is overwritten). One exp pass over the
    vocabulary, plus one for the entropy and one for the margin when asked.
    """
    m, a = z.max(-1) if peak is None else peak  # [N, L]
    if e is None:
        e = (z - m.unsqueeze(-1)).exp_()  # [N, L, V]; e_a = 1
    e.scatter_(-1, a.unsqueeze(-1), 0.0)  # drop the argmax so the sums below exclude it exactly
    s = e.sum(-1)  # [N, L]
    total = 1.0 + s
    is_top = tokens == a
    e_tok = torch.where(is_top, 1.0, e.gather(-1, tokens.unsqueeze(-1)).squeeze(-1))
    doubt = torch.where(is_top, s, (1.0 - e_tok) + s) / total
    margin = margin_doubt = entropy = reference = None
    if "margin" in need:
        e2 = e.max(-1).values  # the runner-up, argmax dropped
        margin, margin_doubt = (1.0 - e2) / total, (s + e2) / total
    if "entropy" in need:
        entropy = torch.log1p(s) + torch.special.entr(e).sum(-1) / total  # entr(e_j) = e_j (m - z_j), 0 at e_j = 0
    if "entropy_reference" in need:
        p = e.double()  # argmax dropped; its total in float64, so p near 1 keeps its precision in the log
        p.scatter_(-1, a.unsqueeze(-1), 1.0)
        p.div_(p.sum(-1, keepdim=True))
        reference = -(p * (p + REFERENCE_EPS).log2()).sum(-1)
    return Scores(e_tok / total, doubt, margin, margin_doubt, entropy, reference)


def _truncate(z: Tensor, top_k: int | None, top_p: float) -> Tensor:
    """Set logits outside the top-k / nucleus to -inf; ``z`` is ``[..., V]`` float32 whose max is kept.

    The nucleus keeps a token while the mass before it (in descending order)
    is below ``top_p``, compared in float64, and always keeps the tokens tied
    at the max, so any ``top_p`` in (0, 1] leaves the argmax.
    """
    if top_k is not None and top_k < z.shape[-1]:
        kth = torch.topk(z, top_k, dim=-1).values[..., -1:]
        z = z.masked_fill(z < kth, float("-inf"))
    if top_p < 1.0:
        sorted_z, order = torch.sort(z, dim=-1, descending=True)
        probs = sorted_z.softmax(-1)
        before = probs.cumsum(-1).sub_(probs)  # mass strictly before each sorted token
        drop_sorted = (before.double() >= top_p) & (sorted_z < sorted_z[..., :1])  # tokens tied at the max stay
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        z = z.masked_fill(drop, float("-inf"))
    return z


CHUNK = 512  # vocabulary entries per chunk of the two-level inverse CDF
BELOW_ONE = 1.0 - 2.0**-53  # the largest float64 below 1


def _first_above(cum: Tensor, target: Tensor) -> Tensor:
    """Index of the first entry of the non-decreasing ``cum [..., K]`` above ``target [..., 1]``.

    Capped at the first entry equal to the last (the last with positive weight),
    so rounding at the top end can never pick an entry of weight 0; an entry
    picked below the cap has ``cum[j - 1] <= target < cum[j]``, so positive weight.
    """
    above = torch.searchsorted(cum, target, right=True)
    return torch.minimum(above, (cum < cum[..., -1:]).sum(-1, keepdim=True))


def draw(w: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    """Inverse-CDF draw of one index per row of unnormalised weights ``w [..., V]`` at uniforms ``u [...]``.

    Returns the indices and the total weight (float64). Two levels: ``t = u *
    total`` picks the chunk of ``CHUNK`` entries whose cumulative sums bracket
    it (chunk sums in float32, accumulated in float64), then the rescaled
    fraction of ``t`` inside that chunk is inverted on the chunk's float64
    cumulative sum. Given the chunk the fraction is uniform, so an entry is
    drawn with probability ``w_j / total`` up to the float32 rounding of the
    chunk sums, and an entry of weight 0 never is (:func:`_first_above`), for
    any ``u`` in [0, 1). Cost: one summing pass over ``w`` plus ``O(V / CHUNK
    + CHUNK)`` per row.
    """
    v = w.shape[-1]
    full = v // CHUNK
    sums = w[..., : full * CHUNK].unflatten(-1, (full, CHUNK)).sum(-1)
    if full * CHUNK < v:
        sums = torch.cat([sums, w[..., full * CHUNK :].sum(-1, keepdim=True)], -1)
    cum = sums.double().cumsum(-1)  # [..., C]
    total = cum[..., -1]
    t = (u * total).unsqueeze(-1)
    c = _first_above(cum, t)  # [..., 1]
    before = torch.where(c > 0, cum.gather(-1, (c - 1).clamp_min(0)), 0.0)
    frac = ((t - before) / (cum.gather(-1, c) - before)).clamp(0.0, BELOW_ONE)
    idx = c * CHUNK + torch.arange(CHUNK, device=w.device)  # [..., CHUNK]
    inner = w.gather(-1, idx.clamp_max(v - 1)).double().masked_fill_(idx >= v, 0.0).cumsum_(-1)
    j = _first_above(inner, frac * inner[..., -1:])
    return (c * CHUNK + j).squeeze(-1), total


CANDIDATES = 64  # tokens a top-p draw without top-k looks at before it sorts the whole vocabulary


def _draw_candidates(z: Tensor, m: Tensor, params: SamplingParams, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """A truncated draw among the top ``k + 1`` logits (``k`` = top-k, else ``CANDIDATES``): no sort of the vocabulary.

    The weights are the full path's (``exp((z - m) / T)`` in float32), the
    truncation rules are :func:`_truncate`'s, and the kept candidates are
    taken in vocabulary order, so a uniform picks the token the full path
    picks (up to the rounding of their cumulative sums). Returns tokens, logq
    and ``ok [N, L]``: False where the candidates may not hold the truncated
    support (a tie at the k-th value, or a nucleus wider than the candidates),
    which the full path must then draw.
    """
    v, t = z.shape[-1], params.temperature
    k = params.top_k if params.top_k is not None else CANDIDATES
    vals, idx = z.topk(min(k + 1, v), dim=-1)  # [..., k + 1], descending
    zq = (vals - m.unsqueeze(-1)).div_(t)
    w = zq.exp().double()
    ok = torch.ones_like(m, dtype=torch.bool)
    if params.top_k is not None and k < v:
        ok &= vals[..., k] < vals[..., k - 1]  # the full path keeps every token tied with the k-th
        w[..., k] = 0.0
    if params.top_p < 1.0:
        if params.top_k is not None or k >= v:
            total = w.sum(-1, keepdim=True)
        else:  # the nucleus is a share of the whole tempered mass: one pass, as the full path's
            total = torch.sub(z, m.unsqueeze(-1)).div_(t).exp_().sum(-1, keepdim=True).double()
        drop = ((w.cumsum(-1) - w) / total >= params.top_p) & (vals < vals[..., :1])
        if params.top_k is None and k < v:
            ok &= drop[..., k]  # the (k + 1)-th is out, so is everything after it
        w = w.masked_fill(drop, 0.0)
    order = idx.argsort(-1)  # vocabulary order
    cum = w.gather(-1, order).cumsum(-1)
    j = order.gather(-1, _first_above(cum, (u * cum[..., -1]).unsqueeze(-1)))
    logq = (zq.gather(-1, j).squeeze(-1).double() - cum[..., -1].log()).float()
    return idx.gather(-1, j).squeeze(-1), logq, ok


def _draw_full(z: Tensor, m: Tensor, params: SamplingParams, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Tokens, logq and the weights ``w`` of a draw over the whole vocabulary: ``w = exp(truncate((z - m) / T))``,
    a fresh tensor the caller may reuse (at temperature 1 without truncation it is the scores' ``exp(z - m)``)."""
    t = params.temperature
    d = z - m.unsqueeze(-1)  # [..., V]: max 0 at the argmax; -inf stays -inf
    # in place where possible: a fresh [N, L, V] tensor costs about as much as a pass (page faults)
    w = _truncate(d if t == 1.0 else d.div_(t), params.top_k, params.top_p).exp_()
    tokens, total = draw(w, u)  # w: 1 at the argmax, 0 where truncated or -inf
    picked = z.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - m
    return tokens, (picked.double() / t - total.log()).float(), w


def propose(
    logits: Tensor,
    params: SamplingParams,
    noise: CallNoise | None = None,
    need: frozenset[str] = frozenset(),
) -> Proposal:
    """Draw one token per position and score it.

    ``logits``: ``[N, L, V]`` (any float dtype). ``need`` names the optional
    scores to compute (``"margin"``, ``"entropy"``); confidence, its doubt
    and logq are always computed. ``noise`` supplies one uniform per position
    and is required when ``params.temperature > 0``: the token is drawn from
    ``softmax(truncate((logits - max) / T))`` by :func:`draw`. When the scores
    are taken on that same distribution (temperature 1 without truncation, or
    ``tempered_scores``) its ``exp`` pass is shared. On CPU a truncated draw
    looks at the top candidates first (:func:`_draw_candidates`; positions it
    cannot decide alone take the full path, so a position's path depends on
    its own logits only). Logits holding NaN or +inf (or only -inf at a
    position) give ``finite = False``, which the caller must check
    (:func:`unmask.decide.check` does, once per block).
    """
    z = logits.float()  # [N, L, V]; a copy only when the logits are half precision
    a = z.argmax(-1)  # [N, L]: the first maximum (NaN counts as the maximum); faster than max() with indices
    m = z.gather(-1, a.unsqueeze(-1)).squeeze(-1)
    finite = torch.isfinite(m).all(-1)  # [N], per row: checked by the caller, no host synchronisation here
    truncated = params.top_k is not None or params.top_p < 1.0
    e = None  # exp(z - m), when a draw computed it
    if params.temperature == 0.0:
        tokens = a
        logq = torch.zeros_like(m)
        if params.tempered_scores and truncated:  # scores on the truncated distribution, max at a
            e = _truncate(z - m.unsqueeze(-1), params.top_k, params.top_p).exp_()
    else:
        if noise is None:
            raise ValueError("sampling with temperature > 0 needs noise (an unmask.noise.CallNoise)")
        u = noise.uniform64(TOKENS)
        if truncated and not params.tempered_scores and z.device.type == "cpu":
            tokens, logq, ok = _draw_candidates(z, m, params, u)
            if not bool(ok.all()):  # a host read, free on CPU
                slow = ~ok
                tokens[slow], logq[slow], _ = _draw_full(z[slow], m[slow], params, u[slow])
        else:
            tokens, logq, w = _draw_full(z, m, params, u)
            if (params.temperature == 1.0 and not truncated) or params.tempered_scores:
                e = w  # one exp pass serves the draw and the scores
            else:  # the clean exp(z - m), in the draw's buffer
                e = torch.sub(z, m.unsqueeze(-1), out=w).exp_()
    sc = scores(z, tokens, need, (m, a), e)
    return Proposal(tokens=tokens, confidence=sc.confidence, logq=logq, margin=sc.margin, entropy=sc.entropy,
                    doubt=sc.doubt, margin_doubt=sc.margin_doubt, finite=finite,
                    entropy_reference=sc.entropy_reference)
