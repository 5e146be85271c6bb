"""Tiny random checkpoints on disk in the real layouts (LLaDA, Dream), built offline once per session.

Each builder writes ``config.json``, safetensors weights under the real tensor
names, and a word-level tokenizer whose special tokens sit at the ids the
config names (the real ids for the real-vocabulary variants). Builders are
cached, so every test module shares one copy per process.
"""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

# These models are tiny: with 2 OpenMP threads on a shared 2-core machine every op waits on the
# other (busy) core, and a 64x64 matmul takes ~20 ms instead of ~5 us. One thread keeps tests fast.
torch.set_num_threads(1)

ROOT = Path(tempfile.mkdtemp(prefix="unmask-test-models-"))
atexit.register(shutil.rmtree, ROOT, True)

WORDS = ["hello", "world", "the", "cat", "sat", "on", "a", "mat", "user", "assistant", "system", "is", "what", "2+2", "?"]

LLADA_REAL = {"<|startoftext|>": 126080, "<|endoftext|>": 126081, "<|mdm_mask|>": 126336,
              "<|start_header_id|>": 126346, "<|end_header_id|>": 126347, "<|eot_id|>": 126348}
DREAM_REAL = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<|mask|>": 151666}
LLADA_SMALL = {"<|startoftext|>": 90, "<|endoftext|>": 91, "<|mdm_mask|>": 92,
               "<|start_header_id|>": 93, "<|end_header_id|>": 94, "<|eot_id|>": 95}
DREAM_SMALL = {"<|endoftext|>": 91, "<|im_start|>": 92, "<|im_end|>": 93, "<|mask|>": 94}

LLADA_TEMPLATE = (
    "{% for message in messages %}{% if loop.index0 == 0 %}{{ bos_token }}{% endif %}"
    "<|start_header_id|> {{ message['role'] }} <|end_header_id|> {{ message['content'] }} <|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|> assistant <|end_header_id|> {% endif %}"
)
DREAM_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|> system hello <|im_end|> {% endif %}"
    "<|im_start|> {{ message['role'] }} {{ message['content'] }} <|im_end|> {% endfor %}"
    "{% if add_generation_prompt %}<|im_start|> assistant {% endif %}"
)


MASK_TOKENS = {"llada": "<|mdm_mask|>", "dream": "<|mask|>", "sdar": "<|MASK|>", "fast_dllm_v2": "|<MASK>|",
               "llada2": "<|mask|>"}
SDAR_SMALL = {"<|endoftext|>": 91, "<|im_start|>": 92, "<|im_end|>": 93, "<|MASK|>": 94}
FAST_DLLM_SMALL = {"<|endoftext|>": 91, "<|im_start|>": 92, "<|im_end|>": 93, "|<MASK>|": 94}


def write_tokenizer(path: Path, specials: dict[str, int], vocab_size: int, family: str, instruct: bool,
                    with_mask: bool = True) -> None:
    """A word-level tokenizer: ids 1.. are WORDS then ``t{id}`` fillers (below 100), specials at their own ids."""
    vocab = {"<unk>": 0}
    for i in range(1, min(vocab_size, 100)):
        if i not in specials.values():
            vocab[WORDS[i - 1] if i <= len(WORDS) else f"t{i}"] = i
    mask_token = MASK_TOKENS[family]
    specials = {k: v for k, v in specials.items() if with_mask or k != mask_token}
    vocab.update(specials)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(list(specials))
    kwargs = dict(unk_token="<unk>", eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    if family == "llada":
        kwargs["bos_token"] = "<|startoftext|>"
    if with_mask:
        kwargs["mask_token"] = mask_token
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)
    if instruct:
        fast.chat_template = LLADA_TEMPLATE if family == "llada" else DREAM_TEMPLATE
    fast.save_pretrained(str(path))


def _randn(g: torch.Generator, *shape: int, std: float) -> torch.Tensor:
    return torch.randn(*shape, generator=g) * std


def _norm(g: torch.Generator, d: int) -> torch.Tensor:
    return 1.0 + 0.1 * torch.randn(d, generator=g)


