"""The character-level tokenizer of the tiny model, built offline with ``tokenizers``.

Every character of :data:`unmask.tiny.data.CHARS` is one token; ``<pad>``,
``<eos>`` and ``<mask>`` are special tokens. Ids equal the indices of
:data:`unmask.tiny.data.VOCAB`, so the training data (encoded in plain Python)
and the saved tokenizer agree; a test checks it. Inside the tokenizer a
character outside the alphabet reads as ``<pad>``; prompts encoded by unmask
(:func:`unmask.models.tokenizer.encode_text`) refuse it, naming the character
and the alphabet. The saved copy ships with the model and is loaded by
:func:`unmask.load` like any checkpoint's.
"""

from __future__ import annotations

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
