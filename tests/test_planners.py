"""Planners on hand-built scores: exact selections, progress, and the reference bugs not copied."""

import math

import pytest
import torch

from unmask.planners import (EB, Binary, Dilated, Dynamic, EntropySum, Factor, PlanStep, Spaced, Threshold, TopK,
                             make_planner, parse_planner)
from unmask.noise import Noise
from unmask.sampling import Proposal, SamplingParams, propose


def step(conf, masked=None, call=0, entropy=None, margin=None, block_length=None, num_blocks=1, seed=0):
    conf = torch.tensor(conf, dtype=torch.float32)
    if conf.dim() == 1:
        conf = conf.unsqueeze(0)
    masked = torch.ones_like(conf, dtype=torch.bool) if masked is None else torch.tensor(masked, dtype=torch.bool).reshape(conf.shape)
    ent = None if entropy is None else torch.tensor(entropy, dtype=torch.float32).reshape(conf.shape)
    mar = None if margin is None else torch.tensor(margin, dtype=torch.float32).reshape(conf.shape)
    prop = Proposal(tokens=torch.zeros_like(conf, dtype=torch.long), confidence=conf, logq=torch.zeros_like(conf),
                    margin=mar, entropy=ent)
    positions = torch.arange(conf.shape[-1]).expand(conf.shape)
    noise = Noise.from_seeds([seed] * conf.shape[0]).at(call, positions)
    return PlanStep(masked, prop, call, block_length or conf.shape[-1], num_blocks, noise)


def picked(planner, st):
    return torch.nonzero(planner.select(st).reveal[0]).flatten().tolist()


def test_dilated_follows_levels():
    conf = [0.5] * 8
    assert picked(Dilated(), step(conf, call=0)) == [0, 4]
    assert picked(Dilated(), step(conf, masked=[0, 1, 1, 1, 0, 1, 1, 1], call=1)) == [2, 6]
    assert picked(Dilated(), step(conf, masked=[0, 1, 0, 1, 0, 1, 0, 1], call=2)) == [1, 3, 5, 7]


def test_dilated_deferral_joins_next_level_and_last_level_reveals_all():
    p = Dilated(confidence_threshold=0.6)
    conf = [0.9, 0.1, 0.1, 0.1, 0.2, 0.1, 0.7, 0.1]
    # level 0 = {0, 4}: 4 is below threshold, deferred
    assert picked(p, step(conf, call=0)) == [0]
    # level 1 = {2, 6} plus deferred 4: only 6 passes
    assert picked(p, step(conf, masked=[0, 1, 1, 1, 1, 1, 1, 1], call=1)) == [6]
    # last level: everything still masked, whatever its confidence
    assert picked(p, step(conf, masked=[0, 1, 1, 1, 1, 1, 0, 1], call=2)) == [1, 2, 3, 4, 5, 7]


def test_dilated_deferral_still_makes_progress():
    p = Dilated(confidence_threshold=0.99)
    conf = [0.1, 0.2, 0.3, 0.4, 0.5, 0.1, 0.1, 0.1]
    assert picked(p, step(conf, call=0)) == [4]  # the most confident scheduled one, never nothing


def test_binary_levels():
    assert picked(Binary(), step([0.5] * 7, call=0)) == [3]


def test_topk_confidence_and_counts():
    conf = [0.1, 0.9, 0.3, 0.8, 0.2, 0.7, 0.6, 0.5]
    assert picked(TopK(counts=(3, 5)), step(conf, call=0)) == [1, 3, 5]
    assert picked(TopK(counts=(3, 5)), step(conf, masked=[1, 0, 1, 0, 1, 0, 1, 1], call=1)) == [0, 2, 4, 6, 7]
    assert picked(TopK(steps=4), step(conf, call=0)) == [1, 3]  # linear: 8 // 4


def test_topk_dilated_counts_are_dus_sizes():
    assert TopK(counts="dilated").schedule(32, 1) == [2, 2, 4, 8, 16]


def test_topk_margin_and_entropy_lowest_first():
    conf = [0.5] * 4
    st = step(conf, entropy=[2.0, 0.1, 1.0, 0.5], margin=[0.1, 0.3, 0.9, 0.2])
    assert picked(TopK(score="entropy", counts=(2, 2)), st) == [1, 3]  # the most certain, not the reference's high_entropy
    assert picked(TopK(score="margin", counts=(2, 2)), st) == [1, 2]


