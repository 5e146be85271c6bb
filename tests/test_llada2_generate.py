"""LLaDA2 through unmask: a tiny saved LLaDA2 checkpoint (MoE, partial rotary, block-causal) loaded natively
into ``Glm4MoeForCausalLM`` and generated from with every planner, the committed cache and the CLI.

Logits are checked against two references independent of unmask's forward: LLaDA2's layer math restated on
its own tensors (``test_llada2.reference_logits``) and transformers' own ``Glm4MoeForCausalLM`` forward with a
hand-built block-causal 4D mask.
"""

from __future__ import annotations

import json

import model_fixtures as mf
import pytest
import torch
from call_check import record_call_errors
from test_block_diffusion import PLANNERS, PROMPTS
from test_llada2 import CONFIG, random_tensors, reference_logits, save_checkpoint

from unmask import GenerationConfig, generate
from unmask.models import load
from unmask.models.families import LLADA2

SPECIALS = {"<|endoftext|>": 56, "<|role_end|>": 57, "<|mask|>": 58}
BLOCK = 8


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    root = tmp_path_factory.mktemp("llada2-tiny")
    cfg = dict(CONFIG, block_size=BLOCK, eos_token_id=56, pad_token_id=56)
    tensors = random_tensors(cfg, seed=3)
    save_checkpoint(root, cfg, tensors)
    mf.write_tokenizer(root, SPECIALS, cfg["vocab_size"], "llada2", True)
    return root


@pytest.fixture(scope="module")
def model(path):
    den, _ = load(path, device="cpu", dtype=torch.float32)
    return den


