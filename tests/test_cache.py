"""KV-cache policies (prefix, dual) on tiny LLaDA and Dream checkpoints: exactness where it must hold, NFE accounting."""

import pytest
import torch

import model_fixtures as mf
from unmask import GenerationConfig, cache, generate
from unmask.canvas import Canvas
from unmask.denoiser import ArenaIO, CachingDenoiser
from unmask.models import load

PLANNERS = [
    "dilated", "dilated(confidence_threshold=0.5)", "binary", "topk(steps={nb4})", "topk(score='margin', counts='dilated')",
    "eb(gamma=1.0)", "threshold(tau=0.7)", "factor(factor=1.0)", "spaced(eb(gamma=2.0), start_stride=4)",
]
PROMPTS = [[1, 2, 3, 4, 5, 6], [7, 8], [9, 10, 11], []]


@pytest.fixture(scope="module", params=["llada", "dream"])
def model(request):
    path = mf.llada_small() if request.param == "llada" else mf.dream_small()
    den, _ = load(path, dtype=torch.float64)  # float64: batched and single runs agree to the last greedy choice
    return den


def padded_canvas(den, prompts, gen):
    c = Canvas.build(prompts, gen, den.spec)
    return c.ids.clone(), c


def arena_call(model, arena, x, pos, key_mask, start, end, want):
    """Run canvas columns ``[start, end)`` of every row (row i in slot i) against ``arena``."""
    n = x.shape[0]
    cols = torch.arange(start, end).expand(n, -1)
    io = ArenaIO(torch.arange(n), cols, x.shape[1])
    return model.forward_arena(x[:, start:end], pos[:, start:end], key_mask, arena, io, want)


class Spy(CachingDenoiser):
    """Checks every block-start call (the whole canvas from column 0) against the uncached call and counts them."""

    def __init__(self, inner):
        self.inner, self.spec, self.lookbehind, self.starts = inner, inner.spec, inner.lookbehind, 0

    def __call__(self, *args, **kwargs):
        return self.inner(*args, **kwargs)

    def new_arena(self, slots, length):
        return self.inner.new_arena(slots, length)

    def forward_arena(self, ids, pos, key_mask, arena, io, want):
        logits = self.inner.forward_arena(ids, pos, key_mask, arena, io, want)
        if ids.shape[1] == io.keys and bool((io.cols[:, 0] == 0).all()):
            self.starts += 1
            am = torch.ones_like(ids, dtype=torch.bool) if key_mask is None else key_mask
            torch.testing.assert_close(logits, self.inner(ids, am, pos, want), atol=1e-5, rtol=0)
        return logits


@pytest.mark.parametrize("mode", ["prefix", "dual"])
def test_block_start_equals_uncached_and_nfe_adds_up(model, mode):
    spy = Spy(model)
    cfg = GenerationConfig(gen_length=24, block_length=8, planner="dilated", cache=mode, early_exit=False)
    out = generate(spy, PROMPTS, cfg)
    assert spy.starts == out.full_forwards == cfg.num_blocks
    assert out.full_forwards + out.partial_forwards == out.nfe == 3 * cfg.num_blocks


@pytest.mark.parametrize("mode", ["prefix", "dual"])
@pytest.mark.parametrize("block", [0, 2])
def test_segment_over_unchanged_canvas_reproduces_full_forward(model, mode, block):
    """With nothing revealed since the block start, the cached segment sees exactly the canvas the cache saw.

    For Dream this needs the lookbehind query: the block's first position is predicted from the token before it.
    """
    x, c = padded_canvas(model, PROMPTS, 24)
    width = c.width
    x[:, width : width + 16] = torch.randint(0, 90, (len(PROMPTS), 16), generator=torch.Generator().manual_seed(0))
    lo, hi = width + 8 * block, width + 8 * (block + 1)
    arena = model.new_arena(len(PROMPTS), x.shape[1])
    first = arena_call(model, arena, x, c.positions, c.attention_mask, 0, x.shape[1], (lo, hi))
    torch.testing.assert_close(first, model(x, c.attention_mask, c.positions)[:, lo:hi], atol=1e-10, rtol=0)
    start = lo - model.lookbehind
    end = x.shape[1] if mode == "prefix" else hi
    seg = arena_call(model, arena, x, c.positions, c.attention_mask, start, end, (lo - start, hi - start))
    torch.testing.assert_close(seg, first, atol=1e-8, rtol=0)


@pytest.mark.parametrize("mode", ["prefix", "dual"])
@pytest.mark.parametrize("cfg_scale", [0.0, 1.0])
def test_refresh_every_call_is_exact(model, mode, cfg_scale, monkeypatch):
    cfg = GenerationConfig(gen_length=16, block_length=8, planner="topk(steps=8)", cfg_scale=cfg_scale, early_exit=False)
    plain = generate(model, PROMPTS, cfg)
    monkeypatch.setattr(cache, "REFRESH", 1)
    out = generate(model, PROMPTS, GenerationConfig(**{**cfg.__dict__, "cache": mode}))
    assert torch.equal(out.generated, plain.generated) and torch.equal(out.trace.reveal_call, plain.trace.reveal_call)
    assert out.full_forwards == out.nfe and out.partial_forwards == 0


