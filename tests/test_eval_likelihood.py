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


class CleanPast(Denoiser):
    """Block-causal toy (blocks of 4 from each row's first token): a position whose earlier blocks hold no mask
    puts probability 0.9 on token 1 (the rest spread evenly), else a uniform distribution. Tokens of a block are
    independent given a clean past, so each block's ELBO is its exact log-likelihood, ``n log 0.9`` for n ones."""

    spec = TokenSpec(mask_id=MASK, eos_ids=(32,), pad_id=0, vocab_size=VOCAB)
    attention_block: int | None = 4
    model_block = 4  # what the toy computes with (attention_block None: the estimator treats it as bidirectional)

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                 window: Window | None = None) -> torch.Tensor:
        m = self.model_block
        masked = (input_ids == MASK) & attention_mask  # [N, T]
        key_block, query_block = position_ids // m, position_ids // m
        dirty = ((key_block.unsqueeze(1) < query_block.unsqueeze(2)) & masked.unsqueeze(1)).any(-1)  # [N, T]
        peaked = torch.full((VOCAB,), math.log(0.1 / (VOCAB - 1)))
        peaked[1] = math.log(0.9)
        logits = torch.where(dirty.unsqueeze(-1), torch.zeros(VOCAB), peaked)
        return select_window(logits, window)


@pytest.mark.parametrize("context", [[5, 6, 7], [5, 6, 7, 8], [5]])  # the continuation starts mid-block or on a boundary
def test_block_causal_likelihood_is_the_sum_of_clean_past_block_elbos(context) -> None:
    from unmask.eval.likelihood import block_pairs, greedy_check

    cont = [1] * 11
    lls, _ = mc_loglikelihood(CleanPast(), [(context, cont)], mc_num=4, batch_size=64, seed=0)
    # exact (every piece sees a clean past) up to float32's log-softmax: about 2 ulp of 1.0 per token
    assert lls[0] == pytest.approx(11 * math.log(0.9), rel=0, abs=11 * 2 * 2**-23)
    pieces, owner = block_pairs([(context, cont)], 4)
    assert [len(c) for _, c in pieces] == [(4 - len(context) % 4) % 4 or 4] + [
        len(c) for _, c in pieces[1:]] and sum(len(c) for _, c in pieces) == 11 and set(owner) == {0}
    assert all((len(x) + len(c)) % 4 == 0 or len(x) + len(c) == len(context) + 11 for x, c in pieces)
    greedy, nfe, _ = greedy_check(CleanPast(), [(context, cont)], "reveal", batch_size=8)
    assert greedy == [True] and nfe[0] == 11  # block by block, one reveal per token
    # the whole continuation masked at once (the bidirectional estimator) conditions later blocks on masks
    flat = type("Flat", (CleanPast,), {"attention_block": None})
    biased, _ = mc_loglikelihood(flat(), [(context, cont)], mc_num=4, batch_size=64, seed=0)
    assert biased[0] < lls[0] - 1.0


def test_block_causal_likelihood_refuses_guidance() -> None:
    with pytest.raises(ValueError, match="cfg_scale=1.0 is not supported by the block-diffusion likelihood"):
        mc_loglikelihood(CleanPast(), [([5], [1, 1])], mc_num=2, batch_size=4, cfg_scale=1.0)
