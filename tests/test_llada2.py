"""LLaDA2 checkpoints mapped onto transformers' ``Glm4MoeForCausalLM``: the same logits as LLaDA2's own layer math.

A tiny random checkpoint is written with LLaDA2's config layout (the fields of
LLaDA2.1-mini's config.json) and tensor names (``modeling_llada2_moe.py``:
fused ``query_key_value``, ``query_layernorm`` / ``key_layernorm``, ``dense``,
per-expert MLPs, ``gate.expert_bias``), split over two shards so that one
layer's experts straddle them. ``reference_logits`` restates the LLaDA2 forward
from its public description (models/llada2.py docstring) directly on those
tensors, token by token for the routing; the mapped model runs transformers'
own forward with LLaDA2's block-causal mask. Both in float32.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import save_file

from unmask.models.families import LLADA2, detect_family
from unmask.models.llada2 import build_llada2, llada2_config, llada2_tensors
from unmask.models.loading import hf_config

CONFIG = {  # LLaDA2.1-mini's config.json fields, tiny sizes
    "architectures": ["LLaDA2MoeModelLM"], "model_type": "llada2_moe",
    "auto_map": {"AutoConfig": "configuration_llada2_moe.LLaDA2MoeConfig",
                 "AutoModelForCausalLM": "modeling_llada2_moe.LLaDA2MoeModelLM"},
    "vocab_size": 61, "hidden_size": 32, "intermediate_size": 40, "num_hidden_layers": 3,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "hidden_act": "silu",
    "use_qkv_bias": False, "use_qk_norm": True, "use_bias": False, "rms_norm_eps": 1e-6, "norm_head": False,
    "tie_word_embeddings": False, "max_position_embeddings": 64, "rope_theta": 600000, "rope_scaling": None,
    "partial_rotary_factor": 0.5, "rotary_dim": 4, "num_experts": 8, "num_experts_per_tok": 2,
    "num_shared_experts": 1, "n_group": 4, "topk_group": 2, "routed_scaling_factor": 2.5,
    "moe_intermediate_size": 12, "first_k_dense_replace": 1, "score_function": "sigmoid",
    "moe_router_enable_expert_bias": True, "norm_topk_prob": True, "router_dtype": "fp32",
    "pad_token_id": 60, "use_sliding_window": False, "sliding_window": 4096, "attention_dropout": 0.0,
}


def random_tensors(cfg: dict, seed: int = 0, qkv_bias: bool = False) -> dict[str, torch.Tensor]:
    """LLaDA2-named random tensors for ``cfg``."""
    g = torch.Generator().manual_seed(seed)
    d, heads, kv, dim = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]

    def w(*shape, scale=0.3):
        return scale * torch.randn(*shape, generator=g)

    def norm(n):
        return 1.0 + 0.2 * torch.randn(n, generator=g)

    t = {"model.word_embeddings.weight": w(cfg["vocab_size"], d, scale=1.0), "model.norm.weight": norm(d),
         "lm_head.weight": w(cfg["vocab_size"], d)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        t[p + "input_layernorm.weight"], t[p + "post_attention_layernorm.weight"] = norm(d), norm(d)
        t[p + "attention.query_key_value.weight"] = w((heads + 2 * kv) * dim, d)
        if qkv_bias:
            t[p + "attention.query_key_value.bias"] = w((heads + 2 * kv) * dim)
        t[p + "attention.query_layernorm.weight"], t[p + "attention.key_layernorm.weight"] = norm(dim), norm(dim)
        t[p + "attention.dense.weight"] = w(d, heads * dim)
        mlps = [("mlp.", cfg["intermediate_size"])] if i < cfg["first_k_dense_replace"] else (
            [(f"mlp.experts.{e}.", cfg["moe_intermediate_size"]) for e in range(cfg["num_experts"])]
            + [("mlp.shared_experts.", cfg["moe_intermediate_size"] * cfg["num_shared_experts"])])
        for prefix, inner in mlps:
            t[p + prefix + "gate_proj.weight"], t[p + prefix + "up_proj.weight"] = w(inner, d), w(inner, d)
            t[p + prefix + "down_proj.weight"] = w(d, inner)
        if i >= cfg["first_k_dense_replace"]:
            t[p + "mlp.gate.weight"] = w(cfg["num_experts"], d, scale=1.0)
            t[p + "mlp.gate.expert_bias"] = 0.3 * torch.randn(cfg["num_experts"], generator=g)
    return t


def save_checkpoint(path, cfg: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Two shards and their index; the split falls inside layer 2's experts."""
    names = list(tensors)
    cut = names.index("model.layers.2.mlp.experts.3.up_proj.weight")
    shards = {"model-00001-of-00002.safetensors": names[:cut], "model-00002-of-00002.safetensors": names[cut:]}
    for file, part in shards.items():
        save_file({n: tensors[n].contiguous() for n in part}, str(path / file))
    index = {"weight_map": {n: f for f, part in shards.items() for n in part}}
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    (path / "config.json").write_text(json.dumps(cfg))


