"""Counter-based noise: uniform, independent where it should be, a function of (seed, stream, call, position) only."""

import math

import pytest
import torch

from unmask.noise import MASK32, ONE_BELOW, ORDER, ROUND_KEYS, TOKENS, Noise, derive_seed, feistel, mix32, seed_key
from unmask.noise import to_unit, to_unit64
from unmask.sampling import BELOW_ONE, SamplingParams, propose


def ks_distance(u: torch.Tensor) -> float:
    u = u.flatten().double().sort().values
    n = u.numel()
    ecdf = torch.arange(1, n + 1, dtype=torch.float64) / n
    return float(torch.maximum((ecdf - u).abs(), (ecdf - 1 / n - u).abs()).max())


@pytest.mark.parametrize("precise", [False, True])
def test_uniforms_are_uniform_and_inside_the_open_interval(precise):
    pos = torch.arange(4096).expand(16, -1)
    src = Noise.from_seeds(list(range(16))).at(0, pos)
    u = src.uniform64(TOKENS) if precise else src.uniform(TOKENS)
    assert u.dtype == (torch.float64 if precise else torch.float32)
    n = u.numel()
    assert 0.0 < float(u.min()) and float(u.max()) < 1.0
    assert abs(float(u.double().mean()) - 0.5) < 5 * math.sqrt(1 / 12 / n)
    assert ks_distance(u) < 1.63 / math.sqrt(n)  # the 1% critical value of the Kolmogorov-Smirnov distance


def test_the_extreme_hashes_stay_inside_the_open_interval():
    u = to_unit(torch.tensor([0, 255, 0xFFFFFF00, MASK32], dtype=torch.long))
    assert u.dtype == torch.float32 and bool((u > 0).all()) and bool((u < 1).all())
    assert float(u[-1]) == ONE_BELOW and float(u[0]) == 2.0**-25
    lanes = torch.tensor([0, MASK32], dtype=torch.long)
    u64 = to_unit64(lanes, lanes)
    assert u64.tolist() == [2.0**-53, 1.0 - 2.0**-53]  # (k + 0.5) / 2^52 is exact at both ends


def test_the_low_bits_reach_the_float64_uniform():
    """52 bits per uniform: the low lane's top 20 bits change the value, so the grid is 2^-52, not 2^-32."""
    hi = torch.tensor([7, 7], dtype=torch.long)
    lo = torch.tensor([0, 1 << 12], dtype=torch.long)
    a, b = to_unit64(hi, lo).tolist()
    assert b - a == 2.0**-52


def test_draws_do_not_depend_on_the_batch_or_its_order():
    pos = torch.tensor([[0, 1, 2, 3], [5, 6, 7, 8], [2, 3, 4, 5]])
    seeds = [11, 22, 2**40 + 33]
    for stream, method in ((TOKENS, "uniform64"), (ORDER, "uniform")):
        batch = getattr(Noise.from_seeds(seeds).at(3, pos), method)(stream)
        for i, seed in enumerate(seeds):
            alone = getattr(Noise.from_seeds([seed]).at(3, pos[i : i + 1]), method)(stream)
            assert torch.equal(batch[i], alone[0])
        swapped = getattr(Noise.from_seeds([seeds[2], seeds[0]]).at(3, pos[[2, 0]]), method)(stream)
        assert torch.equal(swapped[0], batch[2]) and torch.equal(swapped[1], batch[0])


