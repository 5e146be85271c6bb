"""``unmask.load``: a checkpoint directory (or Hub id) to ``(denoiser, tokenizer)``.

Native path (LLaDA, Dream, DiffuCoder, SDAR, Fast-dLLM v2, LLaDA2, and checkpoints written by ``unmask
convert``): build transformers' ``LlamaForCausalLM`` / ``Qwen2ForCausalLM`` / ``Qwen3ForCausalLM`` /
``Glm4MoeForCausalLM`` on
the meta device, then stream the safetensors shards into it, tensor by tensor
renamed and cast, with ``load_state_dict(assign=True)``: the weights exist once,
plus at most one shard in flight. Other checkpoints run their own code
(``trust_remote_code``) through :class:`~unmask.models.fallback.RemoteDenoiser`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from transformers import (
    Glm4MoeConfig,
    Glm4MoeForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from ..denoiser import Denoiser
from .blockdiff import fast_dllm_config, qwen_rename, sdar_config
from .dream import dream_config, dream_rename
from .families import Family, detect_family, is_converted
from .llada import llada_config, llada_rename
from .llada2 import build_llada2, llada2_config
from .native import NativeDenoiser
from .quantize import check_dtype, check_quantize, import_torchao, quantize_model
from .tokenizer import bos_rule, load_tokenizer, token_spec

HF_CLASSES: dict[str, tuple[type[PretrainedConfig], type[PreTrainedModel]]] = {
    "llada": (LlamaConfig, LlamaForCausalLM),
    "dream": (Qwen2Config, Qwen2ForCausalLM),
    "sdar": (Qwen3Config, Qwen3ForCausalLM),
    "fast_dllm_v2": (Qwen2Config, Qwen2ForCausalLM),
    "llada2": (Glm4MoeConfig, Glm4MoeForCausalLM),
}
# original layouts mapped tensor by tensor; LLaDA2's experts are stacked while loading (models/llada2.py)
ORIGINAL_LAYOUTS: dict[str, tuple[Callable[[dict], PretrainedConfig], Callable[[str], str]]] = {
    "llada": (llada_config, llada_rename),
    "dream": (dream_config, dream_rename),
    "sdar": (sdar_config, qwen_rename),
    "fast_dllm_v2": (fast_dllm_config, qwen_rename),
}


BUNDLED = {"tiny-arith": Path(__file__).resolve().parent.parent / "assets" / "tiny-arith"}


def resolve_path(name_or_path: str | os.PathLike[str]) -> Path:
    """A local checkpoint directory; a bundled name (``tiny-arith``) or a Hub id (``org/name``).

    Hub ids are fetched into the Hugging Face cache. Raises ``FileNotFoundError``
    for a local path that does not exist or has no ``config.json``.
    """
    if not isinstance(name_or_path, (str, os.PathLike)) or not str(name_or_path):
        raise ValueError("name_or_path must be a checkpoint directory, a Hugging Face Hub id or a bundled name "
                         f"({', '.join(BUNDLED)}), got {name_or_path!r}")
    if str(name_or_path) in BUNDLED:
        return BUNDLED[str(name_or_path)]
    path = Path(name_or_path).expanduser()
    text = str(name_or_path)
    looks_local = path.is_absolute() or text.startswith((".", "~")) or text.count("/") != 1 or path.exists()
    if not looks_local:
        from huggingface_hub import snapshot_download

        patterns = ["*.json", "*.safetensors", "*.py", "*.jinja", "*.txt", "*.model", "tokenizer*"]
        try:
            path = Path(snapshot_download(text, allow_patterns=patterns))
        except Exception as err:  # offline, unknown repo, gated, ...: one clear line for the user
            raise FileNotFoundError(
                f"model path {text!r} is not a local directory and could not be fetched from the Hub: {err}"
            ) from err
    if path.is_file():
        raise ValueError(f"model path {str(name_or_path)!r} is a file; give the checkpoint directory that holds "
                         "config.json")
    if not path.is_dir():
        raise FileNotFoundError(f"model path {str(name_or_path)!r} does not exist (expected a checkpoint directory)")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"model path {str(path)!r} has no config.json: not a Hugging Face checkpoint directory")
    return path


def read_json(file: Path) -> Any:
    """A JSON file of a checkpoint; ``ValueError`` naming the file if it is not valid JSON."""
    with open(file, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{str(file)!r} is not valid JSON: {err}") from err


def read_config(path: Path) -> dict[str, Any]:
    """The ``config.json`` of a checkpoint directory as a dict."""
    config = read_json(path / "config.json")
    if not isinstance(config, dict):
        raise ValueError(f"{str(path / 'config.json')!r} must hold a JSON object, got {type(config).__name__}")
    return config


def weight_files(path: Path) -> list[Path]:
    """The safetensors files of a checkpoint: from ``model.safetensors.index.json``, else ``model.safetensors``."""
    index = path / "model.safetensors.index.json"
    if index.is_file():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ValueError(f"{str(index)!r} has no 'weight_map' object naming the weight files")
        return [path / n for n in sorted(set(weight_map.values()))]
    single = path / "model.safetensors"
    if single.is_file():
        return [single]
    raise FileNotFoundError(
        f"no safetensors weights in {str(path)!r} (model.safetensors or model.safetensors.index.json); "
        "the native path reads safetensors only: load with native=False for other formats"
    )


def iter_shards(
    files: list[Path], device: torch.device, dtype: torch.dtype | None
) -> Iterator[dict[str, torch.Tensor]]:
    """Yield ``{name: tensor}`` one shard at a time, each tensor read onto ``device`` and cast alone.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming
    the file for one that is not readable safetensors (truncated, corrupt).
    """
    for file in files:
        if not file.is_file():
            raise FileNotFoundError(f"weight file {str(file)!r} does not exist")
        shard: dict[str, torch.Tensor] = {}
        try:
            with safe_open(str(file), framework="pt", device=str(device)) as f:
                for name in f.keys():
                    t = f.get_tensor(name)
                    shard[name] = t if dtype is None or not t.is_floating_point() else t.to(dtype)
        except SafetensorError as err:
            raise ValueError(f"weight file {str(file)!r} is not a readable safetensors file: {err}") from err
        yield shard


def renamer(family: Family, converted: bool) -> Callable[[str], str]:
    """Checkpoint tensor name -> transformers name (the identity for converted checkpoints)."""
    return (lambda name: name) if converted else ORIGINAL_LAYOUTS[family.name][1]


def hf_config(raw: dict[str, Any], family: Family) -> PretrainedConfig:
    """The transformers config of a native checkpoint, bidirectional, with SDPA attention."""
    config_cls, _ = HF_CLASSES[family.name]
    if is_converted(raw):
        config = config_cls.from_dict({k: v for k, v in raw.items() if k not in ("architectures", "auto_map")})
    elif family.name == "llada2":
        config = llada2_config(raw)
    else:
        config = ORIGINAL_LAYOUTS[family.name][0](raw)
    config.is_causal = False
    config._attn_implementation = "sdpa"
    return config


def build_native(
    path: Path, config: PretrainedConfig, family: Family, converted: bool, device: torch.device, dtype: torch.dtype
) -> PreTrainedModel:
    """The transformers model of a native checkpoint, weights streamed onto ``device`` in ``dtype``.

    ``converted``: tensors already carry transformers' names (``unmask convert``);
    otherwise the family's original names are mapped.
    """
    if family.name == "llada2" and not converted:  # fused q/k/v and per-expert matrices: models/llada2.py
        return build_llada2(path, read_config(path), device, dtype)
    rename = renamer(family, converted)
    model = meta_model(config, family)
    unexpected: list[str] = []
    for shard in iter_shards(weight_files(path), device, dtype):
        renamed = {rename(k): v for k, v in shard.items() if not k.endswith("rotary_emb.inv_freq")}
        try:
            unexpected += model.load_state_dict(renamed, strict=False, assign=True).unexpected_keys
        except RuntimeError as err:  # size mismatches
            raise ValueError(f"checkpoint {str(path)!r} does not match its config.json: {err}") from err
        del shard, renamed
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    if unexpected:
        raise ValueError(f"checkpoint {str(path)!r} has tensors the {family.name} model does not: {unexpected[:5]}")
    missing = [n for n, p in model.named_parameters() if p.is_meta]
    if missing:
        raise ValueError(f"checkpoint {str(path)!r} lacks tensors: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    return finish_model(model, device)


def meta_model(config: PretrainedConfig, family: Family) -> PreTrainedModel:
    """The family's transformers model on the meta device: shapes only, no memory, no init."""
    _, model_cls = HF_CLASSES[family.name]
    with torch.device("meta"):
        return model_cls(config)


