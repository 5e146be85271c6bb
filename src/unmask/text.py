"""Decoding generated ids to text: cut at EOS, then at the first stop string."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from torch import Tensor


def first_eos(ids: Sequence[int], eos: Collection[int]) -> int | None:
    """The index of the first EOS id in ``ids``, or None."""
    return next((i for i, t in enumerate(ids) if t in eos), None)


def trim_at_stop(text: str, stop: Sequence[str]) -> str:
    """Cut ``text`` at the earliest occurrence of any stop string (matched on text, not tokens)."""
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=len(text))
    return text[:cut]


def check_tokenizer(tokenizer: Any, stop: Sequence[str]) -> None:
    """Refuse, before any compute, a ``tokenizer`` that cannot decode, and ``stop`` strings with no tokenizer."""
    if tokenizer is None:
        if stop:
            raise ValueError(f"stop={tuple(stop)!r} needs a tokenizer: stop strings are matched in decoded text "
                             "(pass tokenizer=..., or cut generated ids yourself)")
        return
    if not callable(getattr(tokenizer, "decode", None)):
        raise ValueError("tokenizer must have a decode(ids, skip_special_tokens=...) method (a Hugging Face "
                         f"tokenizer, as unmask.load returns), got {type(tokenizer).__name__}")


def decode_rows(tokenizer: Any, generated: Tensor, eos_ids: Sequence[int], stop: Sequence[str]) -> list[str]:
    """Decode each row of ``generated [N, G]`` up to its first EOS id and trim stop strings."""
    eos = set(int(e) for e in eos_ids)
    texts = []
    for row in generated.tolist():
        end = first_eos(row, eos)
        texts.append(trim_at_stop(tokenizer.decode(row[:end], skip_special_tokens=True), stop))
    return texts
