"""The best fixed schedule under a budget: exhaustive search is the optimum, local search never loses ground."""

import math

import pytest
import torch

from unmask.oracles import MarkovOracle, ordered_partitions, schedule_kl, search_schedule
from unmask.bench.oracle import sampled_objective
from unmask.oracles.search import count_schedules, exact_objective, improves
from unmask.schedules import dilated_levels, interleave_levels


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("b, k", [(8, 3), (6, 2), (5, 5), (7, 1)])
def test_count_schedules(b, k):
    assert count_schedules(b, k) == len(list(ordered_partitions(b, k)))


def test_exhaustive_search_finds_the_optimum():
    oracle = MarkovOracle(4, order=1, concentration=0.3, seed=3)
    r = search_schedule(exact_objective(oracle), 6, 3)
    assert r.exhaustive and r.evaluations == count_schedules(6, 3)
    brute = min(schedule_kl(oracle, levels) for levels in ordered_partitions(6, 3))
    assert r.value == brute and schedule_kl(oracle, r.levels) == r.value
    assert r.top[0] == (r.levels, r.value) and [v for _, v in r.top] == sorted(v for _, v in r.top)


def test_local_search_is_never_worse_than_its_seeds():
    oracle = MarkovOracle(6, order=1, concentration=0.3, seed=0)
    obj = exact_objective(oracle)
    seeds = [interleave_levels(16, 3), dilated_levels(16, 2, 3)]
    r = search_schedule(obj, 16, 3, seeds, exhaustive_limit=0, max_evals=400)
    assert not r.exhaustive and r.evaluations <= 400
    assert r.value <= min(obj(tuple(map(tuple, s))) for s in seeds)
    assert sorted(i for level in r.levels for i in level) == list(range(16)) and len(r.levels) == 3


def test_local_search_escapes_a_bad_start():
    """From all-but-one offsets in the first call, single moves reach a much better schedule."""
    oracle = MarkovOracle(4, order=1, concentration=0.3, seed=1)
    obj = exact_objective(oracle)
    bad = [list(range(7)), [7]]
    r = search_schedule(obj, 8, 2, [bad], exhaustive_limit=0)
    assert r.value < obj(((0, 1, 2, 3, 4, 5, 6), (7,))) / 2


def test_sampled_objective_estimates_schedule_kl():
    oracle = MarkovOracle(4, order=1, concentration=0.3, seed=7)
    levels = ((0, 4), (2, 6), (1, 3, 5, 7))
    got = float(sampled_objective(oracle, samples=4000, seed=1)(levels).mean())
    # path KL per token of a fixed schedule has sd below 0.5 nats on this chain: 4 se = 0.03
    assert abs(got - schedule_kl(oracle, levels)) < 4 * 0.5 / math.sqrt(4000)


def test_improves_needs_the_paired_gain_to_exceed_z_standard_errors():
    base = torch.linspace(0, 1, 100, dtype=torch.float64)
    wiggle = torch.tensor([1.0, -1.0] * 50, dtype=torch.float64)  # mean 0, sd ~1: se of the difference ~0.1
    assert improves(base - 0.05 + wiggle, base, z=0.0)  # lower on average
    assert not improves(base - 0.05 + wiggle, base, z=2.0)  # but by half a standard error
    assert improves(base - 0.5 + wiggle, base, z=2.0)  # by five
    assert not improves(base, base, z=0.0)  # equal is no gain
    assert improves(0.1, 0.2) and not improves(0.2, 0.2)
    with pytest.raises(ValueError, match="equal shapes"):
        improves(base[:5], base)


def test_noisy_search_with_z_keeps_its_start_when_no_move_truly_gains():
    start = ((0, 4), (2, 6), (1, 3, 5, 7))

    def noisy(levels):  # every schedule scores the same in truth; only the noise differs
        g = torch.Generator().manual_seed(hash(levels) % 2**31)
        return torch.randn(400, generator=g, dtype=torch.float64)

    moved = search_schedule(noisy, 8, 3, [start], exhaustive_limit=0, max_evals=60, swaps=False)
    kept = search_schedule(noisy, 8, 3, [start], exhaustive_limit=0, max_evals=60, swaps=False, z=4.0)
    assert moved.levels != start  # z = 0 follows the noise
    assert kept.levels == start


def test_bad_arguments():
    obj = exact_objective(MarkovOracle(3))
    with pytest.raises(ValueError, match="calls"):
        search_schedule(obj, 4, 5)
    with pytest.raises(ValueError, match="seed"):
        search_schedule(obj, 16, 3, [], exhaustive_limit=0)
