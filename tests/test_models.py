"""Loading real checkpoint layouts (tiny random LLaDA and Dream on disk) into the native adapter."""

import json
import math
import shutil

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

import model_fixtures as mf
from unmask import CachingDenoiser, GenerationConfig, generate
from unmask.models import FAMILIES, NativeDenoiser, convert, detect_family, encode_prompts, load


def raw_weights(path):
    out = {}
    for file in sorted(path.glob("*.safetensors")):
        out.update({k: v.float() for k, v in load_file(str(file)).items()})
    return out


def reference_forward(w, ids, *, layers, heads, kv_heads, theta, eps, names):
    """A plain bidirectional LLaMA-style forward: RMSNorm, RoPE (rotate-half), softmax attention, SwiGLU."""
    x = w[names("embed")][ids]  # [T, d]
    t, d = x.shape
    hd = d // heads
    inv = 1.0 / theta ** (torch.arange(0, hd, 2).float() / hd)
    ang = torch.outer(torch.arange(t).float(), inv)  # [T, hd/2]
    cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()

    def rms(v, weight):
        return weight * v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + eps)

    def rope(v):  # [H, T, hd]
        v1, v2 = v[..., : hd // 2], v[..., hd // 2 :]
        return v * cos + torch.cat([-v2, v1], -1) * sin

    def proj(v, i, part):
        out = v @ w[names(part, i)].T
        bias = names(part, i).replace(".weight", ".bias")
        return out + w[bias] if bias in w else out

    for i in range(layers):
        h = rms(x, w[names("attn_norm", i)])
        q = rope(proj(h, i, "q").view(t, heads, hd).transpose(0, 1))
        k = rope(proj(h, i, "k").view(t, kv_heads, hd).transpose(0, 1)).repeat_interleave(heads // kv_heads, 0)
        v = proj(h, i, "v").view(t, kv_heads, hd).transpose(0, 1).repeat_interleave(heads // kv_heads, 0)
        att = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(hd), -1)  # no mask: bidirectional
        x = x + proj((att @ v).transpose(0, 1).reshape(t, d), i, "o")
        h = rms(x, w[names("ff_norm", i)])
        x = x + proj(F.silu(proj(h, i, "gate")) * proj(h, i, "up"), i, "down")
    return rms(x, w[names("norm")]) @ w[names("head")].T  # [T, V]


LLADA_NAMES = {"embed": "model.transformer.wte.weight", "norm": "model.transformer.ln_f.weight",
               "head": "model.transformer.ff_out.weight", "attn_norm": "attn_norm", "q": "q_proj", "k": "k_proj",
               "v": "v_proj", "o": "attn_out", "ff_norm": "ff_norm", "gate": "ff_proj", "up": "up_proj", "down": "ff_out"}
DREAM_NAMES = {"embed": "model.embed_tokens.weight", "norm": "model.norm.weight", "head": "lm_head.weight",
               "attn_norm": "input_layernorm", "q": "self_attn.q_proj", "k": "self_attn.k_proj",
               "v": "self_attn.v_proj", "o": "self_attn.o_proj", "ff_norm": "post_attention_layernorm",
               "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}


def llada_names(part, i=None):
    return LLADA_NAMES[part] if i is None else f"model.transformer.blocks.{i}.{LLADA_NAMES[part]}.weight"


def dream_names(part, i=None):
    return DREAM_NAMES[part] if i is None else f"model.layers.{i}.{DREAM_NAMES[part]}.weight"


@pytest.fixture(scope="module")
def llada():
    return load(mf.llada_real(), device="cpu", dtype=torch.float32)


@pytest.fixture(scope="module")
def dream():
    return load(mf.dream_real(), device="cpu", dtype=torch.float32)


def canvas(ids):
    x = torch.tensor([ids])
    return x, torch.ones_like(x, dtype=torch.bool), torch.arange(x.shape[1]).unsqueeze(0)


def test_llada_matches_reference_forward(llada):
    den, _ = llada
    ids = [126080, 5, 9, 3, 126336, 126336, 126336, 7]
    ref = reference_forward(raw_weights(mf.llada_real()), torch.tensor(ids), layers=2, heads=4, kv_heads=4,
                            theta=500000.0, eps=1e-5, names=llada_names)
    got = den(*canvas(ids))[0]
    assert got.shape == ref.shape == (len(ids), 126464)
    assert (got - ref).abs().max() <= 1e-4


def test_dream_matches_reference_forward_shifted(dream):
    den, _ = dream
    ids = [151644, 4, 2, 151645, 151666, 151666, 8]
    raw = reference_forward(raw_weights(mf.dream_real()), torch.tensor(ids), layers=2, heads=4, kv_heads=2,
                            theta=1e6, eps=1e-6, names=dream_names)
    got = den(*canvas(ids))[0]
    # Dream's convention: aligned[i] = raw[i - 1], aligned[0] = raw[0]
    assert (got[1:] - raw[:-1]).abs().max() <= 1e-4
    assert (got[0] - raw[0]).abs().max() <= 1e-4


def test_dream_adapter_shifts_the_models_own_logits(dream):
    den, _ = dream
    x, am, pos = canvas([151644, 4, 2, 151645, 151666, 151666, 8])
    raw = den.model(input_ids=x, attention_mask=torch.zeros(1, 1, 7, 7), position_ids=pos).logits
    got = den(x, am, pos)
    assert torch.equal(got[:, 1:], raw[:, :-1]) and torch.equal(got[:, 0], raw[:, 0])


@pytest.mark.parametrize("which", ["llada", "dream"])
def test_attention_is_bidirectional(which, request):
    den, _ = request.getfixturevalue(which)
    ids = [3, 4, 5, 6, den.spec.mask_id, den.spec.mask_id]
    a = den(*canvas(ids))
    b = den(*canvas(ids[:-1] + [7]))
    assert not torch.allclose(a[0, 0], b[0, 0]), "changing the last token must change position 0"


@pytest.mark.parametrize("which", ["llada", "dream"])
def test_left_padding_is_invisible(which, request):
    den, _ = request.getfixturevalue(which)
    ids = [3, 4, 5, den.spec.mask_id, den.spec.mask_id]
    alone = den(*canvas(ids))[0]
    x = torch.tensor([[den.spec.pad_id] * 3 + ids])
    am = torch.tensor([[False] * 3 + [True] * 5])
    padded = den(x, am, (am.long().cumsum(-1) - 1).clamp_min(0))[0, 3:]
    assert (padded - alone).abs().max() <= 1e-4


def test_special_ids_from_config_and_tokenizer(llada, dream):
    (ld, _), (dd, _) = llada, dream
    assert (ld.spec.mask_id, ld.spec.eos_ids, ld.spec.pad_id) == (126336, (126081, 126348), 126081)
    assert (dd.spec.mask_id, dd.spec.eos_ids, dd.spec.pad_id) == (151666, (151643, 151645), 151643)
    assert ld.spec.vocab_size == 126464 and ld.spec.max_length == 4096 and dd.spec.max_length == 2048
    assert isinstance(ld, CachingDenoiser) and isinstance(ld, NativeDenoiser)
    assert ld.family is FAMILIES["llada"] and dd.family is FAMILIES["dream"]
    assert ld.lookbehind == 0 and dd.lookbehind == 1


def test_prompt_encoding_chat_template_and_bos(llada, dream):
    (ld, ltok), (dd, dtok) = llada, dream
    words = ltok.encode("hello world", add_special_tokens=False)
    plain = encode_prompts(ltok, ["hello world"], chat=False, add_bos=ld.add_bos)[0]
    assert plain == [126080] + words
    chat = encode_prompts(ltok, ["hello world"], add_bos=ld.add_bos)[0]  # template by default (instruct)
    assert chat[0] == 126080 and chat.count(126080) == 1, "exactly one BOS"
    assert chat[-3:] == ltok.encode("<|start_header_id|> assistant <|end_header_id|>", add_special_tokens=False)
    dream_chat = encode_prompts(dtok, ["hello world"], add_bos=dd.add_bos)[0]
    assert dream_chat[0] == 151644 and dream_chat[-2:] == dtok.encode("<|im_start|> assistant", add_special_tokens=False)
    assert encode_prompts(dtok, ["hello world"], chat=False, add_bos=dd.add_bos)[0] == words


def test_missing_mask_token_is_a_clear_error(tmp_path):
    path = mf.write_llada(tmp_path / "nomask", vocab=96, specials=mf.LLADA_SMALL, with_mask=False, shards=1)
    with pytest.raises(ValueError, match="no mask token"):
        load(path)


def test_family_comes_from_config_not_path(tmp_path):
    fake = tmp_path / "Dream-v0-Instruct-7B"  # a LLaDA checkpoint under a Dream-looking name
    shutil.copytree(mf.llada_small(), fake)
    den, _ = load(fake)
    assert den.family.name == "llada" and type(den.model).__name__ == "LlamaForCausalLM"
    other = tmp_path / "LLaDA-8B-Instruct"
    shutil.copytree(mf.dream_small(), other)
    den, _ = load(other)
    assert den.family.name == "dream" and type(den.model).__name__ == "Qwen2ForCausalLM"
    assert detect_family({"model_type": "llama"}) is None
    assert detect_family({"architectures": ["DreamModel"]}).name == "dream"
    with pytest.raises(ValueError, match="unmask_family must be one of"):
        detect_family({"unmask_family": "gpt"})


def test_bad_paths_and_options(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load(tmp_path / "empty")
    with pytest.raises(ValueError, match="dtype must be"):
        load(mf.llada_small(), dtype="int8")
    bad = tmp_path / "alibi"
    shutil.copytree(mf.llada_small(), bad)
    cfg = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**cfg, "alibi": True}))
    with pytest.raises(ValueError, match="alibi=True is not supported by the native path"):
        load(bad)


def test_missing_tensor_is_named(tmp_path):
    path = tmp_path / "broken"
    shutil.copytree(mf.llada_small(), path)
    for f in path.glob("*.safetensors"):
        tensors = load_file(str(f))
        if tensors.pop("model.transformer.ln_f.weight", None) is not None:
            save_file(tensors, str(f))
    with pytest.raises(ValueError, match=r"lacks tensors: \['model.norm.weight'\]"):
        load(path)


def test_convert_round_trip_llada(tmp_path, llada):
    den, tok = llada
    dst = convert(mf.llada_real(), tmp_path / "converted")
    cfg = json.loads((dst / "config.json").read_text())
    assert cfg["unmask_family"] == "llada" and cfg["model_type"] == "llama"
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["is_causal"] is False
    assert (cfg["mask_token_id"], cfg["eos_token_id"], cfg["pad_token_id"]) == (126336, [126081, 126348], 126081)
    assert cfg["rope_parameters"]["rope_theta"] == 500000.0
    assert (dst / "tokenizer.json").is_file() and (dst / "model.safetensors.index.json").is_file()
    back, tok2 = load(dst, dtype=torch.float32)
    assert back.spec == den.spec and tok2.chat_template == tok.chat_template
    x, am, pos = canvas([126080, 5, 9, 126336, 126336])
    assert torch.equal(back(x, am, pos), den(x, am, pos))
    with pytest.raises(ValueError, match="exists and is not empty"):
        convert(mf.llada_real(), dst)


def test_convert_dream_and_tied_llada(tmp_path):
    dream_dst = convert(mf.dream_small(), tmp_path / "dream", dtype=torch.bfloat16)
    cfg = json.loads((dream_dst / "config.json").read_text())
    assert cfg["model_type"] == "qwen2" and cfg["unmask_family"] == "dream" and cfg["dtype"] == "bfloat16"
    a, _ = load(mf.dream_small(), dtype=torch.bfloat16)
    b, _ = load(dream_dst, dtype=torch.bfloat16)
    x, am, pos = canvas([92, 4, 5, 94, 94])
    assert torch.equal(a(x, am, pos), b(x, am, pos)) and b.lookbehind == 1
    tied = mf.write_llada(tmp_path / "tied", vocab=96, specials=mf.LLADA_SMALL, tied=True, shards=1)
    t_dst = convert(tied, tmp_path / "tied-converted")
    assert "lm_head.weight" not in load_file(str(t_dst / "model.safetensors"))
    c, _ = load(tied)
    d, _ = load(t_dst)
    assert torch.equal(c(x, am, pos), d(x, am, pos))
    assert d.model.lm_head.weight is d.model.model.embed_tokens.weight


def test_save_pretrained_llama_with_unmask_keys_loads(tmp_path):
    """The converted format as another tool writes it: LlamaForCausalLM.save_pretrained plus the unmask keys."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      max_position_embeddings=64, bos_token_id=None, eos_token_id=91, pad_token_id=91)
    cfg.mask_token_id, cfg.unmask_family, cfg.is_causal = 92, "llada", False
    LlamaForCausalLM(cfg).save_pretrained(str(tmp_path))
    mf.write_tokenizer(tmp_path, {"<|endoftext|>": 91, "<|mask|>": 92}, 96, "dream", instruct=False)  # no BOS
    den, tok = load(tmp_path)
    assert (den.spec.mask_id, den.spec.eos_ids, den.spec.max_length) == (92, (91,), 64)
    assert den.family.name == "llada" and den.add_bos is False
    prompts = encode_prompts(tok, ["hello world"], add_bos=den.add_bos)
    assert prompts == [[1, 2]]
    out = generate(den, prompts, GenerationConfig(gen_length=8, block_length=4, cache="prefix"), tokenizer=tok)
    assert not (out.generated == 92).any()


def test_generation_on_the_real_vocabulary(llada):
    den, tok = llada
    prompts = encode_prompts(tok, ["hello world", "what is 2+2 ?"], add_bos=den.add_bos)
    out = generate(den, prompts, GenerationConfig(gen_length=8, block_length=4, cache="dual"), tokenizer=tok)
    assert not (out.generated == den.spec.mask_id).any() and out.texts is not None and len(out.texts) == 2
