"""``unmask convert``: rewrite a checkpoint once in transformers' own layout.

The result is what ``LlamaForCausalLM.save_pretrained`` (LLaDA) or
``Qwen2ForCausalLM.save_pretrained`` (Dream, DiffuCoder) would write, plus the
keys ``unmask_family``, ``mask_token_id``, ``eos_token_id``, ``pad_token_id``
and ``is_causal: false`` in ``config.json`` and the tokenizer files, so
:func:`unmask.load` reads it with no name mapping. Shards are converted one at
a time: peak memory is one shard.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .families import check_masked, detect_family, is_converted
from .loading import HF_CLASSES, hf_config, iter_shards, read_config, renamer, resolve_path, weight_files
from .tokenizer import load_tokenizer, token_spec

_NOT_COPIED = ("config.json", "model.safetensors.index.json", "pytorch_model.bin.index.json", ".gitattributes")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".py", ".pyc")


def convert(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    dtype: torch.dtype | None = None,
    overwrite: bool = False,
) -> Path:
    """Convert the LLaDA / Dream / DiffuCoder checkpoint ``src`` into ``dst``; returns ``dst``.

    ``dtype`` casts floating-point tensors (default: keep the stored dtype).
    Raises ``ValueError`` for an unknown family, a checkpoint without a mask
    token, unknown tensor names, or a non-empty ``dst`` without ``overwrite``.
    """
    path = resolve_path(src)
    raw = read_config(path)
    family = detect_family(raw)
    if family is None:
        raise ValueError(
            f"convert supports LLaDA, Dream and DiffuCoder checkpoints; {str(path)!r} has model_type "
            f"{raw.get('model_type')!r} and architectures {raw.get('architectures')!r}"
        )
    check_masked(family, "convert")
    if family.name == "llada2" and not is_converted(raw):
        raise ValueError("convert does not rewrite LLaDA2 checkpoints: their per-expert matrices are stacked into "
                         "Glm4MoeForCausalLM's expert tensors while loading (models/llada2.py), across shards, so "
                         "there is no tensor-by-tensor rewrite; unmask.load reads the original directory natively")
    tokenizer = load_tokenizer(path)
    config = hf_config(raw, family)
    spec = token_spec(raw, tokenizer, family, config.vocab_size, config.max_position_embeddings)
    rename = renamer(family, is_converted(raw))
    files = weight_files(path)
    for file in files:  # check every tensor name before writing anything (headers only)
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():
                rename(name)
    out_dir = Path(dst).expanduser()
    if out_dir.resolve() == path.resolve():
        raise ValueError(f"dst must differ from src, got {str(out_dir)!r} for both")
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise ValueError(f"dst {str(out_dir)!r} exists and is not empty (pass overwrite=True / --overwrite)")
    out_dir.mkdir(parents=True, exist_ok=True)
    stored_dtype = _write_weights(files, out_dir, rename, dtype, bool(config.tie_word_embeddings))
    cfg = config.to_dict()
    eos = list(spec.eos_ids)
    cfg.update(
        architectures=[HF_CLASSES[family.name][1].__name__],
        unmask_family=family.name,
        mask_token_id=spec.mask_id,
        eos_token_id=eos[0] if len(eos) == 1 else eos,
        pad_token_id=spec.pad_id,
        bos_token_id=getattr(tokenizer, "bos_token_id", None),
        is_causal=False,
        dtype=str(stored_dtype).removeprefix("torch.") if stored_dtype is not None else None,
    )
    if family.block_fields:  # block-diffusion models: the block size travels with the checkpoint
        cfg[family.block_fields[0]] = family.block_size(raw)
    (out_dir / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    for item in path.iterdir():
        if item.is_file() and item.name not in _NOT_COPIED and not item.name.endswith(_WEIGHT_SUFFIXES):
            shutil.copy2(item, out_dir / item.name)
    return out_dir


def _write_weights(files: list[Path], out_dir: Path, rename: Callable[[str], str], dtype: torch.dtype | None,
                   tied: bool) -> torch.dtype | None:
    """Write the renamed (and cast) shards, one at a time, and their index; returns the stored float dtype."""
    weight_map: dict[str, str] = {}
    total = 0
    stored_dtype = None
    for i, shard in enumerate(iter_shards(files, torch.device("cpu"), dtype)):
        out = {rename(k): v.contiguous() for k, v in shard.items() if not k.endswith("rotary_emb.inv_freq")}
        if tied:
            out.pop("lm_head.weight", None)  # tied: the embedding serves as the head
        name = "model.safetensors" if len(files) == 1 else f"model-{i + 1:05d}-of-{len(files):05d}.safetensors"
        save_file(out, str(out_dir / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(out, name))
        total += sum(t.numel() * t.element_size() for t in out.values())
        stored_dtype = stored_dtype or next((t.dtype for t in out.values() if t.is_floating_point()), None)
        del shard, out
    if len(files) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (out_dir / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return stored_dtype
