"""LLaDA2.x checkpoints (inclusionAI LLaDA2.0 / LLaDA2.1, ``model_type: llada2_moe``) in transformers' ``Glm4MoeForCausalLM``.

LLaDA2's block (``modeling_llada2_moe.py``, a BailingMoeV2 / Ling 2.0 block run
block-causally) is, up to tensor names, GLM-4-MoE's:

- attention: one fused ``query_key_value`` projection whose rows are the query
  heads, then the key heads, then the value heads (bias when
  ``use_qkv_bias``); RMSNorm over each head's dimension on queries and keys
  (``query_layernorm`` / ``key_layernorm``) before a rotary embedding on the
  first ``partial_rotary_factor * head_dim`` dimensions (rotate-half,
  ``inv_freq = theta^(-2i / rotary_dim)``); scale ``head_dim ** -0.5``; output
  ``dense`` without bias;
- feed-forward: the first ``first_k_dense_replace`` layers a SwiGLU MLP, the
  others a mixture of experts: router logits in float32, ``sigmoid`` scores,
  plus ``expert_bias`` for the choice only; experts in ``n_group`` groups, a
  group scored by the sum of its two best biased scores, the ``topk_group``
  best groups kept, the ``num_experts_per_tok`` best biased scores among them
  chosen; weights = the chosen unbiased scores, divided by their sum (plus
  1e-20) when more than one expert is chosen, times ``routed_scaling_factor``;
  plus ``num_shared_experts`` shared SwiGLU experts always on;
- RMSNorm before attention and feed-forward, final RMSNorm, untied LM head;
  logits aligned (position i predicts token i).

``Glm4MoeAttention`` has the same q/k norms and partial rotary embedding,
``Glm4MoeTopkRouter`` the same grouped sigmoid routing with its score
correction bias, ``Glm4MoeExperts`` the experts as stacked ``gate_up_proj``
``[E, 2I, d]`` / ``down_proj`` ``[E, d, I]``. So only names and layouts change:
the fused projection is cut into ``q_proj`` / ``k_proj`` / ``v_proj``, and each
expert's three matrices are written into its slice of the stacked tensors.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from transformers import Glm4MoeConfig, Glm4MoeForCausalLM

# config.json fields whose value must be the one below for the mapping to be exact
_REQUIRED = {"use_bias": False, "use_qk_norm": True, "score_function": "sigmoid", "rope_scaling": None,
             "use_sliding_window": False, "norm_head": False}
_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")

_LAYER_RE = re.compile(r"model\.layers\.(\d+)\.(.+)")
_EXPERT_RE = re.compile(r"mlp\.experts\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight")
_SAME = re.compile(r"(input_layernorm|post_attention_layernorm)\.weight|mlp\.(gate_proj|up_proj|down_proj)\.weight"
                   r"|mlp\.shared_experts\.(gate_proj|up_proj|down_proj)\.weight|mlp\.gate\.weight")
_ATTN = {"attention.query_layernorm.weight": "self_attn.q_norm.weight",
         "attention.key_layernorm.weight": "self_attn.k_norm.weight",
         "attention.dense.weight": "self_attn.o_proj.weight",
         "mlp.gate.expert_bias": "mlp.gate.e_score_correction_bias"}
_TOP = {"model.word_embeddings.weight": "model.embed_tokens.weight", "model.norm.weight": "model.norm.weight",
        "lm_head.weight": "lm_head.weight"}


def llada2_config(raw: dict[str, Any]) -> Glm4MoeConfig:
    """A ``Glm4MoeConfig`` equivalent to a LLaDA2 ``config.json`` dict; ``ValueError`` for what the mapping lacks."""
    for key, want in _REQUIRED.items():
        got = raw.get(key, want)
        if got != want:
            raise ValueError(f"LLaDA2 config {key}={got!r} is not supported by the native path (it needs {want!r}); "
                             "load with native=False to run the checkpoint's own code")
    missing = [k for k in _FIELDS if raw.get(k) is None]
    if missing:
        raise ValueError(f"LLaDA2 config.json lacks {missing}")
    heads = int(raw["num_attention_heads"])
    moe = raw.get("num_experts") is not None
    top_k = int(raw.get("num_experts_per_tok", 1))
    return Glm4MoeConfig(
        vocab_size=int(raw["vocab_size"]),
        hidden_size=int(raw["hidden_size"]),
        intermediate_size=int(raw["intermediate_size"]),
        num_hidden_layers=int(raw["num_hidden_layers"]),
        num_attention_heads=heads,
        num_key_value_heads=int(raw.get("num_key_value_heads") or heads),  # 0 in the config class: one per head
        head_dim=int(raw.get("head_dim") or int(raw["hidden_size"]) // heads),
        hidden_act=raw.get("hidden_act", "silu"),
        max_position_embeddings=int(raw.get("max_position_embeddings", 16384)),
        rms_norm_eps=float(raw.get("rms_norm_eps", 1e-5)),
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
        rope_parameters={"rope_type": "default", "rope_theta": float(raw.get("rope_theta", 10000.0)),
                         "partial_rotary_factor": float(raw.get("partial_rotary_factor", 0.5))},
        attention_bias=bool(raw.get("use_qkv_bias", False)),
        use_qk_norm=True,
        n_routed_experts=int(raw["num_experts"]) if moe else 1,
        num_experts_per_tok=top_k,
        n_shared_experts=int(raw.get("num_shared_experts") or 0),
        moe_intermediate_size=int(raw.get("moe_intermediate_size") or 1),
        n_group=int(raw.get("n_group", 1)),
        topk_group=int(raw.get("topk_group", 1)),
        routed_scaling_factor=float(raw.get("routed_scaling_factor", 1.0)),
        norm_topk_prob=top_k > 1,  # LLaDA2's gate divides by the sum whenever it picks more than one expert
        first_k_dense_replace=int(raw.get("first_k_dense_replace", 0)) if moe else int(raw["num_hidden_layers"]),
        num_mtp_layers=0,
    )


def llada2_tensors(name: str, tensor: torch.Tensor, config: Glm4MoeConfig) -> list[tuple[str, torch.Tensor]]:
    """The ``Glm4MoeForCausalLM`` tensors of one LLaDA2 checkpoint tensor (``ValueError`` for an unknown name).

    The fused ``query_key_value`` gives three; an expert's matrix gives one entry named
    ``model.layers.{i}.mlp.experts.{gate_up_proj|down_proj}[{e}]`` (a slice: gate rows first, then up rows),
    which :func:`load_llada2_weights` writes into the stacked tensor.
    """
    if name in _TOP:
        return [(_TOP[name], tensor)]
    m = _LAYER_RE.fullmatch(name)
    if m:
        layer, rest = m.group(1), m.group(2)
        prefix = f"model.layers.{layer}."
        if rest in ("attention.query_key_value.weight", "attention.query_key_value.bias"):
            q = config.num_attention_heads * config.head_dim
            kv = config.num_key_value_heads * config.head_dim
            if tensor.shape[0] != q + 2 * kv:
                raise ValueError(f"{name} has {tensor.shape[0]} rows; {config.num_attention_heads} query and "
                                 f"{config.num_key_value_heads} key/value heads of {config.head_dim} need {q + 2 * kv}")
            kind = rest.rsplit(".", 1)[1]
            parts = tensor.split([q, kv, kv], dim=0)
            return [(f"{prefix}self_attn.{p}_proj.{kind}", t) for p, t in zip("qkv", parts)]
        if rest in _ATTN:
            return [(prefix + _ATTN[rest], tensor)]
        if _SAME.fullmatch(rest):
            return [(name, tensor)]
        e = _EXPERT_RE.fullmatch(rest)
        if e:
            stacked = "down_proj" if e.group(2) == "down_proj" else "gate_up_proj"
            return [(f"{prefix}mlp.experts.{stacked}[{e.group(1)}]", tensor)]
    raise ValueError(f"unexpected tensor {name!r} in a LLaDA2 checkpoint (known: model.word_embeddings, "
                     "model.layers.*.{attention,mlp,*_layernorm}, model.norm, lm_head)")


_SLICE_RE = re.compile(r"(.+)\[(\d+)\]")


def load_llada2_weights(model: Glm4MoeForCausalLM, shards, device: torch.device, dtype: torch.dtype) -> None:
    """Fill a meta-device ``Glm4MoeForCausalLM`` from LLaDA2 shards (``{name: tensor}`` dicts, one at a time).

    The stacked expert tensors are allocated on ``device`` first and each expert's matrices copied into their
    slices as their shard arrives; a missing tensor or expert matrix raises ``ValueError``. The score correction
    bias defaults to 0 where the checkpoint has no ``expert_bias`` (``moe_router_enable_expert_bias: false``).
    """
    config = model.config
    inter = config.moe_intermediate_size
    stacked: dict[str, torch.Tensor] = {}
    filled: set[tuple[str, int, int]] = set()
    for i, layer in enumerate(model.model.layers):
        if i < config.first_k_dense_replace:
            continue
        experts = layer.mlp.experts
        for attr in ("gate_up_proj", "down_proj"):
            param = torch.nn.Parameter(torch.empty(getattr(experts, attr).shape, device=device, dtype=dtype),
                                       requires_grad=False)
            setattr(experts, attr, param)
            stacked[f"model.layers.{i}.mlp.experts.{attr}"] = param.data
        layer.mlp.gate.e_score_correction_bias = torch.zeros(config.num_local_experts, device=device)
    unexpected: list[str] = []
    for shard in shards:
        direct = {}
        for name, tensor in shard.items():
            for new, t in llada2_tensors(name, tensor, config):
                m = _SLICE_RE.fullmatch(new)
                if not m:
                    direct[new] = t
                    continue
                target, e = stacked.get(m.group(1)), int(m.group(2))
                if target is None or e >= target.shape[0]:
                    unexpected.append(name)
                    continue
                if m.group(1).endswith("down_proj"):
                    target[e].copy_(t)
                    filled.add((m.group(1), e, 0))
                else:
                    half = 0 if name.endswith("gate_proj.weight") else 1
                    target[e, half * inter : (half + 1) * inter].copy_(t)
                    filled.add((m.group(1), e, half))
        bias = {k: v.float() for k, v in direct.items() if k.endswith("e_score_correction_bias")}
        direct = {k: v for k, v in direct.items() if k not in bias}
        try:
            unexpected += model.load_state_dict(direct, strict=False, assign=True).unexpected_keys
        except RuntimeError as err:  # size mismatches
            raise ValueError(f"LLaDA2 checkpoint does not match its config.json: {err}") from err
        for k, v in bias.items():
            module = model.get_submodule(k.rsplit(".", 1)[0])
            module.e_score_correction_bias = v.to(device)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    if unexpected:
        raise ValueError(f"LLaDA2 checkpoint has tensors the mapped model does not: {unexpected[:5]}")
    want = {(k, e, h) for k, t in stacked.items() for e in range(t.shape[0]) for h in ((0,) if "down" in k else (0, 1))}
    missing = [n for n, p in model.named_parameters() if p.is_meta] + sorted(f"{k}[{e}]" for k, e, _ in want - filled)
    if missing:
        raise ValueError(f"LLaDA2 checkpoint lacks tensors: {missing[:5]}{' ...' if len(missing) > 5 else ''}")


def build_llada2(path: Path, raw: dict[str, Any], device: torch.device, dtype: torch.dtype) -> Glm4MoeForCausalLM:
    """The ``Glm4MoeForCausalLM`` of a LLaDA2 checkpoint directory, weights streamed onto ``device`` in ``dtype``."""
    from .loading import finish_model, iter_shards, weight_files

    config = llada2_config(raw)
    config._attn_implementation = "sdpa"
    with torch.device("meta"):
        model = Glm4MoeForCausalLM(config)
    load_llada2_weights(model, iter_shards(weight_files(path), device, dtype), device, dtype)
    return finish_model(model, device)