def finish_model(model: PreTrainedModel, device: torch.device) -> PreTrainedModel:
    """Rebuild the non-persistent buffers left on meta (rotary frequencies) on ``device``; eval mode, no grads."""
    model.model.rotary_emb = type(model.model.rotary_emb)(config=model.config).to(device)
    return model.eval().requires_grad_(False)


def default_device(device: str | torch.device | None) -> torch.device:
    """``device`` parsed; by default CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"device must be a torch device such as 'cpu', 'cuda', 'cuda:1', got {device!r}") from err
    if dev.type == "meta":
        raise ValueError(f"device {str(device)!r} holds no data (shapes only) and cannot run a model; use 'cpu' or "
                         "'cuda'")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} was asked for, but CUDA is not available here "
                         f"(torch {torch.__version__}); use device 'cpu'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {str(device)!r} was asked for, but there are {torch.cuda.device_count()} CUDA devices")
    return dev


def parse_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """A floating-point torch dtype from a dtype or its name (``"bfloat16"``, ``"float32"``, ...)."""
    if isinstance(dtype, str):
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise ValueError(
                f"dtype must be a torch dtype name such as 'bfloat16', 'float16', 'float32', got {dtype!r}"
            )
        dtype = getattr(torch, dtype)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch dtype, got {dtype!r}")
    return dtype


def default_dtype(dtype: torch.dtype | str | None, device: torch.device) -> torch.dtype:
    """``dtype`` parsed; by default bfloat16 on CUDA and float32 elsewhere."""
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return parse_dtype(dtype)


def load(
    name_or_path: str | os.PathLike[str],
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | str | None = None,
    native: bool | None = None,
    quantize: str | None = None,
) -> tuple[Denoiser, Any]:
    """Load an MDLM checkpoint as ``(denoiser, tokenizer)``.

    The family is read from ``config.json`` (LLaDA, Dream/DiffuCoder, SDAR,
    Fast-dLLM v2, LLaDA2, or a checkpoint written by ``unmask convert``). Known
    families run natively in transformers' Llama/Qwen2/Qwen3 with bidirectional
    attention and a KV cache (``cache="prefix" | "dual"``), or, for the
    block-diffusion families (SDAR, Fast-dLLM v2, LLaDA2 in ``Glm4MoeForCausalLM``), block-causal attention and
    the exact ``cache="committed"`` (their default); DiffusionGemma (uniform-state)
    loads with transformers' own classes as a
    :class:`~unmask.models.diffusion_gemma_engine.DiffusionGemma`; with ``native=False`` or for unknown
    families, the checkpoint's own code runs through ``AutoModel`` (no cache).
    ``device`` defaults to CUDA when available; ``dtype`` to bfloat16 on CUDA and
    float32 on CPU. ``quantize="int8"`` or ``"int4"`` stores the decoder
    layers' linear weights in 8 or 4 bits with torchao (weight-only,
    :mod:`unmask.models.quantize`; native path only; the ``quant`` extra);
    ``int4`` runs in bfloat16 (its default dtype everywhere; others refused).
    Raises ``FileNotFoundError`` for a missing checkpoint and ``ValueError``
    for one without a mask token.
    """
    quant = check_quantize(quantize)
    if quant is not None:
        if native is False:
            raise ValueError(f"quantize={quant!r} needs the native path (LLaDA, Dream or converted checkpoints), "
                             "not native=False")
        import_torchao()  # a missing extra is said before any weight is read
    path = resolve_path(name_or_path)
    raw = read_config(path)
    family = detect_family(raw)
    if family is not None and family.corruption == "uniform":  # DiffusionGemma: transformers' own classes
        if quant is not None or native:
            raise ValueError(f"{family.name} runs with transformers' own classes: quantize and native=True do not "
                             "apply (leave them unset)")
        from .diffusion_gemma_engine import load_gemma_denoiser

        return load_gemma_denoiser(path, device=device, dtype=dtype)
    dev = default_device(device)
    dt = torch.bfloat16 if quant == "int4" and dtype is None else default_dtype(dtype, dev)
    check_dtype(quant, dt)
    if native and family is None:
        raise ValueError(
            f"native=True needs a LLaDA, Dream or converted checkpoint; {str(path)!r} has model_type "
            f"{raw.get('model_type')!r} (use native=None or False)"
        )
    if quant is not None and family is None:
        raise ValueError(f"quantize={quant!r} needs a LLaDA, Dream or converted checkpoint (the native path); "
                         f"{str(path)!r} has model_type {raw.get('model_type')!r}")
    if native is False or family is None:
        from .fallback import load_remote

        return load_remote(path, raw, family, dev, dt)
    family.block_size(raw)  # a bad block size field is said before any weight is read
    tokenizer = load_tokenizer(path)
    config = hf_config(raw, family)
    # validate special ids before reading any weights
    spec = token_spec(raw, tokenizer, family, config.vocab_size, config.max_position_embeddings)
    model = build_native(path, config, family, is_converted(raw), dev, dt)
    if quant is not None:
        quantize_model(model, quant, dev, dt)
    return NativeDenoiser(model, spec, family, bos_rule(raw, family, tokenizer), family.block_size(raw)), tokenizer
