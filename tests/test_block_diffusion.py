"""Block-diffusion families (SDAR, Fast-dLLM v2): block-causal attention, blocks laid out from position 0, and
the exact committed key/value cache, on tiny saved checkpoints in the real layouts.

The reference for every logit is transformers' own ``Qwen3ForCausalLM`` / ``Qwen2ForCausalLM`` forward with a
hand-built 4D mask (key block <= query block, block = position // block size), independent of unmask's forward.
"""

from __future__ import annotations

import json
import shutil

import model_fixtures as mf
import pytest
import torch
from call_check import record_call_errors

from unmask import GenerationConfig, generate
from unmask.models import load
from unmask.models.families import align_shifted

PROMPTS = [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11, 12, 13, 14], [15, 16], [17, 18, 19, 20]]  # leads 1, 1, 2, 0 (block 4)
PLANNERS = [
    "dilated", "dilated(base=3)", "dilated(confidence_threshold=0.4)", "binary", "topk(steps=4)",
    "topk(score='margin', counts='dilated')", "topk(score='entropy', counts='dilated')",
    "topk(score='random', counts='dilated')", "eb(gamma=1.0)", "threshold(tau=0.5)", "factor(factor=1.0)",
    "spaced(eb(gamma=2.0), start_stride=2)", "spaced(dilated(), start_stride=2)", "interleave(k=2)",
    "farthest(calls=2)",
]


@pytest.fixture(scope="module", params=["sdar", "fast_dllm_v2"])
def model(request):
    path = mf.sdar_small() if request.param == "sdar" else mf.fast_dllm_small()
    den, _ = load(path, device="cpu", dtype=torch.float32)
    return den


