import math

import pytest

from unmask.schedules import binary_levels, dilated_levels, level_sizes, linear_counts, log_calls


def test_dilated_paper_examples():
    assert dilated_levels(8) == [[0, 4], [2, 6], [1, 3, 5, 7]]
    assert level_sizes(dilated_levels(32)) == [2, 2, 4, 8, 16]
    assert len(dilated_levels(64)) == 6


@pytest.mark.parametrize("base", [2, 3, 4])
@pytest.mark.parametrize("block", range(1, 65))
def test_dilated_levels_partition_the_block(block, base):
    levels = dilated_levels(block, base)
    flat = [i for level in levels for i in level]
    assert sorted(flat) == list(range(block))  # every offset exactly once
    assert all(level for level in levels)
    if len(levels) >= 2:  # the merge rule: a last level is never smaller than the one before
        assert len(levels[-1]) >= len(levels[-2])


@pytest.mark.parametrize("k", range(1, 7))
def test_power_of_two_blocks_take_log2_calls(k):
    assert len(dilated_levels(2**k)) == k == log_calls(2**k)


def test_first_level_is_spread_out():
    # positions revealed together in the first level are a full stride apart
    for block in (8, 16, 32, 64):
        first = dilated_levels(block)[0]
        assert min(b - a for a, b in zip(first, first[1:])) == block // 2


def test_skip_exp_sets_first_stride():
    assert dilated_levels(16, 2, 2)[0] == [0, 4, 8, 12]
    assert dilated_levels(8, 2, 0)[0] == [0]


@pytest.mark.parametrize("block", [1, 2, 5, 8, 13, 32])
def test_binary_levels_partition(block):
    levels = binary_levels(block)
    assert sorted(i for level in levels for i in level) == list(range(block))
    full = math.ceil(math.log2(block + 1))  # levels of the binary search before the merge
    assert len(levels) in (full - 1, full)
    assert all(len(a) <= len(b) for a, b in zip(levels, levels[1:]))  # the smaller last level was merged
    if block & (block - 1) == 0 and block >= 4:  # a power of two from 4 on: log2(B) calls, as DUS
        assert len(levels) == int(math.log2(block))


def test_linear_counts():
    assert linear_counts(10, 3) == [4, 3, 3]
    assert linear_counts(32, 32) == [1] * 32
    assert sum(linear_counts(7, 7)) == 7


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: dilated_levels(0), "block_length"),
        (lambda: dilated_levels(8, base=1), "base"),
        (lambda: dilated_levels(8, skip_exp=-1), "skip_exp"),
        (lambda: linear_counts(8, 0), "steps"),
    ],
)
def test_schedule_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
