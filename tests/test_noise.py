"""Counter-based noise: uniform, independent where it should be, and a function of (seed, call, position) only."""

import math

import pytest
import torch

from unmask.noise import MASK32, ONE_BELOW, ORDER, TOKENS, Noise, derive_seed, mix32, to_unit
from unmask.sampling import SamplingParams, propose


def test_uniforms_are_uniform_and_inside_the_open_interval():
    u = Noise.from_seeds([7]).at(0, torch.arange(64).unsqueeze(0)).uniform(TOKENS, 4096).flatten().double()
    n = u.numel()
    assert 0.0 < float(u.min()) and float(u.max()) < 1.0
    assert abs(float(u.mean()) - 0.5) < 5 * math.sqrt(1 / 12 / n)
    # Kolmogorov-Smirnov distance against U(0, 1); 1.63 / sqrt(n) is the 1% critical value
    ecdf = torch.arange(1, n + 1, dtype=torch.float64) / n
    assert float((ecdf - u.sort().values).abs().max()) < 1.63 / math.sqrt(n)


def test_the_extreme_hashes_stay_inside_the_open_interval():
    u = to_unit(torch.tensor([0, 255, 0xFFFFFF00, MASK32], dtype=torch.long))
    assert u.dtype == torch.float32 and bool((u > 0).all()) and bool((u < 1).all())
    assert float(u[-1]) == ONE_BELOW and float(u[0]) == 2.0**-25


def test_a_uniform_at_the_top_never_draws_an_impossible_token():
    """Found on an oracle: a uniform that rounded to 1.0 turned the race into NaN and drew a -inf token (EOS)."""

    class Top:  # every uniform at its largest value
        def uniform(self, stream, width=None):
            return torch.full((1, 3, width), to_unit(torch.tensor(MASK32)).item())

    logits = torch.tensor([[[0.0, -1.0, float("-inf"), float("-inf")]] * 3])  # tokens 2 and 3 impossible
    p = propose(logits, SamplingParams(temperature=1.0), Top())  # type: ignore[arg-type]
    assert bool((p.tokens < 2).all()) and bool(torch.isfinite(p.logq).all())
    truncated = propose(torch.tensor([[[3.0, 0.0, 0.0, 0.0]] * 3]), SamplingParams(temperature=1.0, top_k=1), Top())  # type: ignore[arg-type]
    assert bool((truncated.tokens == 0).all())


def test_draws_do_not_depend_on_the_batch_or_its_order():
    pos = torch.tensor([[0, 1, 2, 3], [5, 6, 7, 8], [2, 3, 4, 5]])
    batch = Noise.from_seeds([11, 22, 33]).at(3, pos).uniform(TOKENS, 10)
    for i, seed in enumerate([11, 22, 33]):
        alone = Noise.from_seeds([seed]).at(3, pos[i : i + 1]).uniform(TOKENS, 10)
        assert torch.equal(batch[i], alone[0])
    swapped = Noise.from_seeds([33, 11]).at(3, pos[[2, 0]]).uniform(TOKENS, 10)
    assert torch.equal(swapped[0], batch[2]) and torch.equal(swapped[1], batch[0])


@pytest.mark.parametrize("change", ["seed", "call", "stream", "position"])
def test_each_coordinate_gives_an_uncorrelated_stream(change):
    pos = torch.arange(32).unsqueeze(0)
    base = Noise.from_seeds([5]).at(2, pos).uniform(TOKENS, 256).flatten()
    other = {
        "seed": Noise.from_seeds([6]).at(2, pos).uniform(TOKENS, 256),
        "call": Noise.from_seeds([5]).at(3, pos).uniform(TOKENS, 256),
        "stream": Noise.from_seeds([5]).at(2, pos).uniform(ORDER, 256),
        "position": Noise.from_seeds([5]).at(2, pos + 1).uniform(TOKENS, 256),
    }[change].flatten()
    assert not torch.equal(base, other)
    r = torch.corrcoef(torch.stack([base, other]).double())[0, 1]
    assert abs(float(r)) < 5 / math.sqrt(base.numel())


def test_positions_shifted_by_one_do_not_repeat_the_vocabulary_stream():
    # position p+1's row must not be position p's row shifted along the vocabulary (a Weyl-sequence pitfall)
    u = Noise.from_seeds([1]).at(0, torch.arange(2).unsqueeze(0)).uniform(TOKENS, 1000)[0]
    for shift in range(-999, 1000):
        a, b = (u[0, shift:], u[1, : 1000 - shift]) if shift >= 0 else (u[0, :shift], u[1, -shift:])
        assert (a == b).float().mean() < 0.5


def test_mixer_agrees_on_ints_and_tensors():
    xs = [0, 1, 2**31 - 1, 2**31, 2**32 - 1, 123456789]
    assert mix32(torch.tensor(xs)).tolist() == [mix32(x) for x in xs]
    assert all(0 <= mix32(x) < 2**32 for x in xs)


def test_derived_seeds_are_stable_distinct_and_checked():
    assert derive_seed(0, 1) == derive_seed(0, 1)
    assert len({derive_seed(0, i) for i in range(1000)}) == 1000
    assert derive_seed(1, 0) != derive_seed(0, 1)
    with pytest.raises(ValueError, match="ints"):
        derive_seed("a")
    with pytest.raises(ValueError, match=r"seeds\[1\]"):
        Noise.from_seeds([1, -2])