def reference(den, ids, attention_mask, positions):
    """Aligned logits of transformers' own forward with the block-causal mask built here."""
    m = den.attention_block
    allowed = (positions[:, None, :] // m <= positions[:, :, None] // m) & attention_mask[:, None, :]
    raw = den.model(input_ids=ids, attention_mask=torch.where(allowed, 0.0, float("-inf"))[:, None],
                    position_ids=positions).logits
    return align_shifted(raw, positions) if den.lookbehind else raw


def test_families_are_detected_with_their_block_size_and_shift(model):
    assert model.family.attention == "block_causal"
    if model.family.name == "sdar":  # no block size field in SDAR's config.json: the reference's 4
        assert (model.attention_block, model.lookbehind, type(model.model).__name__) == (4, 0, "Qwen3ForCausalLM")
    else:  # bd_size from config.json, AR-initialised: shifted logits
        assert (model.attention_block, model.lookbehind, type(model.model).__name__) == (8, 1, "Qwen2ForCausalLM")


def test_forward_is_transformers_with_the_block_causal_mask(model):
    ids = torch.randint(0, 90, (2, 13), generator=torch.Generator().manual_seed(0))
    am = torch.ones(2, 13, dtype=torch.bool)
    am[1, :3] = False
    pos = (am.long().cumsum(-1) - 1).clamp_min(0)
    ours, ref = model(ids, am, pos), reference(model, ids, am, pos)
    assert torch.allclose(ours[am], ref[am], atol=1e-5 * ref.abs().max().item(), rtol=0)
    full = model.model(input_ids=ids, position_ids=pos, attention_mask=am.long()).logits  # bidirectional: differs
    assert (full[am] - ref[am]).abs().max() > 1e-2


@pytest.mark.parametrize("mode", ["none", "committed"])
@pytest.mark.parametrize("block_length", [4, 2])
def test_every_call_equals_the_full_block_causal_forward(model, monkeypatch, mode, block_length):
    """Each call's logits (committed: only the uncommitted columns run) equal the whole canvas run by
    transformers with the block-causal mask, to float32 rounding; the committed calls are segments only."""
    errors, kinds = record_call_errors(monkeypatch, reference)
    cfg = GenerationConfig(gen_length=8, block_length=block_length, planner="dilated", cache=mode, early_exit=False,
                           sampling={"temperature": 1.0}, seed=1)
    generate(model, PROMPTS, cfg)
    assert errors and max(errors) < 1e-5
    assert set(kinds) == ({"segment"} if mode == "committed" else {"full"})


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_every_planner_same_tokens_with_and_without_the_committed_cache(model, temperature):
    for planner in PLANNERS:
        outs = {}
        for mode in ("none", "committed"):
            cfg = GenerationConfig(gen_length=8, block_length=4, planner=planner, cache=mode, early_exit=False,
                                   sampling={"temperature": temperature}, seed=5)
            outs[mode] = out = generate(model, PROMPTS, cfg)
            gen = out.generated
            assert not (gen == model.spec.mask_id).any(), f"{planner}: a mask left"
            for i, p in enumerate(PROMPTS):  # the prompt is unchanged and right before the generated tokens
                seq = out.sequences[i][out.attention_mask[i]]
                assert seq[: len(p)].tolist() == p and seq.shape[0] == len(p) + 8
            assert (out.trace.reveal_call >= 0).all() and out.trace.revealed_per_call.sum() == gen.numel()
        a, b = outs["none"], outs["committed"]
        assert torch.equal(a.generated, b.generated), planner
        assert torch.equal(a.trace.reveal_call, b.trace.reveal_call) and a.nfe == b.nfe, planner


@pytest.mark.parametrize("mode", ["none", "committed"])
def test_batch_equals_alone_with_different_prompt_lengths(model, mode):
    for planner in ("dilated", "threshold(tau=0.5)"):
        cfg = GenerationConfig(gen_length=8, block_length=4, planner=planner, cache=mode, early_exit=False,
                               sampling={"temperature": 1.0}, seed=9)
        batch = generate(model, PROMPTS, cfg, seeds=[11, 12, 13, 14])
        for i, p in enumerate(PROMPTS):
            alone = generate(model, [p], cfg, seeds=[11 + i])
            assert torch.equal(batch.generated[i], alone.generated[0]), (planner, i)
            assert batch.nfe_per_row[i] == alone.nfe_per_row[0], (planner, i)


def test_nfe_is_exact_and_the_commit_costs_no_call(model, monkeypatch):
    """DUS, base 2, blocks of 4: 2 calls per block; prompt of 5 (lead 1) + 8 tokens -> 3 blocks = 6 calls, and
    the denoiser runs exactly those (the finished blocks are written by the next block's first call)."""
    calls = []
    forward = type(model).forward_arena
    monkeypatch.setattr(type(model), "forward_arena", lambda self, *a, **k: calls.append(1) or forward(self, *a, **k))
    cfg = GenerationConfig(gen_length=8, block_length=4, planner="dilated(base=2)", early_exit=False)
    out = generate(model, [PROMPTS[0]], cfg)  # cache auto -> committed
    assert out.nfe == 6 == len(calls) == out.partial_forwards and out.full_forwards == 0
    assert out.trace.block_of_call.tolist() == [0, 0, 1, 1, 2, 2]
    out = generate(model, [PROMPTS[3]], cfg)  # lead 0: two blocks
    assert out.nfe == 4


def test_auto_cache_is_committed_for_block_causal_and_none_for_full_attention(model):
    from unmask.cache import resolve_cache

    assert resolve_cache("auto", model) == "committed"
    llada, _ = load(mf.llada_small(), dtype=torch.float32)
    assert resolve_cache("auto", llada) == "none"
    with pytest.raises(ValueError, match="committed"):
        generate(llada, [[1, 2]], GenerationConfig(gen_length=8, block_length=4, cache="committed"))


def test_bad_block_sizes_are_refused(model, tmp_path):
    with pytest.raises(ValueError, match=r"block_length must divide the model's attention block size"):
        generate(model, [[1, 2]], GenerationConfig(gen_length=9, block_length=3))
    with pytest.raises(ValueError, match=r"block_length must divide"):
        generate(model, [[1, 2]], GenerationConfig(gen_length=32, block_length=16))
    src = mf.sdar_small() if model.family.name == "sdar" else mf.fast_dllm_small()
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    raw = json.loads((bad / "config.json").read_text())
    raw["block_size" if model.family.name == "sdar" else "bd_size"] = 0
    (bad / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="must be a positive int"):
        load(bad, device="cpu")


def test_compiled_equals_eager_on_cpu(model):
    if model.family.name != "fast_dllm_v2":  # one case (shift, sub-blocks of a model block): compiling is slow
        pytest.skip("compiled once, on the Fast-dLLM v2 layout")
    cfg = GenerationConfig(gen_length=8, block_length=4, planner="dilated", early_exit=False, seed=2,
                           sampling={"temperature": 1.0})
    eager = generate(model, PROMPTS[:3], cfg)
    compiled = generate(model, PROMPTS[:3], GenerationConfig(**{**cfg.__dict__, "compile": True}))
    assert torch.equal(eager.generated, compiled.generated)
    assert torch.equal(eager.trace.reveal_call, compiled.trace.reveal_call)


def test_cli_generate_runs_every_planner_on_a_saved_sdar_checkpoint(capsys):
    from unmask import cli

    for planner in PLANNERS:
        code = cli.main(["generate", "--model", str(mf.sdar_small()), "--gen-length", "8", "--block-length", "4",
                         "--planner", planner, "--no-chat-template", "hello world"])
        out, err = capsys.readouterr()
        assert code == 0, (planner, err)
        assert "cache committed" in out and "0 full + " in out, out  # the default: the committed cache, segments only
    code = cli.main(["generate", "--model", str(mf.sdar_small()), "--gen-length", "64", "--block-length", "32", "hello"])
    out, err = capsys.readouterr()
    assert code != 0 and "block_length must divide the model's attention block size 4" in err


def test_guidance_twins_give_the_same_tokens_with_the_committed_cache(model):
    outs = [generate(model, PROMPTS, GenerationConfig(gen_length=8, block_length=4, planner="dilated", cache=mode,
                                                      cfg_scale=1.0, early_exit=False, seed=4))
            for mode in ("none", "committed")]
    assert torch.equal(outs[0].generated, outs[1].generated)


def test_an_end_token_in_the_prompt_tail_does_not_end_the_row(model):
    eos = model.spec.eos_ids[0]
    prompt = [1, 2, 3, 4, 5, eos]  # blocks of 4: the tail [5, eos] fills block 0's first offsets
    cfg = GenerationConfig(gen_length=8, block_length=4, planner="dilated", early_exit=False)
    plain = generate(model, [prompt], cfg)
    assert not torch.isin(plain.generated, torch.tensor(model.spec.eos_ids)).any()  # nothing generated ends it
    exiting = generate(model, [prompt], GenerationConfig(**{**cfg.__dict__, "early_exit": True}))
    assert torch.equal(exiting.generated, plain.generated) and exiting.nfe == plain.nfe
    assert (exiting.trace.reveal_call >= 0).all()  # no position was filled by an early exit


def test_a_converted_checkpoint_keeps_its_block_size_and_logits(model, tmp_path):
    from unmask.models import convert

    src = mf.sdar_small() if model.family.name == "sdar" else mf.fast_dllm_small()
    again, _ = load(convert(src, tmp_path / "native"), device="cpu", dtype=torch.float32)
    assert (again.family.name, again.attention_block, again.lookbehind) == (
        model.family.name, model.attention_block, model.lookbehind)
    ids = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]])
    am = torch.ones_like(ids, dtype=torch.bool)
    pos = torch.arange(11).unsqueeze(0)
    assert torch.equal(again(ids, am, pos), model(ids, am, pos))


