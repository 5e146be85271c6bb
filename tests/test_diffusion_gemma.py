"""DiffusionGemma: the adapter's logits against transformers' forward, padded batches against rows alone,
and the restated sampler against transformers' own ``generate``, call by call, on shared noise."""

from __future__ import annotations

import json

import pytest
import torch
from model_fixtures import diffusion_gemma_dense, diffusion_gemma_moe

from unmask.models import detect_family, load
from unmask.models.diffusion_gemma import load_diffusion_gemma
from unmask.models.diffusion_gemma_sampler import EntropyBoundSpec, accept, canvas_tokens, end_canvas, start, step
from unmask.models.families import DIFFUSION_GEMMA
from unmask.noise import Noise

# logits are soft-capped to |z| < 30; float32 rounds each op to 2^-24 relative, and a tiny model's logit goes
# through a few dozen accumulating ops (reductions over 32..64 terms): 30 * 2^-24 * 64 ~ 1.1e-4
ATOL = 1.2e-4

BUILDERS = {"dense": diffusion_gemma_dense, "moe": diffusion_gemma_moe}


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def gemma(request):
    return load_diffusion_gemma(BUILDERS[request.param](), device="cpu", dtype="float32")[0]


def test_family_is_detected_and_loaded_as_a_uniform_state_denoiser():
    path = diffusion_gemma_dense()
    assert detect_family(json.loads((path / "config.json").read_text())) is DIFFUSION_GEMMA
    assert DIFFUSION_GEMMA.corruption == "uniform"
    denoiser, tokenizer = load(path, device="cpu")
    assert denoiser.corruption == "uniform" and denoiser.canvas_length == 8 and tokenizer is not None
    # the engine's marker of an uncommitted position lies just outside the model's vocabulary
    assert (denoiser.spec.mask_id, denoiser.spec.vocab_size) == (96, 97)
    with pytest.raises(ValueError, match="quantize and native=True do not apply"):
        load(path, device="cpu", quantize="int8")


def test_loader_refuses_other_families(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llada"}))
    with pytest.raises(ValueError, match="not a DiffusionGemma checkpoint"):
        load_diffusion_gemma(tmp_path, device="cpu")


def reference_logits(model, prompt, canvas, conditioning_logits=None):
    """transformers' own forward: encoder over ``prompt`` into a fresh cache, then the decoder on ``canvas``."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config.get_text_config(decoder=True))
    return model(input_ids=prompt, cache=cache, decoder_input_ids=canvas,
                 self_conditioning_logits=conditioning_logits).logits


def test_decode_equals_transformers_forward(gemma):
    g = torch.Generator().manual_seed(0)
    v, c = gemma.vocab_size, gemma.canvas_length
    prompt = torch.randint(3, v, (2, 9), generator=g)
    canvas = torch.randint(0, v, (2, c), generator=g)
    state = gemma.encode(prompt, torch.ones_like(prompt, dtype=torch.bool))
    first = gemma.decode(state, canvas, gemma.initial_conditioning(2))
    torch.testing.assert_close(first, reference_logits(gemma.model, prompt, canvas), rtol=0, atol=ATOL)
    previous = 3.0 * torch.randn(2, c, v, generator=g)
    later = gemma.decode(state, canvas, gemma.conditioning(previous))
    torch.testing.assert_close(later, reference_logits(gemma.model, prompt, canvas, previous), rtol=0, atol=ATOL)
    assert (later - first).abs().max() > 100 * ATOL  # the self-conditioning input matters
    # a finished canvas appended to the cache: as if it had been part of the prompt
    nxt = torch.randint(0, v, (2, c), generator=g)
    extended = gemma.decode(gemma.extend(state, canvas), nxt, gemma.initial_conditioning(2))
    torch.testing.assert_close(extended, reference_logits(gemma.model, torch.cat([prompt, canvas], 1), nxt),
                               rtol=0, atol=ATOL)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_bfloat16_conditioning_is_transformers_own(name):
    """In bfloat16 the state goes through transformers' casts (processed logits to bfloat16, softmax in float32,
    back to bfloat16): the same operations on the same inputs, so the logits are bit for bit transformers'."""
    gemma = load_diffusion_gemma(BUILDERS[name](), device="cpu", dtype="bfloat16")[0]
    g = torch.Generator().manual_seed(3)
    prompt = torch.randint(3, gemma.vocab_size, (2, 9), generator=g)
    canvas = torch.randint(0, gemma.vocab_size, (2, gemma.canvas_length), generator=g)
    processed = 3.0 * torch.randn(2, gemma.canvas_length, gemma.vocab_size, generator=g)
    state = gemma.encode(prompt, torch.ones_like(prompt, dtype=torch.bool))
    ours = gemma.decode(state, canvas, gemma.conditioning(processed))
    assert torch.equal(ours, reference_logits(gemma.model, prompt, canvas, processed.to(torch.bfloat16)))


