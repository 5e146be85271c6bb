"""A block whose first offsets were filled before its first call (``PlanStep.lead``, ``decide(lead=...)``).

SGLang lays blocks out from position 0, so a prompt that ends mid-block
leaves its last ``m`` tokens at the first offsets of the first block to
generate. Every schedule-based planner then plans the ``B - m`` offsets left
exactly as it plans a block of ``B - m``: driven call by call on the same
logits, noise and positions, a block of 16 with lead ``m`` reveals, at each
call, exactly the offsets (shifted by ``m``) and tokens that the block of
``16 - m`` reveals, in as many calls.
"""

from __future__ import annotations

import pytest
import torch

from unmask.decide import decide
from unmask.noise import Noise
from unmask.planners import Planner, Schedule, parse_planner
from unmask.sampling import SamplingParams

B, V, MASK = 16, 12, 11
LEADS = [0, 1, 3, 5, 8, 12, 14, 15]
# a planner spec, and the spec that is "the same planner" on a block of n offsets where it needs one
SPECS = [
    "dilated(base=2)",
    "dilated(base=3)",
    "dilated(base=2, skip_exp=0)",
    "dilated(base=2, confidence_threshold=0.4)",
    "binary",
    "binary(confidence_threshold=0.3)",
    "interleave(k=4)",
    "interleave(k=3, confidence_threshold=0.4)",
    "farthest(calls=4)",
    "farthest(calls=3, growth=1.0)",
    "topk(score='confidence', counts='dilated')",
    "topk(score='random', counts='dilated', base=3)",
    "topk(score='margin', steps=6)",
    "topk(score='entropy', steps=4)",
]


def short_spec(spec: str, n: int) -> str:
    """The planner a block of n offsets runs: a step or call count above n is n (one offset per call)."""
    planner = parse_planner(spec)
    for field in ("steps", "calls"):
        value = getattr(planner, field, None)
        if isinstance(value, int) and value > n:
            return spec.replace(f"{field}={value}", f"{field}={n}")
    return spec


def drive(planner: Planner, logits: list[torch.Tensor], masked: torch.Tensor, positions: torch.Tensor,
          params: SamplingParams, lead: int) -> list[tuple[list[list[int]], list[list[int]]]]:
    """Run ``decide`` call after call until the block has no mask: per call, each row's revealed offsets and tokens."""
    noise, masked, out = Noise.from_seeds([3, 77]), masked.clone(), []
    for call, z in enumerate(logits):
        if not masked.any():
            break
        d = decide(z.clone(), masked, planner, params, noise.at(call, positions), call, 1, MASK, lead=lead)
        assert not (d.reveal & ~masked).any()
        out.append(([r.nonzero().flatten().tolist() for r in d.reveal],
                    [d.proposal.tokens[i][r].tolist() for i, r in enumerate(d.reveal)]))
        masked &= ~d.reveal
    assert not masked.any(), "the block kept masks"
    return out


@pytest.mark.parametrize("temperature", [0.0, 0.9])
@pytest.mark.parametrize("spec", SPECS)
def test_a_block_with_a_lead_plans_as_the_shorter_block(spec: str, temperature: float) -> None:
    g = torch.Generator().manual_seed(len(spec))
    logits = [torch.randn(2, B, V, generator=g) * 3 for _ in range(B)]  # one draw per call, two rows
    positions = torch.arange(40, 40 + B).expand(2, B)
    params = SamplingParams(temperature=temperature)
    for m in LEADS:
        filled = torch.arange(B) < m  # offsets 0..m-1 hold the prompt's tail
        full = drive(parse_planner(spec), logits, (~filled).expand(2, B), positions, params, lead=m)
        short = drive(parse_planner(short_spec(spec, B - m)), [z[:, m:] for z in logits],
                      torch.ones(2, B - m, dtype=torch.bool), positions[:, m:], params, lead=0)
        shifted = [([[i - m for i in row] for row in offsets], tokens) for offsets, tokens in full]
        assert shifted == short, f"lead {m}"


def test_dus_over_a_partly_filled_block_dilates_over_the_masked_offsets() -> None:
    """5 prompt tokens in a block of 16: DUS's 11-offset levels, not one confidence-ordered offset per call."""
    logits = [torch.zeros(1, B, V) for _ in range(B)]
    masked = (torch.arange(B) >= 5).unsqueeze(0)
    calls = drive(parse_planner("dilated(base=2)"), logits, masked, torch.arange(B).unsqueeze(0), SamplingParams(), 5)
    # DUS on 11 offsets: stride 11 // 2 = 5 takes 0, 5, 10; stride 2 takes 2, 4, 6, 8; stride 1 the rest
    # (4 offsets, not fewer than the level before, so not merged); laid on offsets 5..15
    assert [offsets[0] for offsets, _ in calls] == [[5, 10, 15], [7, 9, 11, 13], [6, 8, 12, 14]]


def test_an_explicit_schedule_drops_the_filled_offsets_and_their_empty_groups() -> None:
    groups = ((0, 8), (4, 12), (2, 6, 10, 14), tuple(range(1, B, 2)))
    logits = [torch.zeros(1, B, V) for _ in range(B)]
    masked = (torch.arange(B) >= 5).unsqueeze(0)
    calls = drive(Schedule(groups=groups), logits, masked, torch.arange(B).unsqueeze(0), SamplingParams(), 5)
    assert [offsets[0] for offsets, _ in calls] == [[8], [12], [6, 10, 14], [5, 7, 9, 11, 13, 15]]
    assert Schedule(groups=groups).planned_levels(B, 9) == [[12], [10, 14], [9, 11, 13, 15]]  # (0, 8) drops out


@pytest.mark.parametrize("lead", [-1, B, 2.0, True])
def test_decide_refuses_a_lead_outside_the_block(lead: object) -> None:
    with pytest.raises(ValueError, match="lead must be an int in"):
        decide(torch.zeros(1, B, V), torch.ones(1, B, dtype=torch.bool), parse_planner("dilated"), SamplingParams(),
               Noise.from_seeds([0]).at(0, torch.arange(B).unsqueeze(0)), 0, 1, MASK,
               lead=lead)  # type: ignore[arg-type]