def test_engine_requests_with_different_caches_and_leads_get_what_they_get_alone(model):
    from unmask.engine import Engine, EngineConfig, Request

    mix = [([PROMPTS[0], PROMPTS[2]], dict(planner="dilated", cache="committed", seed=1)),
           ([PROMPTS[1]], dict(planner="threshold(tau=0.5)", cache="none", seed=2, sampling={"temperature": 1.0})),
           ([PROMPTS[3], PROMPTS[0]], dict(planner="eb(gamma=1.0)", cache="auto", block_length=2, seed=3)),
           ([PROMPTS[2]], dict(planner="binary", cache="committed", cfg_scale=1.0, seed=4))]
    engine = Engine(model, EngineConfig(max_rows=64, kv_slots=16))
    reqs = []
    for prompts, kw in mix:
        cfg = GenerationConfig(**{"gen_length": 8, "block_length": 4, "early_exit": False, **kw})
        reqs.append(Request(prompts, cfg, [7 + i for i in range(len(prompts))]))
        engine.add(reqs[-1])
    outs = engine.run()
    for req, (prompts, _) in zip(reqs, mix, strict=True):
        alone = generate(model, prompts, req.config, seeds=req.seeds)
        assert torch.equal(outs[req.id].generated, alone.generated), req.config
        assert torch.equal(outs[req.id].nfe_per_row, alone.nfe_per_row), req.config
    assert engine.stats.rows_per_call > 2  # the requests shared calls
