"""The ELBO estimator's masked-count draws: stratified by default, unbiased, and with less variance."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch

from unmask import TokenSpec
from unmask.denoiser import Denoiser, Window, select_window
from unmask.eval.likelihood import mask_counts, mc_loglikelihood

VOCAB, MASK, ALPHA = 34, 33, 0.5
L, M = 8, 4  # continuation length, draws per request


class CountsMasks(Denoiser):
    """Every position puts logit ``ALPHA * l`` on token 0, ``l`` = masked tokens in its row (others 0).

    A draw that masks ``l`` of the all-zero continuation then scores
    ``(L / l) * l * g(l) = L g(l)`` with ``g(l) = log softmax(...)[0]``: the
    estimate depends on ``l`` only, so its mean and variance are sums over ``l``.
    """

    spec = TokenSpec(mask_id=MASK, eos_ids=(32,), pad_id=0, vocab_size=VOCAB)

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                 window: Window | None = None) -> torch.Tensor:
        logits = torch.zeros(*input_ids.shape, VOCAB)
        logits[..., 0] = ALPHA * (input_ids == MASK).sum(-1, keepdim=True)
        return select_window(logits, window)


def g(l: int) -> float:
    return ALPHA * l - math.log(math.exp(ALPHA * l) + VOCAB - 1)


def stratum(k: int) -> dict[int, Fraction]:
    """P(l_k = j): the share of slice k of [0, 1) that floor(u L) + 1 maps to j."""
    lo, hi = Fraction(k, M), Fraction(k + 1, M)
    probs = {j: M * (min(hi, Fraction(j, L)) - max(lo, Fraction(j - 1, L))) for j in range(1, L + 1)}
    return {j: p for j, p in probs.items() if p > 0}


def variance(dist: dict[int, Fraction]) -> float:
    mean = sum(float(p) * L * g(j) for j, p in dist.items())
    return sum(float(p) * (L * g(j) - mean) ** 2 for j, p in dist.items())


def test_stratified_counts_cover_each_slice() -> None:
    gen = torch.Generator().manual_seed(0)
    for length, mc_num in ((8, 4), (5, 3), (3, 7), (1, 2)):
        counts = mask_counts(length, mc_num, gen)
        assert counts.shape == (mc_num,) and bool(((counts >= 1) & (counts <= length)).all())
        for k, c in enumerate(counts.tolist()):  # draw k lies in slice k: (c - 1) / L < (k + 1) / m and c / L > k / m
            assert (c - 1) * mc_num < (k + 1) * length and c * mc_num > k * length


def test_stratified_draws_are_unbiased_with_the_variance_the_math_gives() -> None:
    den = CountsMasks()
    pairs = [([a, b], [0] * L) for a in range(32) for b in range(16)]  # 512 distinct requests and seeds
    exact_mean = sum(g(j) for j in range(1, L + 1))  # E_l[L g(l)], l ~ U{1..L}
    var_independent = variance({j: Fraction(1, L) for j in range(1, L + 1)}) / M
    var_stratified = sum(variance(stratum(k)) for k in range(M)) / M**2
    assert var_stratified < 0.1 * var_independent  # here the within-slice spread is small
    estimates = {}
    for stratified in (True, False):
        lls, _ = mc_loglikelihood(den, pairs, mc_num=M, batch_size=len(pairs) * M, stratified=stratified)
        estimates[stratified] = torch.tensor(lls, dtype=torch.float64)
    n = len(pairs)
    for stratified, var in ((True, var_stratified), (False, var_independent)):
        est = estimates[stratified]
        assert abs(float(est.mean()) - exact_mean) < 4 * math.sqrt(var / n)  # unbiased, within 4 standard errors
        assert float(est.var()) == pytest.approx(var, rel=0.3)  # the sample variance of 512 requests: about 6% off
