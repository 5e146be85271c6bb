"""The sampling primitive: exact scores from the clean distribution, correct draws."""

import math

import torch

from unmask.sampling import SamplingParams, propose

LOGITS = torch.log(torch.tensor([0.5, 0.25, 0.15, 0.1]))


def test_greedy_scores():
    p = propose(LOGITS.expand(1, 3, 4), SamplingParams(), need=frozenset({"margin", "entropy"}))
    assert (p.tokens == 0).all() and (p.logq == 0).all()
    assert torch.allclose(p.confidence, torch.tensor(0.5))
    assert torch.allclose(p.margin, torch.tensor(0.25))
    h = -sum(q * math.log(q) for q in (0.5, 0.25, 0.15, 0.1))
    assert torch.allclose(p.entropy, torch.tensor(h, dtype=torch.float32))


def test_optional_scores_only_when_needed():
    p = propose(LOGITS.expand(1, 2, 4), SamplingParams())
    assert p.margin is None and p.entropy is None


def test_temperature_one_draws_from_the_model():
    n = 40000
    g = torch.Generator().manual_seed(0)
    p = propose(LOGITS.expand(1, n, 4), SamplingParams(temperature=1.0), generator=g)
    freq = torch.bincount(p.tokens.flatten(), minlength=4).double() / n
    probs = LOGITS.exp().double()
    se = (probs * (1 - probs) / n).sqrt()
    assert ((freq - probs).abs() < 5 * se).all()
    # confidence is the model probability of the drawn token; logq equals it at T=1
    assert torch.allclose(p.confidence, probs[p.tokens].float())
    assert torch.allclose(p.logq.exp(), p.confidence)


def test_top_p_and_top_k_truncate_and_renormalise():
    n = 5000
    g = torch.Generator().manual_seed(1)
    p = propose(LOGITS.expand(1, n, 4), SamplingParams(temperature=1.0, top_p=0.7), generator=g)
    assert set(p.tokens.unique().tolist()) == {0, 1}  # 0.5 + 0.25 covers 0.7
    assert torch.allclose(p.logq.exp()[p.tokens == 0], torch.tensor(0.5 / 0.75))
    assert torch.allclose(p.confidence[p.tokens == 1], torch.tensor(0.25))  # scores stay clean
    k = propose(LOGITS.expand(1, n, 4), SamplingParams(temperature=1.0, top_k=1), generator=g)
    assert (k.tokens == 0).all() and torch.allclose(k.logq, torch.tensor(0.0))


def test_low_temperature_sharpens():
    g = torch.Generator().manual_seed(2)
    p = propose(LOGITS.expand(1, 4000, 4), SamplingParams(temperature=0.25), generator=g)
    share = (p.tokens == 0).double().mean()
    expected = 0.5**4 / sum(q**4 for q in (0.5, 0.25, 0.15, 0.1))
    assert abs(share - expected) < 0.03


def test_minus_inf_is_never_drawn():
    logits = torch.tensor([0.0, float("-inf"), 0.0]).expand(1, 2000, 3)
    p = propose(logits, SamplingParams(temperature=1.0), generator=torch.Generator().manual_seed(3))
    assert not (p.tokens == 1).any()