# ---- LLaDA2's forward, restated on its own tensors ----


def rms(x, weight, eps):
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def swiglu(t, prefix, x):
    gate, up, down = (t[prefix + n + ".weight"] for n in ("gate_proj", "up_proj", "down_proj"))
    return (torch.nn.functional.silu(x @ gate.T) * (x @ up.T)) @ down.T


def route(cfg, scores, bias):
    """One token's experts and weights: grouped choice on the biased sigmoid scores, weights from the unbiased."""
    biased = scores + bias
    groups = biased.view(cfg["n_group"], -1)
    group_score = groups.topk(2).values.sum(-1)
    kept = group_score.topk(cfg["topk_group"]).indices
    allowed = torch.zeros_like(groups, dtype=torch.bool)
    allowed[kept] = True
    chosen = biased.masked_fill(~allowed.flatten(), -math.inf).topk(cfg["num_experts_per_tok"]).indices
    weight = scores[chosen]
    if cfg["num_experts_per_tok"] > 1:
        weight = weight / (weight.sum() + 1e-20)
    return chosen, weight * cfg["routed_scaling_factor"]


def reference_logits(t, cfg, ids, block, stats=None):
    eps, heads, kv, dim = cfg["rms_norm_eps"], cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    n = len(ids)
    pos = torch.arange(n, dtype=torch.float32)
    rot = int(dim * cfg["partial_rotary_factor"])
    inv = 1.0 / cfg["rope_theta"] ** (torch.arange(0, rot, 2, dtype=torch.float32) / rot)
    angle = pos[:, None] * inv[None]
    cos, sin = torch.cat([angle.cos()] * 2, -1), torch.cat([angle.sin()] * 2, -1)  # [n, rot]

    def rope(x):  # [heads, n, dim]: rotate-half on the first ``rot`` dimensions, the rest passed through
        r, rest = x[..., :rot], x[..., rot:]
        half = torch.cat([-r[..., rot // 2:], r[..., : rot // 2]], -1)
        return torch.cat([r * cos + half * sin, rest], -1)

    allowed = (torch.arange(n)[None] // block) <= (torch.arange(n)[:, None] // block)  # [query, key]
    h = t["model.word_embeddings.weight"][ids]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        x = rms(h, t[p + "input_layernorm.weight"], eps)
        qkv = x @ t[p + "attention.query_key_value.weight"].T
        if p + "attention.query_key_value.bias" in t:
            qkv = qkv + t[p + "attention.query_key_value.bias"]
        qkv = qkv.view(n, heads + 2 * kv, dim)
        q = rms(qkv[:, :heads], t[p + "attention.query_layernorm.weight"], eps).transpose(0, 1)
        k = rms(qkv[:, heads : heads + kv], t[p + "attention.key_layernorm.weight"], eps).transpose(0, 1)
        v = qkv[:, heads + kv :].transpose(0, 1)
        q, k = rope(q), rope(k).repeat_interleave(heads // kv, 0)
        scores = (q @ k.transpose(1, 2) / math.sqrt(dim)).masked_fill(~allowed, -math.inf)
        out = (scores.softmax(-1) @ v.repeat_interleave(heads // kv, 0)).transpose(0, 1).reshape(n, heads * dim)
        h = h + out @ t[p + "attention.dense.weight"].T
        x = rms(h, t[p + "post_attention_layernorm.weight"], eps)
        if i < cfg["first_k_dense_replace"]:
            h = h + swiglu(t, p + "mlp.", x)
            continue
        sig = torch.sigmoid(x.float() @ t[p + "mlp.gate.weight"].float().T)  # [n, E]
        y = swiglu(t, p + "mlp.shared_experts.", x)
        for j in range(n):
            chosen, weight = route(cfg, sig[j], t[p + "mlp.gate.expert_bias"])
            if stats is not None:
                stats.append((sig[j], t[p + "mlp.gate.expert_bias"], chosen))
            for e, we in zip(chosen.tolist(), weight):
                y[j] = y[j] + we * swiglu(t, f"{p}mlp.experts.{e}.", x[j])
        h = h + y
    return rms(h, t["model.norm.weight"], eps) @ t["lm_head.weight"].T


@pytest.mark.parametrize("qkv_bias", [False, True])
def test_mapped_model_gives_llada2s_logits(tmp_path, qkv_bias):
    cfg = dict(CONFIG, use_qkv_bias=qkv_bias)
    tensors = random_tensors(cfg, seed=1, qkv_bias=qkv_bias)
    save_checkpoint(tmp_path, cfg, tensors)
    model = build_llada2(tmp_path, json.loads((tmp_path / "config.json").read_text()), torch.device("cpu"),
                         torch.float32)
    ids, block = torch.randint(0, cfg["vocab_size"], (11,), generator=torch.Generator().manual_seed(2)), 4
    stats: list = []
    want = reference_logits(tensors, cfg, ids, block, stats)
    allowed = (torch.arange(11)[None] // block) <= (torch.arange(11)[:, None] // block)
    with torch.no_grad():
        got = model(input_ids=ids[None], attention_mask=allowed[None, None], position_ids=torch.arange(11)[None]).logits[0]
    scale = want.abs().max()
    assert torch.allclose(got, want, rtol=0, atol=2e-5 * scale), float((got - want).abs().max() / scale)
    # the routing details are exercised: the group limit and the bias each change some token's experts
    no_groups = [set((s + b).topk(2).indices.tolist()) != set(c.tolist()) for s, b, c in stats]
    no_bias = [set(route(dict(cfg), s, torch.zeros_like(b))[0].tolist()) != set(c.tolist()) for s, b, c in stats]
    assert any(no_groups) and any(no_bias)
    # and the block-causal mask matters: attending to every position changes the logits
    with torch.no_grad():
        full = model(input_ids=ids[None], attention_mask=torch.ones(1, 1, 11, 11, dtype=torch.bool),
                     position_ids=torch.arange(11)[None]).logits[0]
    assert (full - want).abs().max() > 1e-3 * scale


def test_config_maps_the_fields_that_shape_the_model():
    c = llada2_config(CONFIG)
    assert (c.head_dim, c.num_key_value_heads, c.n_routed_experts, c.n_shared_experts) == (8, 2, 8, 1)
    assert c.rope_parameters["partial_rotary_factor"] == 0.5 and c.rope_parameters["rope_theta"] == 600000
    assert (c.n_group, c.topk_group, c.num_experts_per_tok, c.first_k_dense_replace) == (4, 2, 2, 1)
    assert c.norm_topk_prob and c.use_qk_norm and not c.attention_bias
    assert not llada2_config(dict(CONFIG, num_experts_per_tok=1)).norm_topk_prob  # one expert: its raw score


@pytest.mark.parametrize(("key", "value"), [("use_bias", True), ("use_qk_norm", False), ("score_function", "softmax"),
                                            ("rope_scaling", {"type": "linear", "factor": 2.0})])
def test_config_refuses_what_the_mapping_does_not_reproduce(key, value):
    with pytest.raises(ValueError, match=f"LLaDA2 config {key}="):
        llada2_config(dict(CONFIG, **{key: value}))


def test_unknown_and_missing_tensors_are_refused(tmp_path):
    c = llada2_config(CONFIG)
    with pytest.raises(ValueError, match="unexpected tensor"):
        llada2_tensors("model.layers.0.attention.rotary.weight", torch.zeros(1), c)
    with pytest.raises(ValueError, match="rows"):
        llada2_tensors("model.layers.0.attention.query_key_value.weight", torch.zeros(5, 32), c)
    tensors = random_tensors(CONFIG)
    del tensors["model.layers.1.mlp.experts.5.down_proj.weight"]
    save_checkpoint(tmp_path, CONFIG, tensors)
    with pytest.raises(ValueError, match=r"lacks tensors: \['model.layers.1.mlp.experts.down_proj\[5\]'\]"):
        build_llada2(tmp_path, CONFIG, torch.device("cpu"), torch.float32)


def test_family_detection_and_block_size():
    assert detect_family(CONFIG) is LLADA2 and LLADA2.attention == "block_causal"
    assert LLADA2.block_size(CONFIG) == 32 and LLADA2.block_size(dict(CONFIG, block_size=16)) == 16
    with pytest.raises(ValueError, match="block_size must be a positive int"):
        LLADA2.block_size(dict(CONFIG, block_size=0))
    assert type(hf_config(CONFIG, LLADA2)).__name__ == "Glm4MoeConfig"  # run natively (test_llada2_generate.py)