def test_padded_batch_equals_rows_alone(gemma):
    g = torch.Generator().manual_seed(1)
    v, c = gemma.vocab_size, gemma.canvas_length
    lengths = [11, 7, 2]  # longer and shorter than the sliding window (6)
    width = max(lengths)
    ids = torch.full((3, width), gemma.pad_id)
    mask = torch.zeros(3, width, dtype=torch.bool)
    rows = [torch.randint(3, v, (n,), generator=g) for n in lengths]
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = row
        mask[i, width - len(row):] = True
    canvas, nxt = torch.randint(0, v, (2, 3, c), generator=g)
    previous = 3.0 * torch.randn(3, c, v, generator=g)
    state = gemma.encode(ids, mask)
    batch = [gemma.decode(state, canvas, gemma.conditioning(previous))]
    state = gemma.extend(state, canvas)
    batch.append(gemma.decode(state, nxt, gemma.initial_conditioning(3)))
    assert all(torch.isfinite(b).all() for b in batch)
    for i, row in enumerate(rows):
        alone = gemma.encode(row[None], torch.ones(1, len(row), dtype=torch.bool))
        first = gemma.decode(alone, canvas[i : i + 1], gemma.conditioning(previous[i : i + 1]))
        torch.testing.assert_close(batch[0][i : i + 1], first, rtol=0, atol=ATOL)
        second = gemma.decode(gemma.extend(alone, canvas[i : i + 1]), nxt[i : i + 1], gemma.initial_conditioning(1))
        torch.testing.assert_close(batch[1][i : i + 1], second, rtol=0, atol=ATOL)


def test_merged_states_equal_rows_alone(gemma):
    """Rows of two requests at different canvases (different cache lengths) in one decoder call."""
    g = torch.Generator().manual_seed(2)
    v, c = gemma.vocab_size, gemma.canvas_length
    a = torch.randint(3, v, (1, 3), generator=g)  # one row, then a finished canvas: 3 + c keys
    b = torch.randint(3, v, (2, 10), generator=g)  # two rows of 10 keys, the second left-padded to 4 real ones
    b_mask = torch.ones(2, 10, dtype=torch.bool)
    b_mask[1, :6] = False
    done = torch.randint(0, v, (1, c), generator=g)
    first = gemma.extend(gemma.encode(a, torch.ones_like(a, dtype=torch.bool)), done)
    second = gemma.encode(b, b_mask)
    merged = gemma.merge([(second, torch.tensor([1])), (first, torch.tensor([0])), (second, torch.tensor([0]))])
    canvas = torch.randint(0, v, (3, c), generator=g)
    previous = 3.0 * torch.randn(3, c, v, generator=g)
    batch = gemma.decode(merged, canvas, gemma.conditioning(previous))
    alone = [gemma.encode(b[1:, 6:], torch.ones(1, 4, dtype=torch.bool)), first,
             gemma.encode(b[:1], torch.ones(1, 10, dtype=torch.bool))]
    for i, state in enumerate(alone):
        one = gemma.decode(state, canvas[i : i + 1], gemma.conditioning(previous[i : i + 1]))
        torch.testing.assert_close(batch[i : i + 1], one, rtol=0, atol=ATOL)
    # a merged state keeps growing: each row's next canvas appended
    grown = gemma.decode(gemma.extend(merged, canvas), canvas, gemma.initial_conditioning(3))
    for i, state in enumerate(alone):
        one = gemma.decode(gemma.extend(state, canvas[i : i + 1]), canvas[i : i + 1], gemma.initial_conditioning(1))
        torch.testing.assert_close(grown[i : i + 1], one, rtol=0, atol=ATOL)


def test_encode_refuses_right_padding(gemma):
    ids = torch.tensor([[5, 6, 0]])
    with pytest.raises(ValueError, match="left-padded"):
        gemma.encode(ids, torch.tensor([[True, True, False]]))


