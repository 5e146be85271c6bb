"""Tokenizers: loading, the special ids of a checkpoint, the BOS rule, and text encoding.

This module is the one home of two rules. Special ids come from
``config.json`` first, then from the tokenizer, then (EOS only) from the
family's defaults; a checkpoint with no mask token in either is refused, since
a masked diffusion model cannot run without one. The BOS rule of a checkpoint
(:func:`bos_rule`: exactly one BOS, none, or the tokenizer's own) is decided
and applied here (:func:`encode_text`), for the CLI, the library and the
lm-eval model alike; a text with characters the tokenizer does not know is
refused rather than silently mapped to its unknown token.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer
from transformers.utils import logging as hf_logging

from ..denoiser import TokenSpec
from .families import Family


# files one of which a checkpoint's tokenizer is read from (a remote-code tokenizer may use others)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spm.model")


def check_tokenizer_files(path: Path, trust_remote_code: bool = False) -> None:
    """Name the file when a checkpoint's tokenizer cannot be read: none there, or a ``tokenizer.json`` not JSON."""
    file = path / "tokenizer.json"
    if file.is_file():
        try:
            json.loads(file.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            raise ValueError(f"{str(file)!r} is not valid JSON ({err}): the checkpoint's tokenizer file is "
                             "damaged; copy or download it again") from None
    elif not trust_remote_code and not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise FileNotFoundError(f"checkpoint {str(path)!r} has no tokenizer file: expected tokenizer.json "
                                f"(or one of {', '.join(TOKENIZER_FILES[1:])}) beside config.json")


def load_tokenizer(path: Path, trust_remote_code: bool = False) -> Any:
    """The checkpoint's own Hugging Face tokenizer, from local files only."""
    check_tokenizer_files(path, trust_remote_code)
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


def bos_rule(config: dict[str, Any], family: Family | None, tokenizer: Any) -> bool | None:
    """How a checkpoint's prompts begin: True = exactly one BOS, False = none added, None = the tokenizer's rule.

    ``unmask_add_bos`` in ``config.json`` decides when present; else the
    family's rule (LLaDA adds one, Dream none), which needs a tokenizer with a
    BOS token (a character-level tokenizer may have none); unknown families
    follow their tokenizer.
    """
    if "unmask_add_bos" in config:
        return bool(config["unmask_add_bos"])
    if family is None:
        return None
    return family.add_bos and getattr(tokenizer, "bos_token_id", None) is not None


def _unknown_id(tokenizer: Any) -> int | None:
    """The id a tokenizer gives text it does not know: its unk token, or its backend model's."""
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is not None:
        return int(unk)
    model = getattr(getattr(tokenizer, "backend_tokenizer", None), "model", None)
    token = getattr(model, "unk_token", None)  # e.g. a WordLevel model whose unknown token is <pad>
    return _vocab_id(tokenizer, token) if token else None


def check_known(tokenizer: Any, text: str, name: str = "text") -> None:
    """Raise ``ValueError`` if ``text`` holds characters the tokenizer would turn into its unknown token."""
    unk = _unknown_id(tokenizer)
    if unk is None or unk not in tokenizer.encode(text, add_special_tokens=False):
        return
    token = tokenizer.convert_ids_to_tokens(unk)
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        spans = [text[a:b] for i, (a, b) in zip(enc["input_ids"], enc["offset_mapping"]) if i == unk]
        unknown = sorted({piece for piece in spans if piece != token})
    else:
        unknown = sorted({c for c in text if unk in tokenizer.encode(c, add_special_tokens=False)})
    if not unknown:  # the text spells the unknown token itself
        return
    specials = set(getattr(tokenizer, "all_special_tokens", []))
    pieces = [t for t in tokenizer.get_vocab() if t not in specials]
    known = (f"; it knows only the characters {''.join(sorted(pieces))!r}" if all(len(t) == 1 for t in pieces)
             else "")
    raise ValueError(f"{name} {text[:60]!r} holds {', '.join(map(repr, unknown))}, which the tokenizer does not "
                     f"know (it would read {token!r}){known}")


def encode_text(tokenizer: Any, text: str, add_bos: bool | None, *, templated: bool = False, name: str = "text") -> list[int]:
    """Token ids of one text under a BOS rule (see :func:`bos_rule`).

    ``add_bos=True``: exactly one BOS first (not a second one when the text
    already begins with it); False: no specials added; None: the tokenizer adds
    its specials, unless the text already begins with the BOS text or was
    written by a chat template (``templated``), which writes its own. Raises
    ``ValueError`` for characters the tokenizer does not know (``name`` names
    the text in the message; a templated text is the caller's to check, before
    the template adds the checkpoint's own text).
    """
    bos = getattr(tokenizer, "bos_token_id", None)
    if add_bos and bos is None:
        raise ValueError("add_bos=True needs a tokenizer with a BOS token; this one has none")
    if not templated:
        check_known(tokenizer, text, name)
    if add_bos is None:
        bos_text = getattr(tokenizer, "bos_token", None)
        specials = not templated and not (bos_text and text.startswith(bos_text))
        return list(tokenizer.encode(text, add_special_tokens=specials))
    ids = list(tokenizer.encode(text, add_special_tokens=False))
    return [bos, *ids] if add_bos and ids[:1] != [bos] else ids


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
    Use ``denoiser.add_bos`` for the checkpoint's rule (:func:`bos_rule`).
    Raises ``ValueError`` naming the prompt and the characters for text the
    tokenizer does not know.
    """
    if isinstance(texts, str):
        raise ValueError("texts must be a sequence of strings, got a single str")
    if chat is None:
        chat = has_chat_template(tokenizer)
    if chat and not has_chat_template(tokenizer):
        raise ValueError("chat=True needs a tokenizer with a chat_template; this one has none (use chat=False)")
    rows = []
    for i, text in enumerate(texts):
        if chat:
            check_known(tokenizer, text, f"prompts[{i}]")
            turn = [{"role": "user", "content": text}]
            text = tokenizer.apply_chat_template(turn, add_generation_prompt=True, tokenize=False)
        rows.append(encode_text(tokenizer, text, add_bos, templated=chat, name=f"prompts[{i}]"))
    return rows
