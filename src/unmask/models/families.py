"""Model families: how to recognise a checkpoint and the conventions it follows.

A family is detected from ``config.json`` (``unmask_family`` written by
``unmask convert``, else ``model_type`` / ``architectures``), never from the
path. Token-id literals live here and only here, as defaults for checkpoints
whose config and tokenizer both lack them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass(frozen=True)
class Family:
    """What differs between MDLM families beyond their weights."""

    name: str  # "llada" | "dream" (Dream and DiffuCoder share an architecture) | "sdar" | "fast_dllm_v2" |
    # "llada2" | "diffusion_gemma"
    mask_token: str  # the mask token's text in the family's tokenizer ("" for uniform-state families: none)
    end_tokens: tuple[str, ...]  # tokens that end a document or a turn (EOS, EOT)
    default_eos_ids: tuple[int, ...]  # used only when config and tokenizer name no EOS at all
    add_bos: bool  # prompts start with the tokenizer's BOS token
    logit_shift: int  # 1: position i-1 predicts token i (Dream); 0: logits are aligned (LLaDA)
    model_types: tuple[str, ...]  # config.json model_type values (lower case)
    architectures: tuple[str, ...]  # config.json architectures values
    corruption: str = "mask"  # "mask": absorbing [MASK] tokens; "uniform": uncommitted positions hold random tokens
    attention: str = "full"  # "full" (bidirectional over the canvas) | "block_causal" (causal across model blocks)
    block_fields: tuple[str, ...] = ()  # config.json fields holding the model's block size (block-causal only)
    default_block: int | None = None  # the block size when config.json names none (the reference's constant)

    def block_size(self, config: dict[str, Any]) -> int | None:
        """The model's attention block size from ``config.json`` (None for full attention).

        Positions ``p`` and ``p'`` of a row attend to each other when
        ``p' // block <= p // block``: bidirectional within a block, causal
        across blocks (block diffusion, Arriola et al. 2025).
        """
        if self.attention == "full":
            return None
        for name in self.block_fields:
            if config.get(name) is not None:
                value = config[name]
                if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                    raise ValueError(f"config.json {name} must be a positive int (the model's block size), got {value!r}")
                return value
        if self.default_block is None:
            raise ValueError(f"config.json of a {self.name} checkpoint must name its block size in one of "
                             f"{list(self.block_fields)}")
        return self.default_block


LLADA = Family(
    name="llada",
    mask_token="<|mdm_mask|>",  # id 126336 in LLaDA-8B
    end_tokens=("<|endoftext|>", "<|eot_id|>"),
    default_eos_ids=(126081, 126348),  # <|endoftext|>, <|eot_id|>
    add_bos=True,  # <|startoftext|> (126080); LLaDA's chat template writes it itself
    logit_shift=0,
    model_types=("llada",),
    architectures=("LLaDAModelLM",),
)

DREAM = Family(
    name="dream",
    mask_token="<|mask|>",  # id 151666 in Dream-7B and DiffuCoder-7B
    end_tokens=("<|endoftext|>", "<|im_end|>"),
    default_eos_ids=(151643, 151645),  # <|endoftext|>, <|im_end|>
    add_bos=False,  # Qwen2 tokenizers have no BOS
    logit_shift=1,
    model_types=("dream",),
    architectures=("DreamModel",),
)

# SDAR (JetLM, Cheng et al. 2025): Qwen3 (q/k RMSNorm per head), block-causal with blocks of 4 tokens.
# Its config.json names no block size (JetLM's generate.py takes --block_length 4, SGLang hard-codes 4);
# a ``block_size`` field, when present, wins. Logits are aligned: generate.py samples position i from
# the logits of position i.
SDAR = Family(
    name="sdar",
    mask_token="<|MASK|>",  # id 151669 in SDAR-*-Chat
    end_tokens=("<|endoftext|>", "<|im_end|>"),
    default_eos_ids=(151643, 151645),
    add_bos=False,  # Qwen tokenizers have no BOS
    logit_shift=0,
    model_types=("sdar",),
    architectures=("SDARForCausalLM",),
    attention="block_causal",
    block_fields=("block_size",),
    default_block=4,
)

# Fast-dLLM v2 (NVlabs, Wu et al. 2025): Qwen2.5 initialised from an AR model, block-causal with ``bd_size``
# (32) tokens per block, logits shifted as in the AR model (position i-1 predicts token i).
FAST_DLLM_V2 = Family(
    name="fast_dllm_v2",
    mask_token="|<MASK>|",  # id 151665 in Fast_dLLM_v2_7B
    end_tokens=("<|endoftext|>", "<|im_end|>"),
    default_eos_ids=(151643, 151645),
    add_bos=False,
    logit_shift=1,
    model_types=("fast_dllm_qwen",),
    architectures=("Fast_dLLM_QwenForCausalLM",),
    attention="block_causal",
    block_fields=("bd_size",),
    default_block=32,
)


# LLaDA2.0 / LLaDA2.1 (inclusionAI): a BailingMoeV2 MoE block (models/llada2.py), block-causal with blocks of
# 32 (its own generate() and SGLang's dLLM config default; config.json names no block size, a ``block_size``
# field wins), blocks counted from position 0, logits aligned.
LLADA2 = Family(
    name="llada2",
    mask_token="<|mask|>",  # id 156895: the mask_id default of LLaDA2's generate (token text not verified here)
    end_tokens=("<|endoftext|>", "<|role_end|>"),
    default_eos_ids=(156892,),  # the eos_id default of LLaDA2's generate
    add_bos=False,
    logit_shift=0,
    model_types=("llada2_moe",),
    architectures=("LLaDA2MoeModelLM",),
    attention="block_causal",
    block_fields=("block_size", "block_length"),
    default_block=32,
)


DIFFUSION_GEMMA = Family(  # transformers' DiffusionGemmaForBlockDiffusion (models/diffusion_gemma.py, not the native path)
    name="diffusion_gemma",
    mask_token="",  # uniform-state: a canvas starts as random tokens, there is no mask token
    end_tokens=("<eos>", "<turn|>"),
    default_eos_ids=(1,),  # <eos> (DiffusionGemmaTextConfig's default eos_token_id)
    add_bos=True,  # Gemma prompts start with <bos> (id 2)
    logit_shift=0,
    model_types=("diffusion_gemma",),
    architectures=("DiffusionGemmaForBlockDiffusion",),
    corruption="uniform",
)


FAMILIES: dict[str, Family] = {f.name: f for f in (LLADA, DREAM, SDAR, FAST_DLLM_V2, LLADA2, DIFFUSION_GEMMA)}


def describe_families() -> str:
    """The families unmask runs natively and how ``config.json`` names them, for error messages."""
    known = "; ".join(f"{f.name}: model_type {' or '.join(map(repr, f.model_types))} or architectures "
                      f"{' or '.join(f.architectures)}" for f in FAMILIES.values())
    return f"{known}; or any checkpoint written by unmask convert (config.json unmask_family)"


def detect_family(config: dict[str, Any]) -> Family | None:
    """The family of a checkpoint from its ``config.json`` dict, or None for an unknown model.

    A converted checkpoint names its family in ``unmask_family``; an original one
    is recognised by ``model_type`` or ``architectures``.
    """
    if "unmask_family" in config:
        name = config["unmask_family"]
        if name not in FAMILIES:
            raise ValueError(f"config.json unmask_family must be one of {sorted(FAMILIES)}, got {name!r}")
        return FAMILIES[name]
    model_type = str(config.get("model_type", "")).lower()
    archs = config.get("architectures") or []
    for family in FAMILIES.values():
        if model_type in family.model_types or any(a in family.architectures for a in archs):
            return family
    return None


def check_masked(family: Family | None, what: str) -> None:
    """Refuse a uniform-state family where only absorbing (masked) families run yet (``what``: the operation)."""
    if family is not None and family.corruption != "mask":
        raise ValueError(f"{what} runs masked diffusion families (llada, dream); {family.name} is uniform-state: "
                         "load it with unmask.models.diffusion_gemma.load_diffusion_gemma (generation through the "
                         "engine is not wired yet)")


def is_converted(config: dict[str, Any]) -> bool:
    """True for a checkpoint written by ``unmask convert`` (transformers' own layout, no name mapping)."""
    return "unmask_family" in config


def align_shifted(raw: Tensor, position_ids: Tensor) -> Tensor:
    """Aligned logits ``[N, q, V]`` from Dream-style ``raw`` ones, where ``raw[:, i - 1]`` predicts token i.

    A row's first token (position 0) has no predecessor and keeps its own raw
    logits, as Dream's ``generate`` does for position 0 of the canvas; with left
    padding this makes a padded row's logits equal the row's logits alone.
    (``torch.where``, not boolean indexing: no host synchronisation.)
    """
    shifted = torch.cat([raw[:, :1], raw[:, :-1]], dim=1)
    return torch.where((position_ids == 0).unsqueeze(-1), raw, shifted)