def _save(path: Path, tensors: dict[str, torch.Tensor], shards: int) -> None:
    names = list(tensors)
    if shards == 1:
        save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
        return
    weight_map = {}
    for s in range(shards):
        file = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: tensors[n].contiguous() for n in names[s::shards]}
        save_file(part, str(path / file), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, file))
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def write_llada(path: Path, *, vocab: int = 126464, d: int = 64, layers: int = 2, heads: int = 4, mlp: int = 128,
                specials: dict[str, int] = LLADA_REAL, instruct: bool = True, tied: bool = False, shards: int = 2,
                std: float = 0.02, seed: int = 0, with_mask: bool = True, max_len: int = 4096) -> Path:
    """A LLaDA-layout checkpoint (``model.transformer.*`` names, ``config.json`` fields of LLaDA-8B)."""
    path.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    t: dict[str, torch.Tensor] = {"model.transformer.wte.weight": _randn(g, vocab, d, std=std * 25)}
    for i in range(layers):
        b = f"model.transformer.blocks.{i}."
        t[b + "attn_norm.weight"] = _norm(g, d)
        for name in ("q_proj", "k_proj", "v_proj", "attn_out"):
            t[b + name + ".weight"] = _randn(g, d, d, std=d**-0.5)
        t[b + "ff_norm.weight"] = _norm(g, d)
        t[b + "ff_proj.weight"] = _randn(g, mlp, d, std=d**-0.5)
        t[b + "up_proj.weight"] = _randn(g, mlp, d, std=d**-0.5)
        t[b + "ff_out.weight"] = _randn(g, d, mlp, std=mlp**-0.5)
    t["model.transformer.ln_f.weight"] = _norm(g, d)
    if not tied:
        t["model.transformer.ff_out.weight"] = _randn(g, vocab, d, std=std * 25)
    _save(path, t, shards)
    config = {
        "architectures": ["LLaDAModelLM"], "model_type": "llada", "activation_type": "silu", "alibi": False,
        "block_type": "llama", "d_model": d, "n_heads": heads, "n_kv_heads": heads, "n_layers": layers,
        "mlp_hidden_size": mlp, "mlp_ratio": 4, "vocab_size": vocab, "embedding_size": vocab,
        "max_sequence_length": max_len, "rms_norm_eps": 1e-5, "rope": True, "rope_theta": 500000.0,
        "include_bias": False, "include_qkv_bias": False, "layer_norm_type": "rms", "weight_tying": tied,
        "eos_token_id": specials["<|endoftext|>"], "pad_token_id": specials["<|endoftext|>"], "scale_logits": False,
        "auto_map": {"AutoConfig": "configuration_llada.LLaDAConfig", "AutoModel": "modeling_llada.LLaDAModelLM"},
    }
    if with_mask:
        config["mask_token_id"] = specials["<|mdm_mask|>"]
    (path / "config.json").write_text(json.dumps(config, indent=2))
    write_tokenizer(path, specials, vocab, "llada", instruct, with_mask)
    return path


def write_dream(path: Path, *, vocab: int = 151667, d: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2,
                mlp: int = 128, specials: dict[str, int] = DREAM_REAL, instruct: bool = True, shards: int = 1,
                std: float = 0.02, seed: int = 1) -> Path:
    """A Dream-layout checkpoint (Qwen2 names with q/k/v biases, ``model_type: Dream``)."""
    path.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    hd = d // heads
    t: dict[str, torch.Tensor] = {"model.embed_tokens.weight": _randn(g, vocab, d, std=std * 25)}
    for i in range(layers):
        b = f"model.layers.{i}."
        t[b + "input_layernorm.weight"] = _norm(g, d)
        t[b + "self_attn.q_proj.weight"] = _randn(g, heads * hd, d, std=d**-0.5)
        t[b + "self_attn.q_proj.bias"] = _randn(g, heads * hd, std=0.1)
        for name in ("k_proj", "v_proj"):
            t[b + f"self_attn.{name}.weight"] = _randn(g, kv_heads * hd, d, std=d**-0.5)
            t[b + f"self_attn.{name}.bias"] = _randn(g, kv_heads * hd, std=0.1)
        t[b + "self_attn.o_proj.weight"] = _randn(g, d, heads * hd, std=d**-0.5)
        t[b + "post_attention_layernorm.weight"] = _norm(g, d)
        t[b + "mlp.gate_proj.weight"] = _randn(g, mlp, d, std=d**-0.5)
        t[b + "mlp.up_proj.weight"] = _randn(g, mlp, d, std=d**-0.5)
        t[b + "mlp.down_proj.weight"] = _randn(g, d, mlp, std=mlp**-0.5)
    t["model.norm.weight"] = _norm(g, d)
    t["lm_head.weight"] = _randn(g, vocab, d, std=std * 25)
    _save(path, t, shards)
    config = {
        "architectures": ["DreamModel"], "model_type": "Dream", "hidden_act": "silu", "hidden_size": d,
        "intermediate_size": mlp, "num_hidden_layers": layers, "num_attention_heads": heads,
        "num_key_value_heads": kv_heads, "vocab_size": vocab, "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": False, "use_sliding_window": False,
        "sliding_window": None, "rope_scaling": None, "mask_token_id": specials["<|mask|>"],
        "eos_token_id": specials["<|endoftext|>"], "pad_token_id": specials["<|endoftext|>"],
        "bos_token_id": specials["<|endoftext|>"],
        "auto_map": {"AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"},
    }
    (path / "config.json").write_text(json.dumps(config, indent=2))
    write_tokenizer(path, specials, vocab, "dream", instruct)
    return path


