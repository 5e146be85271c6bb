"""The sampling primitive: exact scores from the clean distribution, correct draws."""

import math

import pytest
import torch

from unmask.noise import Noise
from unmask.sampling import SamplingParams, propose

LOGITS = torch.log(torch.tensor([0.5, 0.25, 0.15, 0.1]))


def noise(n: int, seed: int):
    """Uniforms for one row of ``n`` positions (each position an independent draw)."""
    return Noise.from_seeds([seed]).at(0, torch.arange(n).unsqueeze(0))


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
    p = propose(LOGITS.expand(1, n, 4), SamplingParams(temperature=1.0), noise=noise(n, 0))
    freq = torch.bincount(p.tokens.flatten(), minlength=4).double() / n
    probs = LOGITS.exp().double()
    se = (probs * (1 - probs) / n).sqrt()
    assert ((freq - probs).abs() < 5 * se).all()
    # confidence is the model probability of the drawn token; logq equals it at T=1
    assert torch.allclose(p.confidence, probs[p.tokens].float())
    assert torch.allclose(p.logq.exp(), p.confidence)


def test_top_p_and_top_k_truncate_and_renormalise():
    n = 5000
    p = propose(LOGITS.expand(1, n, 4), SamplingParams(temperature=1.0, top_p=0.7), noise=noise(n, 1))
    assert set(p.tokens.unique().tolist()) == {0, 1}  # 0.5 + 0.25 covers 0.7
    assert torch.allclose(p.logq.exp()[p.tokens == 0], torch.tensor(0.5 / 0.75))
    assert torch.allclose(p.confidence[p.tokens == 1], torch.tensor(0.25))  # scores stay clean
    k = propose(LOGITS.expand(1, n, 4), SamplingParams(temperature=1.0, top_k=1), noise=noise(n, 2))
    assert (k.tokens == 0).all() and torch.allclose(k.logq, torch.tensor(0.0))


def test_low_temperature_sharpens():
    p = propose(LOGITS.expand(1, 4000, 4), SamplingParams(temperature=0.25), noise=noise(4000, 3))
    share = (p.tokens == 0).double().mean()
    expected = 0.5**4 / sum(q**4 for q in (0.5, 0.25, 0.15, 0.1))
    assert abs(share - expected) < 0.03


def test_minus_inf_is_never_drawn():
    logits = torch.tensor([0.0, float("-inf"), 0.0]).expand(1, 2000, 3)
    p = propose(logits, SamplingParams(temperature=1.0), noise=noise(2000, 4))
    assert not (p.tokens == 1).any()


def test_sampling_without_noise_is_refused():
    with pytest.raises(ValueError, match="needs noise"):
        propose(LOGITS.expand(1, 2, 4), SamplingParams(temperature=1.0))
