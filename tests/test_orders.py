"""Schedules as data: interleave, farthest point, explicit groups; their planners run through generate."""

import pytest
import torch

from unmask import GenerationConfig, generate, parse_planner
from unmask.oracles import MarkovOracle
from unmask.planners import Farthest, Interleave, Schedule
from unmask.schedules import (
    check_levels,
    far_apart_order,
    farthest_levels,
    farthest_order,
    geometric_sizes,
    interleave_levels,
)


def flat(levels):
    return sorted(i for level in levels for i in level)


@pytest.mark.parametrize("k", range(1, 10))
def test_far_apart_order_is_a_permutation_starting_far_apart(k):
    order = far_apart_order(k)
    assert sorted(order) == list(range(k)) and order[0] == 0
    if k >= 2:  # the second class is as far from the first as the cycle allows
        assert min(order[1], k - order[1]) == k // 2


def test_far_apart_order_examples():
    assert far_apart_order(4) == [0, 2, 1, 3]
    assert far_apart_order(5) == [0, 2, 4, 1, 3]
    assert far_apart_order(6) == [0, 3, 1, 4, 2, 5]


@pytest.mark.parametrize("block", [1, 5, 8, 13, 32])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 6, 40])
def test_interleave_partitions_and_reveals_k_apart(block, k):
    levels = interleave_levels(block, k)
    assert flat(levels) == list(range(block)) and len(levels) == min(k, block)
    for level in levels:
        assert all(b - a == k for a, b in zip(level, level[1:]))
        assert len({i % k for i in level}) == 1


def test_interleave_explicit_order():
    assert interleave_levels(6, 3, [2, 0, 1]) == [[2, 5], [0, 3], [1, 4]]
    with pytest.raises(ValueError, match="permutation"):
        interleave_levels(6, 3, [0, 0, 1])


@pytest.mark.parametrize("total, calls, growth", [(32, 5, 2.0), (32, 2, 2.0), (32, 6, 2.0), (7, 7, 3.0), (10, 3, 1.0)])
def test_geometric_sizes(total, calls, growth):
    sizes = geometric_sizes(total, calls, growth)
    assert sum(sizes) == total and len(sizes) == calls and min(sizes) >= 1
    assert sizes == sorted(sizes)  # never shrinking when growth >= 1
    if growth == 1.0:
        assert max(sizes) - min(sizes) <= 1


def test_farthest_order_examples():
    assert farthest_order(8) == [7, 3, 1, 5, 0, 2, 4, 6]
    order = farthest_order(32)
    assert sorted(order) == list(range(32)) and order[:3] == [31, 15, 7]


@pytest.mark.parametrize("calls", range(1, 9))
def test_farthest_levels_partition(calls):
    levels = farthest_levels(32, calls)
    assert flat(levels) == list(range(32)) and len(levels) == calls
    assert [len(level) for level in levels] == geometric_sizes(32, calls)


def test_check_levels():
    check_levels([[0, 2], [1]], 3)
    for bad in ([[0, 1], [1, 2]], [[0], []], [[0, 1]], []):
        with pytest.raises(ValueError, match="partition"):
            check_levels(bad, 3)


@pytest.mark.parametrize(
    "spec, planner, calls",
    [
        ("interleave(k=4)", Interleave(k=4), 4),
        ("interleave(k=3, order=(2, 0, 1))", Interleave(k=3, order=(2, 0, 1)), 3),
        ("farthest(calls=3)", Farthest(calls=3), 3),
        ("schedule(groups=((0, 4), (2, 6), (1, 3, 5, 7)))", Schedule(groups=((0, 4), (2, 6), (1, 3, 5, 7))), 3),
    ],
)
def test_spec_strings_build_planners_that_generate(spec, planner, calls):
    assert parse_planner(spec) == planner
    oracle = MarkovOracle(5, order=2, concentration=0.5, seed=0)
    cfg = GenerationConfig(gen_length=16, block_length=8, planner=spec, sampling={"temperature": 1.0}, early_exit=False, seed=0)
    out = generate(oracle, [[], [1, 2]], cfg)
    assert out.nfe == 2 * calls and planner.calls_per_block(8, 2) == calls
    assert not (out.generated == oracle.spec.mask_id).any()
    levels = planner.levels(8)
    for t, level in enumerate(levels):  # call t of each block reveals exactly group t
        for b in range(2):
            assert sorted((out.trace.reveal_call[:, b * 8 : (b + 1) * 8] == b * calls + t).nonzero()[:, 1].unique().tolist()) == level


def test_schedule_groups_are_normalised_and_checked():
    assert Schedule(groups=[[4, 0], [1, 2, 3]]).groups == ((0, 4), (1, 2, 3))
    with pytest.raises(ValueError, match="block_length=4"):
        GenerationConfig(gen_length=8, block_length=4, planner="schedule(groups=((0, 4), (1, 2, 3)))")


@pytest.mark.parametrize(
    "spec, word",
    [
        ("interleave(k=0)", "k must"),
        ("interleave(k=3, order=(0, 1))", "order"),
        ("interleave(k=2, confidence_threshold=2.0)", "confidence_threshold"),
        ("farthest(calls=0)", "calls"),
        ("farthest(calls=2, growth=0.5)", "growth"),
        ("schedule(groups=((0, 1), (1, 2)))", "groups"),
        ("schedule(groups='ab')", "groups"),
        ("schedule", "groups"),
    ],
)
def test_bad_settings_raise(spec, word):
    with pytest.raises(ValueError, match=word):
        parse_planner(spec)


def test_farthest_needs_enough_offsets():
    with pytest.raises(ValueError, match="calls must be <= block_length"):
        GenerationConfig(gen_length=8, block_length=4, planner=Farthest(calls=5))


def test_deferral_joins_the_next_group():
    """With a confidence threshold of 1 nothing is revealed early but the best, and the last group takes the rest."""
    oracle = MarkovOracle(4, order=1, concentration=0.5, seed=1)
    cfg = GenerationConfig(gen_length=8, block_length=8, planner=Interleave(k=4, confidence_threshold=1.0),
                           sampling={"temperature": 1.0}, seed=0)
    out = generate(oracle, [[]] * 4, cfg)
    assert out.nfe == 4 and not (out.generated == oracle.spec.mask_id).any()
    assert torch.equal(out.trace.revealed_per_call[:3], torch.ones(3, 4, dtype=torch.long))