def test_topk_random_order_is_a_function_of_the_seed():
    conf = [0.5] * 16
    a = picked(TopK(score="random", counts=(4, 12)), step(conf, seed=1))
    b = picked(TopK(score="random", counts=(4, 12)), step(conf, seed=1))
    assert a == b and len(a) == 4
    others = {tuple(picked(TopK(score="random", counts=(4, 12)), step(conf, seed=s))) for s in range(2, 12)}
    assert len(others) > 5  # other seeds, other orders


def test_eb_prefix_rule_in_bits():
    # entropies in nats chosen so bits are [0.2, 0.3, 0.5, 3.0]; gamma=0.5 bits:
    # prefix costs (sum - max): k=1 -> 0, k=2 -> 0.2, k=3 -> 0.5, k=4 -> 1.0
    bits = [3.0, 0.2, 0.5, 0.3]
    st = step([0.5] * 4, entropy=[b * math.log(2) for b in bits])
    assert picked(EB(gamma=0.5), st) == [1, 2, 3]
    assert picked(EB(gamma=0.49), st) == [1, 3]
    assert picked(EB(gamma=0.0), st) == [1]  # at least one


def test_threshold_and_progress():
    assert picked(Threshold(tau=0.6), step([0.1, 0.7, 0.65, 0.3])) == [1, 2]
    assert picked(Threshold(tau=0.9), step([0.1, 0.7, 0.65, 0.3])) == [1]


def test_factor_rule_without_off_by_one():
    # sorted conf: 0.95, 0.9, 0.8, 0.5 -> (n+1)(1-c_n): 0.1, 0.3, 0.8, 2.5
    conf = [0.5, 0.9, 0.95, 0.8]
    assert picked(Factor(factor=0.8), step(conf)) == [1, 2, 3]
    assert picked(Factor(factor=0.79), step(conf)) == [1, 2]  # the failing rank is not committed
    assert picked(Factor(factor=0.01), step(conf)) == [2]


def test_spaced_filter_keeps_distance_and_best():
    # inner threshold picks 0,1,2,6,7 by confidence; M=8, start_stride=4, B=8 -> min_gap 4
    conf = [0.95, 0.99, 0.9, 0.1, 0.1, 0.1, 0.92, 0.91]
    p = Spaced(Threshold(tau=0.85), start_stride=4)
    assert picked(p, step(conf)) == [1, 6]  # 1 (best), 6 (|6-1| >= 4); 0,2,7 too close


def test_spaced_gap_shrinks_with_masked_count_but_is_at_least_two():
    conf = [0.95, 0.99, 0.9, 0.1, 0.1, 0.1, 0.92, 0.91]
    masked = [1, 1, 1, 0, 0, 0, 1, 1]  # M=5 -> 5*4//8 = 2
    assert picked(Spaced(Threshold(tau=0.85), start_stride=4), step(conf, masked=masked)) == [1, 6]
    assert picked(Spaced(Threshold(tau=0.85), start_stride=1), step(conf, masked=masked)) == [1, 6]


def test_planners_are_batched_per_row():
    conf = [[0.1, 0.9, 0.2, 0.3], [0.8, 0.1, 0.2, 0.7]]
    sel = Threshold(tau=0.6).select(step(conf)).reveal
    assert sel.tolist() == [[False, True, False, False], [True, False, False, True]]


@pytest.mark.parametrize("planner", [Dilated(), TopK(steps=1), EB(gamma=5.0), Threshold(0.1), Factor(10.0),
                                     Spaced(Threshold(0.1), start_stride=2), TopK(score="position", counts=(3, 5)),
                                     Dynamic(tau=0.5, counts=(3, 5)), EntropySum(bound=1.0)])
def test_never_reveals_unmasked_positions(planner):
    masked = [1, 0, 1, 0, 1, 0, 1, 0]
    st = step([0.9] * 8, masked=masked, entropy=[0.0] * 8, call=5)
    sel = planner.select(st).reveal[0].tolist()
    assert all(m or not s for m, s in zip(masked, sel)) and any(sel)


