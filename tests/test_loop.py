"""Invariants of the one generation loop, for every planner, on a padding-invariant toy denoiser."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toy import ToyDenoiser
from unmask import GenerationConfig, generate
from unmask.output import FILLED

PLANNERS = [
    "dilated",
    "dilated(base=3)",
    "dilated(confidence_threshold=0.4)",
    "binary",
    "topk(steps={nb})",
    "topk(score='margin', counts='dilated')",
    "topk(score='entropy', counts='dilated')",
    "topk(score='random', counts='dilated')",
    "eb(gamma=1.0)",
    "threshold(tau=0.5)",
    "factor(factor=1.0)",
    "spaced(eb(gamma=2.0), start_stride=4)",
    "spaced(dilated(), start_stride=2)",
    "stable(threshold(tau=0.5), window=2, tau=0.2)",  # history kept as explicit state; reveals each position once
]


def spec_for(template: str, num_blocks: int) -> str:
    return template.format(nb=num_blocks)


def check_invariants(den, prompts, cfg, out):
    spec = den.spec
    n, width = len(prompts), max(map(len, prompts))
    assert out.sequences.shape == (n, width + cfg.gen_length)
    assert not (out.sequences == spec.mask_id).any(), "a mask token was left in the output"
    for i, p in enumerate(prompts):
        assert out.sequences[i, width - len(p) : width].tolist() == list(p), "prompt changed"
        assert out.attention_mask[i].sum() == len(p) + cfg.gen_length
    rc = out.trace.reveal_call
    assert ((rc >= 0) | (rc == FILLED)).all()
    # each position revealed exactly once: per-call counts add up to the revealed positions
    assert torch.equal(out.trace.revealed_per_call.sum(0), (rc >= 0).sum(1))
    for c in range(out.nfe):
        assert torch.equal((rc == c).sum(1), out.trace.revealed_per_call[c])
    assert out.nfe == out.trace.num_calls == den.calls
    # a row is charged exactly the calls in which it still had masks, and it revealed >= 1 in each
    active = out.trace.revealed_per_call > 0  # [C, N]
    assert torch.equal(out.nfe_per_row, active.sum(0))
    assert active.any(1).all(), "a call revealed nothing in every row"


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    planner=st.sampled_from(PLANNERS),
    block=st.sampled_from([1, 2, 4, 5, 8, 16]),
    nblocks=st.integers(1, 3),
    lengths=st.lists(st.integers(0, 6), min_size=1, max_size=4),
    temperature=st.sampled_from([0.0, 1.0]),
    seed=st.integers(0, 3),
)
def test_invariants_property(planner, block, nblocks, lengths, temperature, seed):
    den = ToyDenoiser(seed=seed)
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(0, 20, (n,), generator=g).tolist() for n in lengths]
    cfg = GenerationConfig(gen_length=block * nblocks, block_length=block, planner=spec_for(planner, nblocks),
                           sampling=dict(temperature=temperature), seed=seed)
    out = generate(den, prompts, cfg)
    check_invariants(den, prompts, cfg, out)


@pytest.mark.parametrize("planner", PLANNERS)
def test_batch_equals_single_greedy(planner):
    den = ToyDenoiser(seed=1)
    prompts = [[3, 4, 5, 6, 7], [8], [9, 10, 11], []]
    cfg = GenerationConfig(gen_length=32, block_length=16, planner=spec_for(planner, 2))
    batch = generate(den, prompts, cfg)
    for i, p in enumerate(prompts):
        alone = generate(den, [p], cfg)
        assert torch.equal(batch.generated[i], alone.generated[0]), f"row {i} differs from its single run"
        assert batch.nfe_per_row[i] == alone.nfe
        assert torch.equal(batch.trace.reveal_call[i] >= 0, alone.trace.reveal_call[0] >= 0)


@pytest.mark.parametrize("planner", ["dilated", "topk(score='random', counts='dilated')", "eb(gamma=1.0)"])
def test_same_seed_same_output(planner):
    den = ToyDenoiser(seed=2)
    cfg = GenerationConfig(gen_length=32, block_length=8, planner=planner, sampling=dict(temperature=1.0, top_p=0.9), seed=7)
    a, b = generate(den, [[1, 2, 3]] * 3, cfg), generate(den, [[1, 2, 3]] * 3, cfg)
    assert torch.equal(a.generated, b.generated)
    c = generate(den, [[1, 2, 3]] * 3, GenerationConfig(**{**cfg.__dict__, "seed": 8}))
    assert not torch.equal(a.generated, c.generated)


@pytest.mark.parametrize("planner", ["dilated", "topk(score='random', counts='dilated')", "threshold(tau=0.5)"])
def test_sampled_batch_equals_each_prompt_alone_with_its_seed(planner):
    den = ToyDenoiser(seed=5)
    prompts, seeds = [[3, 4, 5, 6], [8], [], [9, 10]], [11, 12, 13, 14]
    cfg = GenerationConfig(gen_length=16, block_length=8, planner=planner, sampling=dict(temperature=1.0))
    batch = generate(den, prompts, cfg, seeds=seeds)
    for i, p in enumerate(prompts):
        alone = generate(den, [p], cfg, seeds=[seeds[i]])
        assert torch.equal(batch.generated[i], alone.generated[0]), f"row {i} differs from its single run"
        # same order of reveals (global call indices shift when other rows need more calls in a block)
        order = lambda rc: torch.unique(rc, return_inverse=True)[1]  # noqa: E731
        assert torch.equal(order(batch.trace.reveal_call[i]), order(alone.trace.reveal_call[0]))
    repeats = generate(den, [[1, 2]] * 6, cfg)  # default seeds: one per row, derived from (seed, row)
    assert len({tuple(r) for r in repeats.generated.tolist()}) == 6


@pytest.mark.parametrize("seeds", [[1], [1, 2, 3], "12", [1, -1], [1, 2.0]])
def test_seeds_must_be_one_int_per_prompt(seeds):
    with pytest.raises(ValueError, match="seeds"):
        generate(ToyDenoiser(), [[1], [2]], GenerationConfig(gen_length=8, block_length=8), seeds=seeds)


@pytest.mark.parametrize("block", [2, 4, 8, 16, 32, 64])
def test_dus_costs_log2_calls_per_block(block):
    den = ToyDenoiser()
    cfg = GenerationConfig(gen_length=64, block_length=block, planner="dilated(confidence_threshold=0.9)",
                           early_exit=False)
    out = generate(den, [[1, 2]], cfg)
    assert out.nfe == (64 // block) * block.bit_length() - (64 // block)  # log2(B) per block
    assert out.calls_saved == 0


def test_one_token_per_call_costs_gen_length():
    den = ToyDenoiser()
    out = generate(den, [[1]], GenerationConfig(gen_length=24, block_length=8, planner="topk(steps=24)",
                                                early_exit=False))
    assert out.nfe == 24 and (out.trace.revealed_per_call == 1).all()


def test_early_exit_fills_eos_and_saves_calls():
    den = ToyDenoiser(eos_bias=6.0)  # EOS dominates, so the first block already holds one
    eos = den.spec.eos_ids[0]
    cfg = GenerationConfig(gen_length=64, block_length=16, planner="dilated")
    out = generate(den, [[1, 2], [3]], cfg)
    assert out.nfe == 4 and out.skipped_blocks == 3 and out.calls_saved == 12
    assert (out.generated[:, 16:] == eos).all() and (out.trace.reveal_call[:, 16:] == FILLED).all()
    full = generate(den, [[1, 2], [3]], GenerationConfig(**{**cfg.__dict__, "early_exit": False}))
    assert full.nfe == 16 and torch.equal(full.generated[:, :16], out.generated[:, :16])


class CharTokenizer:
    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(ord("a") + i) for i in ids)


def test_texts_cut_at_eos_and_stop_strings():
    den = ToyDenoiser(seed=3)
    cfg = GenerationConfig(gen_length=16, block_length=16, planner="dilated", early_exit=False)
    raw = generate(den, [[1, 2]], cfg, tokenizer=CharTokenizer())
    ids = raw.generated[0].tolist()
    eos = den.spec.eos_ids[0]
    expected = "".join(chr(ord("a") + t) for t in (ids[: ids.index(eos)] if eos in ids else ids))
    assert raw.texts == [expected]
    stop = expected[3:5]
    cut = generate(den, [[1, 2]], GenerationConfig(**{**cfg.__dict__, "stop": (stop,)}), tokenizer=CharTokenizer())
    assert cut.texts == [expected[: expected.find(stop)]]


def test_cfg_combines_conditional_and_unconditional_in_one_call():
    den = ToyDenoiser(seed=4)
    cfg = GenerationConfig(gen_length=8, block_length=8, planner="topk(steps=8)", cfg_scale=1.5, early_exit=False)
    out = generate(den, [[5, 6, 7]], cfg)
    assert den.calls == out.nfe == 8
    # the first call's choice equals the argmax of u + (s+1)(c-u) computed by hand
    ids = torch.tensor([[5, 6, 7] + [den.spec.mask_id] * 8])
    am, pos = torch.ones_like(ids, dtype=torch.bool), torch.arange(11).unsqueeze(0)
    c = den(ids, am, pos)[0, 3:]
    u = den(ids.masked_fill(pos < 3, den.spec.mask_id), am, pos)[0, 3:]
    g = u + 2.5 * (c - u)
    g[:, den.spec.mask_id] = float("-inf")
    probs = g.softmax(-1).max(-1)
    first = int(probs.values.argmax())
    assert out.trace.reveal_call[0, first] == 0 and out.generated[0, first] == probs.indices[first]


class HostReads:
    """Counts reads of tensor values back to the host (bool(), item(), tolist()): each is a device sync on a GPU."""

    def __init__(self, monkeypatch):
        self.count = 0
        for name in ("__bool__", "item", "tolist"):
            original = getattr(torch.Tensor, name)

            def counted(t, *args, _original=original, **kwargs):
                self.count += 1
                return _original(t, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, counted)


def reads_for(monkeypatch, planner, block, gen=64):
    den = ToyDenoiser(seed=6)
    cfg = GenerationConfig(gen_length=gen, block_length=block, planner=planner, early_exit=False)
    with monkeypatch.context() as m:
        reads = HostReads(m)
        out = generate(den, [[1, 2, 3], [4]], cfg)
    return reads.count, out.nfe


@pytest.mark.parametrize("planner", ["dilated", "topk(counts='dilated')", "topk(score='random', counts='dilated')"])
def test_fixed_schedules_read_nothing_back_inside_a_block(monkeypatch, planner):
    """Host reads do not grow with the calls inside a block: 6 calls cost what 1 call costs."""
    one_call, calls = reads_for(monkeypatch, "topk(counts=(64,))", block=64)
    six_calls, more = reads_for(monkeypatch, planner, block=64)
    assert (calls, more) == (1, 6)
    assert six_calls == one_call
    two_blocks, _ = reads_for(monkeypatch, planner, block=64, gen=128)
    assert 0 < two_blocks - six_calls <= 6  # a few reads per block (invariant checks, early exit)


def test_adaptive_planners_read_one_scalar_per_call(monkeypatch):
    reads, calls = reads_for(monkeypatch, "threshold(tau=0.5)", block=64)
    fixed, _ = reads_for(monkeypatch, "dilated", block=64)
    assert reads - fixed <= calls + 1  # whether any position is still masked, once per call