def test_accept_by_hand():
    h = torch.tensor([[0.05, 0.3, 0.02, 1.0]])
    # ascending 0.02, 0.05, 0.3, 1.0: entropies below each are 0, 0.02, 0.07, 0.37
    assert accept(h, 0.1).tolist() == [[True, True, True, False]]
    assert accept(h, 0.05).tolist() == [[True, False, True, False]]
    assert accept(h, 1e-9).tolist() == [[False, False, True, False]]  # the lowest is always accepted
    assert accept(h, 0.4).all()


def test_temperature_schedule():
    spec = EntropyBoundSpec(max_calls=4, t_min=0.4, t_max=0.8)
    # call k runs at t_min + (t_max - t_min) * (4 - k) / 4: 0.8, 0.7, 0.6, 0.5 (never t_min itself)
    got = [spec.temperature(k).item() for k in range(4)]
    assert got == pytest.approx([0.8, 0.7, 0.6, 0.5], abs=1e-6)
    with pytest.raises(ValueError, match="call must lie in"):
        spec.temperature(4)


def test_spec_from_generation_config():
    from transformers import EntropyBoundSamplerConfig
    from transformers.models.diffusion_gemma.generation_diffusion_gemma import DiffusionGemmaGenerationConfig

    config = DiffusionGemmaGenerationConfig(max_denoising_steps=12, t_min=0.1,
                                            sampler_config=EntropyBoundSamplerConfig(entropy_bound=0.5))
    spec = EntropyBoundSpec.from_generation_config(config)
    assert (spec.max_calls, spec.t_min, spec.entropy_bound) == (12, 0.1, 0.5)
    defaults = DiffusionGemmaGenerationConfig._get_default_generation_params()
    assert (spec.t_max, spec.stability, spec.confidence) == (
        defaults["t_max"], defaults["stability_threshold"], defaults["confidence_threshold"])
    base = EntropyBoundSpec()
    assert (base.max_calls, base.entropy_bound, base.t_min) == (
        defaults["max_denoising_steps"], defaults["sampler_config"].entropy_bound, defaults["t_min"])


@pytest.mark.parametrize("bad", [dict(max_calls=0), dict(stability=-1), dict(entropy_bound=0.0),
                                 dict(confidence=-1.0), dict(t_min=0.8, t_max=0.8), dict(t_min=-0.1)])
def test_spec_refuses_bad_values(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        EntropyBoundSpec(**bad)


def test_step_stops_on_a_stable_confident_argmax():
    spec = EntropyBoundSpec(entropy_bound=0.1, max_calls=5, stability=1, confidence=0.5)
    logits = torch.full((2, 3, 4), -20.0)
    logits[:, :, 1] = 20.0  # certain predictions: entropy ~0, argmax 1 everywhere
    state = start(torch.zeros(2, 3, dtype=torch.long), stability=1)
    u, fresh = torch.full((2, 3), 0.5, dtype=torch.float64), torch.full((2, 3), 3)
    first, state = step(spec, 0, logits, state, u, fresh)
    assert not first.stop.any()  # nothing to compare with at the first call
    assert first.accepted.all() and (state.canvas == 1).all()
    second, state = step(spec, 1, logits, state, u, fresh)
    assert second.stop.all() and state.stopped.all() and state.calls.tolist() == [2, 2]
    flipped = logits.flip(-1)  # argmax 2: a stopped row ignores it
    _, after = step(spec, 2, flipped, state, u, fresh)
    assert torch.equal(after.argmax, state.argmax) and after.calls.tolist() == [2, 2]


def test_canvas_noise_is_per_row():
    seeds = [3, 11]
    pos = torch.arange(5, 13).expand(2, 8)
    both = canvas_tokens(Noise.from_seeds(seeds), 2, pos, 96)
    assert both.min() >= 0 and both.max() < 96
    assert torch.equal(both[1:], canvas_tokens(Noise.from_seeds(seeds[1:]), 2, pos[1:], 96))
    assert not torch.equal(both, canvas_tokens(Noise.from_seeds(seeds), 3, pos, 96))


def test_end_canvas_pads_after_the_first_eos():
    tokens = torch.tensor([[5, 1, 7, 1], [5, 6, 7, 8]])
    out, done = end_canvas(tokens, (1,), 0)
    assert out.tolist() == [[5, 1, 0, 0], [5, 6, 7, 8]] and done.tolist() == [True, False]