def test_registry_and_spec_language():
    assert parse_planner("dilated(base=3)") == Dilated(base=3)
    assert parse_planner("spaced(eb(gamma=2), start_stride=8)") == Spaced(EB(gamma=2), start_stride=8)
    assert parse_planner("topk(score='margin', counts=(2, 6))") == TopK(score="margin", counts=(2, 6))
    assert make_planner("threshold", tau=0.5) == Threshold(tau=0.5)


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: make_planner("greedy"), "planner must be one of"),
        (lambda: make_planner("eb", tau=0.5), r"does not take \['tau'\]"),
        (lambda: parse_planner("eb(gamma="), "not of the form"),
        (lambda: Threshold(tau=0.0), r"tau must be in \(0, 1\]"),
        (lambda: Threshold(tau=1.5), r"tau must be in \(0, 1\]"),
        (lambda: EB(gamma=-1), "gamma must be"),
        (lambda: Dilated(base=1), "base must be an int >= 2"),
        (lambda: Dilated(confidence_threshold=2.0), "confidence_threshold"),
        (lambda: TopK(score="high_entropy", steps=4), "score must be one of"),
        (lambda: TopK(), "exactly one of steps"),
        (lambda: Factor(factor=0), "factor must be"),
        (lambda: Spaced(Threshold(), start_stride=0), "start_stride"),
        (lambda: EB(entropy="bits"), "entropy must be one of"),
        (lambda: TopK(counts=(0, 4, 4)), "counts must be positive.*leave the 0s out"),
        (lambda: TopK(counts=(True, 7)), "counts must be a non-empty tuple of positive ints"),
        (lambda: Dynamic(tau=0.0, steps=4), r"tau must be in \(0, 1\]"),
        (lambda: Dynamic(tau=True, steps=4), r"tau must be in \(0, 1\]"),
        (lambda: Dynamic(score="margin", steps=4), "score must be 'confidence'"),
        (lambda: Dynamic(tau=0.9), "exactly one of steps"),
        (lambda: EntropySum(bound=-0.1), "bound must be a finite number >= 0"),
        (lambda: EntropySum(bound=math.inf), "bound must be a finite number >= 0"),
    ],
)
def test_planner_errors_name_the_argument(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def two_positions(p_top: tuple[float, float], vocab: int = 1000) -> torch.Tensor:
    """``[1, 2, vocab]`` float32 logits whose argmax has probability ``p_top[i]`` over a flat rest at 0."""
    z = torch.zeros(2, vocab, dtype=torch.float64)
    for i, p in enumerate(p_top):
        z[i, 0] = math.log(p * (vocab - 1) / (1 - p))
    return z.float().unsqueeze(0)


def hand_step(conf, doubt=None, margin=None):
    """One row of two positions; ``doubt`` defaults to float32 ``1 - conf``, as a hand-built Proposal's does."""
    conf = torch.tensor([conf], dtype=torch.float32)
    prop = Proposal(tokens=torch.zeros(1, 2, dtype=torch.long), confidence=conf, logq=torch.zeros(1, 2),
                    doubt=None if doubt is None else torch.tensor([doubt], dtype=torch.float32),
                    margin=None if margin is None else torch.tensor([margin], dtype=torch.float32))
    return PlanStep(torch.ones(1, 2, dtype=torch.bool), prop, 0, 2, 1, None)


def test_confidence_ranks_exactly_near_zero():
    """issue 22: p 0.0059566195 < 0.0059566492 both give float32 1 - p = 0.99404335, so ranking on the complement
    revealed position 0 where LLaDA's and Fast-dLLM's references (float64 p) reveal position 1."""
    st = hand_step([0.0059566195, 0.0059566492], doubt=[0.99404335, 0.99404335])  # the complement alone ties
    assert picked(TopK(steps=2), st) == [1]
    assert picked(Threshold(tau=0.5), st) == [1]  # nobody passes: the best one is revealed
    assert picked(Factor(factor=0.1), st) == [1]


def test_confidence_ranks_exactly_near_one():
    """Near 1 it is p that rounds (to 1.0 in float32) and the complement that separates."""
    st = hand_step([1 - 1.01e-8, 1 - 1.00e-8], doubt=[1.01e-8, 1.00e-8])
    assert st.proposal.confidence[0, 0] == st.proposal.confidence[0, 1] == 1.0
    assert picked(TopK(steps=2), st) == [1]


def test_confidence_ranks_like_float64_through_propose():
    for p_top in ((0.0059566195, 0.0059566492), (1 - 1.01e-8, 1 - 1.00e-8), (0.3, 0.7), (0.5, 0.5000001)):
        z = two_positions(p_top)
        ref = z.double().softmax(-1)[0, :, 0]  # the references' float64 probabilities of the float32 logits
        st = PlanStep(torch.ones(1, 2, dtype=torch.bool), propose(z, SamplingParams()), 0, 2, 1, None)
        assert picked(TopK(steps=2), st) == [int(ref.argmax())], p_top


def test_margin_ranks_exactly_near_zero():
    """Top two nearly tied: margins 1.0e-4 and 1.0e-4 + 3e-9 have the same float32 1 - margin."""
    st = hand_step([0.3, 0.3], margin=[1.0e-4, 1.0e-4 + 3e-9])
    assert st.proposal.margin_doubt[0, 0] == st.proposal.margin_doubt[0, 1]
    assert picked(TopK(score="margin", steps=2), st) == [1]


def test_eb_reference_entropy_is_an_option():
    assert EB(gamma=1e-4).needs == frozenset({"entropy"})
    assert EB(gamma=1e-4, entropy="reference").needs == frozenset({"entropy_reference"})
    assert parse_planner("eb(gamma=0.0001, entropy='reference')") == EB(gamma=1e-4, entropy="reference")
    # with the reference's +1e-10 a flat tail of tiny probabilities counts less: never more entropy than exact
    z = two_positions((0.99, 0.999999), vocab=126464)
    prop = propose(z, SamplingParams(), need=frozenset({"entropy", "entropy_reference"}))
    p = z.double().softmax(-1)
    exact_bits = -torch.xlogy(p, p).sum(-1) / math.log(2)
    assert torch.allclose(prop.entropy.double() / math.log(2), exact_bits, rtol=1e-5)
    assert torch.allclose(prop.entropy_reference, -(p * (p + 1e-10).log2()).sum(-1), rtol=1e-6)
    assert bool((prop.entropy_reference < exact_bits).all())


def test_topk_position_reveals_the_leftmost_masked_offsets():
    """SDAR's sequential order: each call the first ``counts[call]`` masked offsets, whatever the scores."""
    planner = TopK(score="position", counts=(3, 2, 3))
    masked = [0, 0, 1, 1, 1, 1, 1, 1]  # a block whose first two offsets were filled before it began
    conf = [0.1, 0.2, 0.3, 0.9, 0.8, 0.99, 0.5, 0.4]
    assert picked(planner, step(conf, masked=masked, call=0)) == [2, 3, 4]
    assert picked(planner, step(conf, masked=[0, 0, 0, 0, 0, 1, 1, 1], call=1)) == [5, 6]
    assert picked(planner, step(conf, masked=[0, 0, 0, 0, 0, 0, 0, 1], call=2)) == [7]
    assert parse_planner("topk(score='position', counts=(3, 2, 3))") == planner


def test_dynamic_is_the_union_of_the_count_floor_and_the_threshold():
    """SDAR's low_confidence_dynamic: every position above tau when they are at least counts[call], else the
    counts[call] most confident; the last count reveals the rest; adaptive (the threshold can end a block early)."""
    planner = Dynamic(tau=0.7, counts=(2, 3, 3))
    conf = [0.75, 0.1, 0.9, 0.8, 0.2, 0.95, 0.3, 0.71]
    assert picked(planner, step(conf, call=0)) == [0, 2, 3, 5, 7]  # 5 above 0.7 >= 2
    low = [0.75, 0.1, 0.5, 0.6, 0.2, 0.65, 0.3, 0.4]
    assert picked(planner, step(low, call=1)) == [0, 3, 5]  # 1 above 0.7 < 3: the 3 most confident
    assert picked(planner, step(low, masked=[0, 1, 1, 0, 1, 0, 1, 1], call=2)) == [1, 2, 4, 6, 7]  # last count
    assert planner.calls_per_block(8, 1) is None
    assert parse_planner("dynamic(tau=0.7, counts=(2, 3, 3))") == planner
    assert Dynamic(tau=1.0, steps=4).schedule(8, 1) == TopK(steps=4).schedule(8, 1) == [2, 2, 2, 2]


def test_entropy_sum_takes_the_lowest_entropies_within_the_budget():
    """JetEngine's entropy_bounded: ascending entropies 0.05, 0.1, 0.2, 0.4 (nats) have sums 0.05, 0.15, 0.35, 0.75;
    a bound of 0.36 takes three, 0.3 two, 0.01 still one (progress); EB at the same budget in bits takes one more."""
    ent = [0.4, 0.05, 2.0, 0.2, 0.1]
    assert picked(EntropySum(bound=0.36), step([0.5] * 5, entropy=ent)) == [1, 3, 4]
    assert picked(EntropySum(bound=0.3), step([0.5] * 5, entropy=ent)) == [1, 4]
    assert picked(EntropySum(bound=0.01), step([0.5] * 5, entropy=ent)) == [1]
    assert picked(EntropySum(bound=0.36), step([0.5] * 5, entropy=ent, masked=[1, 0, 1, 1, 0])) == [3]
    assert picked(EntropySum(bound=0.61), step([0.5] * 5, entropy=ent, masked=[1, 0, 1, 1, 0])) == [0, 3]
    assert picked(EB(gamma=0.3 / math.log(2)), step([0.5] * 5, entropy=ent)) == [1, 3, 4]
    assert parse_planner("entropy_sum(bound=0.35)") == EntropySum(bound=0.35)
