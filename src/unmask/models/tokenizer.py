"""Tokenizers: loading, the special ids of a checkpoint, and prompt encoding.

Special ids come from ``config.json`` first, then from the tokenizer, then
(EOS only) from the family's defaults. A checkpoint with no mask token in
either is refused: a masked diffusion model cannot run without one.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer
from transformers.utils import logging as hf_logging

from ..denoiser import TokenSpec
from .families import Family


def load_tokenizer(path: Path, trust_remote_code: bool = False) -> Any:
    """The checkpoint's own Hugging Face tokenizer, from local files only."""
    # AutoTokenizer reads config.json too, and warns about what the tokenizer does not use: model types it
    # does not know (llada, Dream) and deprecated config fields (Dream's rope_scaling: null)
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
            return AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=trust_remote_code)
    finally:
        hf_logging.set_verbosity(level)


def _ids(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value]


def _vocab_id(tokenizer: Any, token: str) -> int | None:
    """The id of ``token`` if the tokenizer knows it as a whole token, else None."""
    if tokenizer is None:
        return None
    vocab = tokenizer.get_vocab()
    return int(vocab[token]) if token in vocab else None


def token_spec(
    config: dict[str, Any], tokenizer: Any, family: Family | None, vocab_size: int, max_length: int | None
) -> TokenSpec:
    """The :class:`TokenSpec` of a checkpoint from its ``config.json`` dict and tokenizer.

    ``vocab_size`` is the width of the logits; ``max_length`` the longest canvas.
    """
    mask_id = config.get("mask_token_id")
    if mask_id is None and tokenizer is not None:
        mask_id = tokenizer.mask_token_id
    if mask_id is None and family is not None:
        mask_id = _vocab_id(tokenizer, family.mask_token)
    if mask_id is None:
        raise ValueError(
            "the checkpoint has no mask token: config.json lacks mask_token_id and its tokenizer defines none"
            + (f" (nor {family.mask_token!r})" if family is not None else "")
            + "; a masked diffusion model needs one"
        )
    mask_id = int(mask_id)
    eos: list[int] = _ids(config.get("eos_token_id"))
    if tokenizer is not None:
        eos += _ids(tokenizer.eos_token_id)
    for token in family.end_tokens if family is not None else ():
        eos += _ids(_vocab_id(tokenizer, token))
    if not eos and family is not None:
        eos = list(family.default_eos_ids)
    eos_ids = tuple(dict.fromkeys(e for e in eos if e != mask_id and 0 <= e < vocab_size))
    if not eos_ids:
        raise ValueError(
            "the checkpoint has no EOS token: config.json lacks eos_token_id and its tokenizer defines none"
        )
    pad_id = config.get("pad_token_id")
    if pad_id is None and tokenizer is not None:
        pad_id = tokenizer.pad_token_id
    pad_id = eos_ids[0] if pad_id is None else int(pad_id)
    return TokenSpec(mask_id=mask_id, eos_ids=eos_ids, pad_id=pad_id, vocab_size=vocab_size, max_length=max_length)


def has_chat_template(tokenizer: Any) -> bool:
    """True for instruct checkpoints: the tokenizer carries a chat template."""
    return bool(getattr(tokenizer, "chat_template", None))


def encode_prompts(
    tokenizer: Any, texts: Sequence[str], *, chat: bool | None = None, add_bos: bool | None = None
) -> list[list[int]]:
    """Token ids of each prompt, ready for :func:`unmask.generate`.

    ``chat``: wrap each text as one user turn with the tokenizer's chat template
    and the assistant header (``add_generation_prompt=True``); None = when the
    tokenizer has a template. ``add_bos``: make every prompt start with exactly
    one BOS token (LLaDA); False = never add one; None = the tokenizer's own rule.
    Use ``denoiser.add_bos`` for the checkpoint's family rule.
    """
    if isinstance(texts, str):
        raise ValueError("texts must be a sequence of strings, got a single str")
    if chat is None:
        chat = has_chat_template(tokenizer)
    if chat and not has_chat_template(tokenizer):
        raise ValueError("chat=True needs a tokenizer with a chat_template; this one has none (use chat=False)")
    bos = getattr(tokenizer, "bos_token_id", None)
    if add_bos and bos is None:
        raise ValueError("add_bos=True needs a tokenizer with a BOS token; this one has none")
    rows = []
    for text in texts:
        if chat:
            turn = [{"role": "user", "content": text}]
            text = tokenizer.apply_chat_template(turn, add_generation_prompt=True, tokenize=False)
        # with a rule of our own (or a template, which writes its specials), the tokenizer adds nothing
        ids = list(tokenizer.encode(text, add_special_tokens=add_bos is None and not chat))
        if add_bos and ids[:1] != [bos]:
            ids = [bos] + ids
        rows.append(ids)
    return rows