@functools.cache
def llada_real() -> Path:
    """LLaDA layout, real vocabulary (126464) and ids, 2 layers, d_model 64, 2 shards, instruct template."""
    return write_llada(ROOT / "llada-real")


@functools.cache
def dream_real() -> Path:
    """Dream layout, vocabulary 151667 with the real ids, 2 layers, hidden 64, GQA 4/2, one file."""
    return write_dream(ROOT / "dream-real")


@functools.cache
def llada_small() -> Path:
    """LLaDA layout with a 96-token vocabulary (specials at 90..95) for fast generation tests."""
    return write_llada(ROOT / "llada-small", vocab=96, specials=LLADA_SMALL, std=0.1, instruct=False, max_len=128)


@functools.cache
def dream_small() -> Path:
    """Dream layout with a 96-token vocabulary (specials at 91..94) for fast generation tests."""
    return write_dream(ROOT / "dream-small", vocab=96, specials=DREAM_SMALL, std=0.1)


GEMMA_SPECIALS = {"<pad>": 0, "<eos>": 1, "<bos>": 2}


def write_diffusion_gemma(path: Path, *, moe: bool, vocab: int = 96, d: int = 32, canvas: int = 8, seed: int = 0,
                          init_std: float = 0.3) -> Path:
    """A tiny random ``DiffusionGemmaForBlockDiffusion`` saved by transformers itself (its own config and tensor names).

    Every DiffusionGemma layer runs a dense MLP beside a routed expert block (the
    26B-A4B layout); ``moe=False`` gives one expert chosen for every token (the
    routing is trivial), ``moe=True`` four experts, two per token, and a third
    layer. Sliding-window layers (window 6) sit before a last full-attention
    layer with its own head size and one key/value head, as in the real config.
    ``init_std`` 0.3 (transformers' default is 0.02) makes the predictions peaked
    enough that entropy-bound acceptance takes between one and all positions.
    """
    from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion

    path.mkdir(parents=True, exist_ok=True)
    layers = ["sliding_attention", "sliding_attention", "full_attention"] if moe else ["sliding_attention", "full_attention"]
    text = dict(vocab_size=vocab, hidden_size=d, intermediate_size=2 * d, num_hidden_layers=len(layers),
                layer_types=layers, num_attention_heads=4, num_key_value_heads=2, head_dim=8, global_head_dim=16,
                num_global_key_value_heads=1, sliding_window=6, num_experts=4 if moe else 1,
                top_k_experts=2 if moe else 1, moe_intermediate_size=d // 2, max_position_embeddings=512,
                pad_token_id=0, eos_token_id=1, bos_token_id=2, use_bidirectional_attention="vision",
                initializer_range=init_std)
    vision = dict(model_type="gemma4_vision", hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                  num_attention_heads=2, num_key_value_heads=2, head_dim=8, position_embedding_size=64)
    config = DiffusionGemmaConfig(text_config=text, vision_config=vision, canvas_length=canvas, boi_token_id=vocab - 3,
                                  eoi_token_id=vocab - 2, image_token_id=vocab - 1, initializer_range=init_std)
    torch.manual_seed(seed)
    model = DiffusionGemmaForBlockDiffusion(config).eval()
    model.save_pretrained(str(path))
    vocab_map = {"<unk>": 3, **GEMMA_SPECIALS}
    vocab_map.update({(WORDS[i - 4] if i - 4 < len(WORDS) else f"t{i}"): i for i in range(4, vocab)})
    tok = Tokenizer(models.WordLevel(vocab_map, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(list(GEMMA_SPECIALS))
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<eos>", pad_token="<pad>",
                            bos_token="<bos>").save_pretrained(str(path))
    return path


def write_qwen_block(path: Path, family: str, *, vocab: int = 96, d: int = 64, layers: int = 2, heads: int = 4,
                     kv_heads: int = 2, mlp: int = 128, specials: dict[str, int] | None = None,
                     block: int | None = None, std: float = 0.1, embed_std: float = 0.5, seed: int = 2) -> Path:
    """A block-diffusion checkpoint in its real layout: SDAR (``family="sdar"``: Qwen3 names with per-head
    ``q_norm``/``k_norm``, no q/k/v bias, ``model_type: sdar``, no block size field unless ``block``) or
    Fast-dLLM v2 (``"fast_dllm_v2"``: Qwen2 names with q/k/v biases, ``model_type: Fast_dLLM_Qwen``,
    ``bd_size``)."""
    sdar = family == "sdar"
    specials = specials or (SDAR_SMALL if sdar else FAST_DLLM_SMALL)
    path.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    hd = d // heads
    t: dict[str, torch.Tensor] = {"model.embed_tokens.weight": _randn(g, vocab, d, std=embed_std)}
    for i in range(layers):
        b = f"model.layers.{i}."
        t[b + "input_layernorm.weight"] = _norm(g, d)
        t[b + "self_attn.q_proj.weight"] = _randn(g, heads * hd, d, std=d**-0.5)
        for name in ("k_proj", "v_proj"):
            t[b + f"self_attn.{name}.weight"] = _randn(g, kv_heads * hd, d, std=d**-0.5)
        if sdar:
            t[b + "self_attn.q_norm.weight"] = _norm(g, hd)
            t[b + "self_attn.k_norm.weight"] = _norm(g, hd)
        else:
            t[b + "self_attn.q_proj.bias"] = _randn(g, heads * hd, std=0.1)
            for name in ("k_proj", "v_proj"):
                t[b + f"self_attn.{name}.bias"] = _randn(g, kv_heads * hd, std=0.1)
        t[b + "self_attn.o_proj.weight"] = _randn(g, d, heads * hd, std=d**-0.5)
        t[b + "post_attention_layernorm.weight"] = _norm(g, d)
        t[b + "mlp.gate_proj.weight"] = _randn(g, mlp, d, std=d**-0.5)
        t[b + "mlp.up_proj.weight"] = _randn(g, mlp, d, std=d**-0.5)
        t[b + "mlp.down_proj.weight"] = _randn(g, d, mlp, std=mlp**-0.5)
    t["model.norm.weight"] = _norm(g, d)
    t["lm_head.weight"] = _randn(g, vocab, d, std=std * 25)
    _save(path, t, 1)
    config = {
        "hidden_act": "silu", "hidden_size": d, "intermediate_size": mlp, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv_heads, "vocab_size": vocab,
        "max_position_embeddings": 512, "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": False,
        "use_sliding_window": False, "sliding_window": None, "rope_scaling": None,
        "eos_token_id": specials["<|im_end|>"], "pad_token_id": specials["<|endoftext|>"],
        "bos_token_id": specials["<|endoftext|>"], "torch_dtype": "bfloat16",
    }
    if sdar:
        config.update({"architectures": ["SDARForCausalLM"], "model_type": "sdar", "head_dim": hd,
                       "attention_bias": False, "attention_dropout": 0.0,
                       "auto_map": {"AutoConfig": "configuration_sdar.SDARConfig",
                                    "AutoModelForCausalLM": "modeling_sdar.SDARForCausalLM"}})
        if block is not None:
            config["block_size"] = block
    else:
        config.update({"architectures": ["Fast_dLLM_QwenForCausalLM"], "model_type": "Fast_dLLM_Qwen",
                       "bd_size": 32 if block is None else block,
                       "auto_map": {"AutoConfig": "configuration.Fast_dLLM_QwenConfig",
                                    "AutoModelForCausalLM": "modeling.Fast_dLLM_QwenForCausalLM"}})
    (path / "config.json").write_text(json.dumps(config, indent=2))
    write_tokenizer(path, specials, vocab, family, True)
    return path


@functools.cache
def diffusion_gemma_dense() -> Path:
    """DiffusionGemma layout, vocabulary 96, hidden 32, 2 layers, one expert, canvas 8."""
    return write_diffusion_gemma(ROOT / "diffusion-gemma-dense", moe=False)


@functools.cache
def diffusion_gemma_moe() -> Path:
    """DiffusionGemma layout, vocabulary 96, hidden 32, 3 layers, 4 experts (top 2), canvas 8."""
    return write_diffusion_gemma(ROOT / "diffusion-gemma-moe", moe=True, seed=1)


@functools.cache
def sdar_small() -> Path:
    """SDAR layout (Qwen3 with q/k norms), 96-token vocabulary, block size 4 (the family default), GQA 4/2."""
    return write_qwen_block(ROOT / "sdar-small", "sdar", seed=3)


@functools.cache
def fast_dllm_small() -> Path:
    """Fast-dLLM v2 layout (Qwen2 with q/k/v biases), 96-token vocabulary, ``bd_size`` 8."""
    return write_qwen_block(ROOT / "fast-dllm-small", "fast_dllm_v2", block=8, seed=3)
