"""KV-cache policies (prefix, dual) on tiny LLaDA and Dream checkpoints: exactness where it must hold, NFE accounting."""

import pytest
import torch

import model_fixtures as mf
from unmask import GenerationConfig, cache, generate
from unmask.canvas import Canvas
from unmask.denoiser import CachingDenoiser
from unmask.guidance import Guided
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


class Spy(CachingDenoiser):
    """Checks every block-start call (the whole canvas, start 0) against the uncached call and counts them."""

    def __init__(self, inner):
        self.inner, self.spec, self.lookbehind, self.starts = inner, inner.spec, inner.lookbehind, 0

    def __call__(self, *args, **kwargs):
        return self.inner(*args, **kwargs)

    def new_cache(self, batch, length):
        return self.inner.new_cache(batch, length)

    def forward_cached(self, ids, pos, key_mask, cache, start, window):
        logits = self.inner.forward_cached(ids, pos, key_mask, cache, start, window)
        if start == 0 and ids.shape[1] == cache.length:
            self.starts += 1
            am = torch.ones_like(ids, dtype=torch.bool) if key_mask is None else key_mask
            torch.testing.assert_close(logits, self.inner(ids, am, pos, window), atol=1e-5, rtol=0)
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
    for den in (model, Guided(model, c.prompt_mask, 1.5)):
        policy = cache.POLICIES[mode](den, c)
        first = policy.block_logits(x, lo, hi, 0)
        torch.testing.assert_close(first, den(x, c.attention_mask, c.positions)[:, lo:hi], atol=1e-10, rtol=0)
        torch.testing.assert_close(policy.block_logits(x, lo, hi, 1), first, atol=1e-8, rtol=0)
        assert (policy.full, policy.partial) == (1, 1)


@pytest.mark.parametrize("mode", ["prefix", "dual"])
@pytest.mark.parametrize("cfg_scale", [0.0, 1.0])
def test_refresh_every_call_is_exact(model, mode, cfg_scale, monkeypatch):
    refreshed = type("Refreshed", (cache.POLICIES[mode],), {"refresh": 1})
    cfg = GenerationConfig(gen_length=16, block_length=8, planner="topk(steps=8)", cfg_scale=cfg_scale, early_exit=False)
    plain = generate(model, PROMPTS, cfg)
    monkeypatch.setitem(cache.POLICIES, mode, refreshed)
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
    kv = model.new_cache(*x.shape)
    model.forward_cached(x, c.positions, c.attention_mask, kv, 0, (c.width, c.width + 8))
    before = [k.clone() for k in kv.keys]
    lo, hi = c.width + 8, c.width + 16
    x2 = x.clone()
    x2[:, lo:hi] = 5
    start = lo - model.lookbehind
    seg = model.forward_cached(x2[:, start:hi], c.positions[:, start:hi], c.attention_mask, kv, start, (lo, hi))
    assert seg.shape == (len(PROMPTS), hi - lo, model.spec.vocab_size)
    for k0, k1 in zip(before, kv.keys):
        assert torch.equal(k0[:, :, :start], k1[:, :, :start]) and torch.equal(k0[:, :, hi:], k1[:, :, hi:])
        assert not torch.equal(k0[:, :, lo:hi], k1[:, :, lo:hi])
    # layer-0 keys depend only on the token and its position: the segment wrote exactly the new canvas's
    again = model.new_cache(*x.shape)
    model.forward_cached(x2, c.positions, c.attention_mask, again, 0, (lo, hi))
    torch.testing.assert_close(kv.keys[0][:, :, start:hi], again.keys[0][:, :, start:hi], atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="must lie within the query columns"):
        model.forward_cached(x2[:, lo:hi], c.positions[:, lo:hi], c.attention_mask, kv, lo, (lo - 1, hi))
