"""The tiny model: a ``LlamaForCausalLM`` run bidirectionally, built, saved and wrapped like any checkpoint.

LLaDA is a Llama-style transformer without the causal mask. The tiny model is
a stock ``transformers`` Llama run the same way, through the native adapter's
forward (:mod:`unmask.models.forward`: bidirectional attention, left padding
hidden by a key mask) in training and in generation alike. ``config.is_causal``
is also saved as False, and a test checks that the last token changes
position 0's logits.

The saved folder is the "converted native format" of the package: a
``save_pretrained`` Llama (safetensors) whose config carries
``unmask_family="llada"``, ``mask_token_id``, ``eos_token_id``,
``pad_token_id``, ``is_causal=false`` and ``unmask_add_bos=false`` (LLaDA
prompts start with BOS; this char tokenizer has none), plus a char-level
``PreTrainedTokenizerFast``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ..denoiser import TokenSpec
from ..models.families import LLADA
from ..models.native import NativeDenoiser
from .data import EOS_ID, MASK_ID, PAD_ID, VOCAB

ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "tiny-arith"


@dataclass(frozen=True)
class TinyShape:
    """Sizes of the tiny Llama (the shipped model uses the defaults)."""

    hidden: int = 256
    layers: int = 4
    heads: int = 8
    intermediate: int = 640
    max_length: int = 64  # longest canvas: prompt + generation

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")


def tiny_config(shape: TinyShape = TinyShape()) -> LlamaConfig:
    """A ``LlamaConfig`` for the char vocabulary, marked bidirectional and LLaDA-family."""
    cfg = LlamaConfig(
        vocab_size=len(VOCAB),
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.heads,
        max_position_embeddings=shape.max_length,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
    )
    _mark(cfg)
    cfg._attn_implementation = "sdpa"
    return cfg


def _mark(cfg: LlamaConfig) -> None:
    """The extra keys ``unmask.load`` reads: family, mask id, bidirectional, no BOS (char tokenizer)."""
    cfg.mask_token_id = MASK_ID
    cfg.unmask_family = "llada"
    cfg.unmask_add_bos = False  # prompts are plain characters; the tokenizer has no BOS token
    cfg.is_causal = False


def build_model(shape: TinyShape = TinyShape(), seed: int = 0) -> LlamaForCausalLM:
    """A freshly initialised tiny Llama (seeded)."""
    torch.manual_seed(seed)
    return LlamaForCausalLM(tiny_config(shape))


def token_spec(config: LlamaConfig) -> TokenSpec:
    """The loop's :class:`TokenSpec` from a saved config's extra keys."""
    missing = [k for k in ("mask_token_id", "eos_token_id", "pad_token_id") if getattr(config, k, None) is None]
    if missing:
        raise ValueError(f"model config lacks {missing}; a tiny-arith config must set them")
    eos = config.eos_token_id
    eos_ids = tuple(eos) if isinstance(eos, (list, tuple)) else (int(eos),)
    return TokenSpec(
        mask_id=int(config.mask_token_id),
        eos_ids=eos_ids,
        pad_id=int(config.pad_token_id),
        vocab_size=int(config.vocab_size),
        max_length=int(config.max_position_embeddings),
    )


def tiny_denoiser(model: LlamaForCausalLM) -> NativeDenoiser:
    """An in-memory tiny model (training, tests) behind the adapter that ``unmask.load("tiny-arith")`` gives."""
    return NativeDenoiser(model, token_spec(model.config), LLADA, add_bos=False)


def save_tiny(model: LlamaForCausalLM, path: str | Path, dtype: torch.dtype = torch.float16) -> Path:
    """Write ``model`` (cast to ``dtype``, safetensors) and the tokenizer into ``path``."""
    from .tokenizer import build_tokenizer

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    copy = LlamaForCausalLM(model.config)
    copy.load_state_dict({k: v.detach().cpu() for k, v in model.state_dict().items()})
    _mark(copy.config)
    copy.to(dtype).save_pretrained(str(path), safe_serialization=True)
    build_tokenizer().save_pretrained(str(path))
    for f in path.iterdir():  # safetensors writes 0600; package data should be readable by all
        f.chmod(0o644)
    return path


def num_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