def hf_reference(den, ids, attention_mask, positions):
    """Transformers' own ``Glm4MoeForCausalLM`` forward with the block-causal mask built here."""
    m = den.attention_block
    allowed = (positions[:, None, :] // m <= positions[:, :, None] // m) & attention_mask[:, None, :]
    return den.model(input_ids=ids, attention_mask=torch.where(allowed, 0.0, float("-inf"))[:, None],
                     position_ids=positions).logits


def test_loads_natively_with_its_block_size_and_llada2s_logits(model, path):
    assert model.family is LLADA2 and model.attention_block == BLOCK and model.lookbehind == 0
    assert type(model.model).__name__ == "Glm4MoeForCausalLM"
    rot = model.model.model.rotary_emb(torch.zeros(1), torch.arange(3)[None])[0].shape[-1]
    assert rot == CONFIG["head_dim"] // 2  # partial rotary: half of each head rotates
    cfg = json.loads((path / "config.json").read_text())
    ids = torch.randint(0, 56, (13,), generator=torch.Generator().manual_seed(4))
    want = reference_logits(random_tensors(cfg, seed=3), cfg, ids, BLOCK)
    got = model(ids[None], torch.ones(1, 13, dtype=torch.bool), torch.arange(13)[None])[0]
    assert torch.allclose(got, want, rtol=0, atol=2e-5 * want.abs().max())
    # a left-padded row gives its own logits
    padded = torch.cat([torch.full((3,), 56), ids])[None]
    am = torch.arange(16)[None] >= 3
    pos = (am.long().cumsum(-1) - 1).clamp_min(0)
    assert torch.allclose(model(padded, am, pos)[0, 3:], got, rtol=0, atol=2e-5 * want.abs().max())


@pytest.mark.parametrize("block_length", [8, 4])
def test_every_committed_call_equals_the_full_block_causal_forward(model, monkeypatch, block_length):
    errors, kinds = record_call_errors(monkeypatch, hf_reference)
    cfg = GenerationConfig(gen_length=16, block_length=block_length, planner="dilated", early_exit=False,
                           sampling={"temperature": 1.0}, seed=1)  # cache auto: committed
    generate(model, PROMPTS, cfg)
    assert errors and max(errors) < 1e-5 and set(kinds) == {"segment"}


def test_every_planner_same_tokens_with_and_without_the_committed_cache(model):
    for planner in PLANNERS + ["dynamic(counts='dilated')", "entropy_sum", "topk(score='position', steps=4)"]:
        outs = {}
        for mode in ("none", "committed"):
            cfg = GenerationConfig(gen_length=8, block_length=4, planner=planner, cache=mode, early_exit=False,
                                   sampling={"temperature": 1.0}, seed=5)
            outs[mode] = out = generate(model, PROMPTS, cfg)
            assert not (out.generated == model.spec.mask_id).any(), planner
            assert out.trace.revealed_per_call.sum() == out.generated.numel(), planner
        assert torch.equal(outs["none"].generated, outs["committed"].generated), planner
        assert outs["none"].nfe == outs["committed"].nfe, planner


@pytest.mark.parametrize("mode", ["none", "committed"])
def test_batch_equals_alone(model, mode):
    cfg = GenerationConfig(gen_length=8, block_length=4, planner="threshold(tau=0.5)", cache=mode, early_exit=False,
                           sampling={"temperature": 1.0}, seed=9)
    batch = generate(model, PROMPTS, cfg, seeds=[11, 12, 13, 14])
    for i, p in enumerate(PROMPTS):
        alone = generate(model, [p], cfg, seeds=[11 + i])
        assert torch.equal(batch.generated[i], alone.generated[0]), i
        assert batch.nfe_per_row[i] == alone.nfe_per_row[0], i


def test_compile_refuses_expert_kernels_that_read_back_to_the_host(model):
    from unmask.models.runner import CompiledDenoiser

    assert model.model.config._experts_implementation == "grouped_mm"  # transformers' default: sorted on device
    with pytest.raises(ValueError, match="bfloat16 weights .* reads the expert offsets back to the host"):
        CompiledDenoiser(model, graphs=True)  # float32: grouped_mm's compiled fallback loops over offsets.tolist()
    model.model.config._experts_implementation = "eager"
    try:
        with pytest.raises(ValueError, match="eager expert loop .* reading the routing back to the host"):
            CompiledDenoiser(model, graphs=False)
        with pytest.raises(ValueError, match="compile=False"):
            generate(model, [[1, 2, 3]], GenerationConfig(gen_length=8, block_length=4, compile=True))
    finally:
        model.model.config._experts_implementation = "grouped_mm"


def test_cli_generate_on_the_saved_checkpoint(path, capsys):
    from unmask import cli

    for planner in ("dilated", "threshold(tau=0.5)", "eb(gamma=1.0)"):
        code = cli.main(["generate", "--model", str(path), "--gen-length", "8", "--block-length", "4",
                         "--planner", planner, "--no-chat-template", "hello world"])
        out, err = capsys.readouterr()
        assert code == 0, (planner, err)
        assert "cache committed" in out and "0 full + " in out, out


def test_convert_refuses_with_its_reason(path, tmp_path):
    from unmask.models import convert

    with pytest.raises(ValueError, match="LLaDA2"):
        convert(path, tmp_path / "out")


def test_random_llada2_shape_is_block_causal_moe_with_partial_rotary():
    from unmask.models.synthetic import random_llada2

    den = random_llada2(hidden=32, layers=2, heads=4, kv_heads=2, head_dim=8, intermediate=48, experts=8, top_k=2,
                        groups=4, top_groups=2, expert_intermediate=16, vocab=64, block=8, device="cpu",
                        dtype=torch.float32)
    assert den.family is LLADA2 and den.attention_block == 8 and den.model.config.n_routed_experts == 8
    outs = [generate(den, [[1, 2, 3], [4, 5, 6, 7, 8]], GenerationConfig(gen_length=16, block_length=8, cache=mode,
                                                                          planner="dilated", early_exit=False))
            for mode in ("none", "committed")]
    assert torch.equal(outs[0].generated, outs[1].generated)