@pytest.mark.parametrize("planner", PLANNERS)
@pytest.mark.parametrize("mode", ["prefix", "dual"])
def test_every_planner_runs_cached_on_padded_batches(model, planner, mode):
    cfg = GenerationConfig(gen_length=16, block_length=8, planner=planner.format(nb4=8), cache=mode, early_exit=False)
    out = generate(model, PROMPTS, cfg)
    assert not (out.generated == model.spec.mask_id).any()
    assert (out.trace.reveal_call >= 0).all()
    assert out.full_forwards == cfg.num_blocks and out.full_forwards + out.partial_forwards == out.nfe
    for i, p in enumerate(PROMPTS):
        assert out.sequences[i, out.sequences.shape[1] - 16 - len(p) : out.sequences.shape[1] - 16].tolist() == p


@pytest.mark.parametrize("planner", ["dilated", "topk(steps=16)", "eb(gamma=1.0)", "threshold(tau=0.7)",
                                     "spaced(dilated(), start_stride=2)"])
@pytest.mark.parametrize("mode", ["none", "prefix", "dual"])
def test_batch_equals_each_prompt_alone(model, planner, mode):
    cfg = GenerationConfig(gen_length=16, block_length=8, planner=planner, cache=mode, early_exit=False)
    batch = generate(model, PROMPTS, cfg)
    for i, p in enumerate(PROMPTS):
        alone = generate(model, [p], cfg)
        assert torch.equal(batch.generated[i], alone.generated[0]), f"row {i} differs from its single run"
        assert torch.equal(batch.trace.reveal_call[i] >= 0, alone.trace.reveal_call[0] >= 0)


def test_cfg_with_cache_keeps_two_rows_per_prompt(model):
    cfg = GenerationConfig(gen_length=16, block_length=8, planner="dilated", cfg_scale=1.0, cache="dual")
    out = generate(model, PROMPTS, cfg)
    assert not (out.generated == model.spec.mask_id).any() and out.partial_forwards > 0


def test_logits_window_equals_the_slice_of_the_full_canvas(model):
    x, c = padded_canvas(model, PROMPTS, 24)
    full = model(x, c.attention_mask, c.positions)
    for lo, hi in [(0, 3), (c.width, c.width + 8), (x.shape[1] - 5, x.shape[1])]:
        torch.testing.assert_close(model(x, c.attention_mask, c.positions, (lo, hi)), full[:, lo:hi], atol=1e-10, rtol=0)


def test_segment_writes_its_keys_in_place_and_reads_the_rest(model):
    """After a full cached call, a segment over changed columns sees the cached keys elsewhere and its own new ones."""
    x, c = padded_canvas(model, PROMPTS, 24)
    arena = model.new_arena(len(PROMPTS), x.shape[1])
    arena_call(model, arena, x, c.positions, c.attention_mask, 0, x.shape[1], (c.width, c.width + 8))
    before = [k.clone() for k in arena.keys]
    lo, hi = c.width + 8, c.width + 16
    x2 = x.clone()
    x2[:, lo:hi] = 5
    start = lo - model.lookbehind
    seg = arena_call(model, arena, x2, c.positions, c.attention_mask, start, hi, (lo - start, hi - start))
    assert seg.shape == (len(PROMPTS), hi - lo, model.spec.vocab_size)
    for k0, k1 in zip(before, arena.keys):
        assert torch.equal(k0[:, :, :start], k1[:, :, :start]) and torch.equal(k0[:, :, hi:], k1[:, :, hi:])
        assert not torch.equal(k0[:, :, lo:hi], k1[:, :, lo:hi])
    # layer-0 keys depend only on the token and its position: the segment wrote exactly the new canvas's
    again = model.new_arena(len(PROMPTS), x.shape[1])
    arena_call(model, again, x2, c.positions, c.attention_mask, 0, x.shape[1], (lo, hi))
    torch.testing.assert_close(arena.keys[0][:, :, start:hi], again.keys[0][:, :, start:hi], atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="must lie within the query columns"):
        arena_call(model, arena, x2, c.positions, c.attention_mask, lo, hi, (-1, hi - lo))


def test_rows_of_different_requests_share_one_arena_call(model):
    """Rows in any slots, with different canvases and windows, get the logits they get alone (per-row columns)."""
    x, c = padded_canvas(model, PROMPTS, 24)
    arena = model.new_arena(8, x.shape[1] + 4)
    full = model(x, c.attention_mask, c.positions)
    slots = torch.tensor([5, 0, 7, 2])
    io = ArenaIO(slots, torch.arange(x.shape[1]).expand(len(PROMPTS), -1), x.shape[1])
    want = torch.stack([torch.arange(c.width + 8 * (i % 3), c.width + 8 * (i % 3) + 8) for i in range(len(PROMPTS))])
    got = model.forward_arena(x, c.positions, c.attention_mask, arena, io, want)
    expect = full.gather(1, want.unsqueeze(-1).expand(-1, -1, full.shape[-1]))
    torch.testing.assert_close(got, expect, atol=1e-10, rtol=0)
    assert all(float(arena.keys[0][s].abs().sum()) > 0 for s in slots.tolist())
    assert float(arena.keys[0][1].abs().sum()) == 0  # a slot no row holds is never written