@pytest.mark.parametrize("change", ["seed", "high seed bits", "call", "stream", "position"])
def test_each_coordinate_gives_an_uncorrelated_stream(change):
    pos = torch.arange(4096).unsqueeze(0)
    base = Noise.from_seeds([5]).at(2, pos).uniform64(TOKENS).flatten()
    other = {
        "seed": Noise.from_seeds([6]).at(2, pos).uniform64(TOKENS),
        "high seed bits": Noise.from_seeds([5 + 2**32]).at(2, pos).uniform64(TOKENS),
        "call": Noise.from_seeds([5]).at(3, pos).uniform64(TOKENS),
        "stream": Noise.from_seeds([5]).at(2, pos).uniform64(ORDER),
        "position": Noise.from_seeds([5]).at(2, pos + 1).uniform64(TOKENS),
    }[change].flatten()
    assert not torch.equal(base, other)
    r = torch.corrcoef(torch.stack([base, other]))[0, 1]
    assert abs(float(r)) < 5 / math.sqrt(base.numel())


def test_row_keys_are_a_bijection_of_64_bit_seeds():
    """The Feistel network inverts round by round, so distinct seeds below 2^64 have distinct 64-bit keys."""

    def inverse(a, b, rounds=4):
        for r in reversed(range(rounds)):
            a, b = b ^ mix32((a + ROUND_KEYS[r % len(ROUND_KEYS)]) & MASK32), a
        return a, b

    g = torch.Generator().manual_seed(0)
    seeds = [int(x) for x in torch.randint(0, 2**62, (200,), generator=g)] + [0, 1, 2**32, 2**64 - 1]
    for s in seeds:
        a, b = seed_key(s)
        assert 0 <= a < 2**32 and 0 <= b < 2**32
        assert inverse(a, b) == (s & MASK32, s >> 32)
    # seeds that the former 32-bit keys folded together stay apart, and bits above 64 count too
    assert len({seed_key(s) for s in seeds}) == len(set(seeds))
    assert seed_key(3) != seed_key(3 + 2**64) and seed_key(3) != seed_key(3 + 2**32)
    keys = Noise.from_seeds([1, 2**62 + 1]).keys
    assert keys.shape == (2, 2) and not torch.equal(keys[0], keys[1])
    with pytest.raises(ValueError, match=r"seeds\[1\] must be an int in \[0, 2\^63\)"):  # the one seed rule
        Noise.from_seeds([1, 2**63 + 1])


def test_the_feistel_rounds_agree_on_ints_and_tensors():
    xs = [(0, 0), (1, 2), (MASK32, 7), (123456789, MASK32)]
    ts = feistel(torch.tensor([x for x, _ in xs]), torch.tensor([y for _, y in xs]))
    assert list(zip(ts[0].tolist(), ts[1].tolist())) == [feistel(x, y) for x, y in xs]


def test_a_uniform_at_either_end_never_draws_an_impossible_token():
    """u at the grid's ends (and past them, 0 and the largest double below 1) never picks a -inf token."""

    class At:
        def __init__(self, value):
            self.value = value

        def uniform64(self, stream):
            return torch.full((1, 3), self.value, dtype=torch.float64)

    inf = float("-inf")
    logits = torch.tensor([[[inf, 0.0, -1.0, inf], [inf, inf, 5.0, inf], [-30.0, inf, 0.0, -200.0]]])
    wide = torch.full((1, 3, 1500), inf)  # more than two chunks, impossible tokens at both ends of each chunk
    wide[0, :, 700] = 0.0
    wide[0, 1, 512] = -3.0
    wide[0, 2, 1023] = -90.0
    for value in (0.0, 2.0**-53, 0.5, 1.0 - 2.0**-53, BELOW_ONE):
        for z in (logits, wide):
            for params in (SamplingParams(temperature=1.0), SamplingParams(temperature=0.5, top_k=2)):
                p = propose(z, params, At(value))  # type: ignore[arg-type]
                assert bool(torch.isfinite(z.gather(-1, p.tokens.unsqueeze(-1))).all()), (value, params)
                assert bool(torch.isfinite(p.logq).all())
    truncated = propose(torch.tensor([[[3.0, 0.0, 0.0, 0.0]] * 3]), SamplingParams(temperature=1.0, top_k=1),
                        At(BELOW_ONE))  # type: ignore[arg-type]
    assert bool((truncated.tokens == 0).all())


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
