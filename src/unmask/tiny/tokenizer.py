"""The character-level tokenizer of the tiny model, built offline with ``tokenizers``.

Every character of :data:`unmask.tiny.data.CHARS` is one token; ``<pad>``,
``<eos>`` and ``<mask>`` are special tokens. Ids equal the indices of
:data:`unmask.tiny.data.VOCAB`, so the training data (encoded in plain Python)
and the saved tokenizer agree; a test checks it.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from .data import EOS, MASK, PAD, TOKEN_ID


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A ``PreTrainedTokenizerFast``: one token per character, specials set, no BOS added."""
    core = Tokenizer(models.WordLevel(vocab=dict(TOKEN_ID), unk_token=PAD))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()  # join characters without spaces
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        eos_token=EOS,
        mask_token=MASK,
        padding_side="left",
        model_max_length=64,
        clean_up_tokenization_spaces=False,
    )
    return tok


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """Load the saved tokenizer from a model folder (offline)."""
    path = Path(path)
    if not (path / "tokenizer.json").is_file():
        raise FileNotFoundError(f"no tokenizer.json in {path}")
    return PreTrainedTokenizerFast.from_pretrained(str(path))
