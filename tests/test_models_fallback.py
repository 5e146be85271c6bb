"""The fallback path: a checkpoint with its own code (trust_remote_code), written offline into tmp_path."""

import json

import pytest
import torch
from safetensors.torch import save_file

import model_fixtures as mf
from unmask import GenerationConfig, generate
from unmask.models import RemoteDenoiser, load

MODELING = '''
import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput


class ToyConfig(PretrainedConfig):
    model_type = "toy_mdlm"

    def __init__(self, vocab_size=96, hidden_size=16, **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        super().__init__(**kwargs)


class ToyModel(PreTrainedModel):
    config_class = ToyConfig

    def __init__(self, config):
        super().__init__(config)
        self.emb = nn.Embedding(config.vocab_size, config.hidden_size)
        self.head = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    def forward(self, input_ids, attention_mask=None):
        h = self.emb(input_ids)
        m = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        m = m.to(h.dtype).unsqueeze(-1)
        ctx = (h * m).sum(1, keepdim=True) / m.sum(1, keepdim=True)  # bidirectional mean over real tokens
        return MaskedLMOutput(logits=self.head(h + ctx))
'''


@pytest.fixture(scope="module")
def remote_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("toy-remote")
    (path / "modeling_toy.py").write_text(MODELING)
    g = torch.Generator().manual_seed(0)
    save_file({"emb.weight": torch.randn(96, 16, generator=g), "head.weight": torch.randn(96, 16, generator=g),
               "head.bias": torch.zeros(96)}, str(path / "model.safetensors"))
    config = {"model_type": "toy_mdlm", "architectures": ["ToyModel"], "vocab_size": 96, "hidden_size": 16,
              "mask_token_id": 92, "eos_token_id": 91, "pad_token_id": 91, "max_position_embeddings": 64,
              "auto_map": {"AutoConfig": "modeling_toy.ToyConfig", "AutoModel": "modeling_toy.ToyModel"}}
    (path / "config.json").write_text(json.dumps(config))
    mf.write_tokenizer(path, mf.LLADA_SMALL, 96, "llada", instruct=False)
    return path


def test_unknown_family_runs_its_own_code(remote_ckpt):
    den, tok = load(remote_ckpt)
    assert isinstance(den, RemoteDenoiser) and den.family is None
    assert (den.spec.mask_id, den.spec.eos_ids[0], den.spec.max_length) == (92, 91, 64)
    prompts = [[1, 2, 3, 4], [5], [6, 7]]
    cfg = GenerationConfig(gen_length=8, block_length=4, planner="dilated", early_exit=False)
    out = generate(den, prompts, cfg)
    assert not (out.generated == 92).any()
    for i, p in enumerate(prompts):  # padding reaches the model as its attention mask
        assert torch.equal(generate(den, [p], cfg).generated[0], out.generated[i])


def test_fallback_refuses_cache_with_a_clear_error(remote_ckpt):
    den, _ = load(remote_ckpt)
    for kwargs in (dict(cache="dual"), dict(cache="prefix", cfg_scale=1.0)):
        with pytest.raises(ValueError, match=r"cache='(dual|prefix)' needs a denoiser with a key/value cache.*RemoteDenoiser"):
            generate(den, [[1, 2]], GenerationConfig(gen_length=4, block_length=4, **kwargs))


def test_native_true_needs_a_known_family(remote_ckpt):
    with pytest.raises(ValueError, match="native=True needs a LLaDA, Dream or converted checkpoint"):
        load(remote_ckpt, native=True)
