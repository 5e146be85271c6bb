"""Seeded GSM8K-like arithmetic problems with a local chain of thought.

A problem is a prompt such as ``Q:15*8-3;`` and an answer such as
``15*8=080+40=120;-03=117;A:117``. The first step writes the first operation
and its result; each later step writes the next operation on the running
value and the new value; ``A:`` gives the final answer, which is checked by
exact match. Multiplications (two-digit by one-digit only) spell out their
partial products (``15*8 = 10*8 + 5*8 = 080 + 40``). Numbers in the chain of
thought have a fixed width (operands two digits, partial products of the
units two, computed values three), so where every character sits follows
from the prompt alone: a masked position is never ambiguous about *which*
digit it holds, only about its value, and each digit depends on a few digits
at fixed distances to its left. No intermediate or final value is
negative; every value stays below 1000.

Splits are fixed by a hash of the prompt string (SHA-256, not Python's salted
``hash``): 1/16 of all prompts are held out, and those are split again into
test and validation, so training never sees a held-out prompt and test and
validation are disjoint by construction, whatever sizes are drawn.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

PAD, EOS, MASK = "<pad>", "<eos>", "<mask>"
SPECIALS = (PAD, EOS, MASK)
CHARS = "0123456789+-*=;:QA "
VOCAB: tuple[str, ...] = SPECIALS + tuple(CHARS)  # id = index
TOKEN_ID = {tok: i for i, tok in enumerate(VOCAB)}
PAD_ID, EOS_ID, MASK_ID = (TOKEN_ID[s] for s in SPECIALS)

GEN_LENGTH = 32  # generated tokens per problem: the answer, then EOS padding (at least one EOS)
PROMPT_WIDTH = 14  # longest prompt, in characters: ``Q:99+99-99+99;``
KINDS = ("add2", "add3", "mul_sub", "mul_add", "add_mul")
SPLITS = ("train", "val", "test")

TEST_SEED, VAL_SEED = 20250619, 20250620  # streams the held-out sets are drawn from

# the prompts make_problem draws, and so the only ones the bundled model was trained on (numbers 1..99, no
# leading zero; products two digits by one digit)
_N, _X, _D = "(?:[1-9][0-9]?)", "(?:[1-9][0-9])", "[2-9]"
PROMPT_FORMAT = re.compile(rf"Q:(?:{_N}(?:[+-]{_N}){{2,3}}|{_X}\*{_D}[+-]{_N}|{_N}\+{_X}\*{_D});")
FORMAT_HELP = ("'Q:' then three or four numbers 1-99 joined by + or - (Q:26+34-6+33;), or a two-digit by one-digit "
               "product with a number added or subtracted (Q:86*2+89; Q:15*8-3; Q:5+15*8;), ending in ';'")


def matches_format(prompt: str) -> bool:
    """Whether ``prompt`` is of a kind the bundled model was trained on (:data:`FORMAT_HELP`)."""
    return PROMPT_FORMAT.fullmatch(prompt) is not None


@dataclass(frozen=True)
class Problem:
    """One problem: ``prompt`` (``Q:...;``), ``answer`` (chain of thought + ``A:value``) and ``value``."""

    prompt: str
    answer: str
    value: int


def split_of(prompt: str) -> str:
    """``"train"``, ``"val"`` or ``"test"`` for a prompt, from the SHA-256 of its text."""
    h = hashlib.sha256(prompt.encode()).digest()
    if h[0] >= 16:  # 15/16 of prompts
        return "train"
    return "test" if h[1] % 2 == 0 else "val"


def _num(value: int, width: int = 3) -> str:
    """``value`` zero-padded to ``width`` digits (computed values have a fixed width)."""
    return f"{value:0{width}d}"


def _mul_steps(x: int, d: int) -> tuple[str, int]:
    """``x*d=TTT+UU=PPP`` with the tens and units partial products spelled out."""
    tens, units = x // 10 * 10, x % 10
    return f"{x}*{d}={_num(tens * d)}+{_num(units * d, 2)}={_num(x * d)}", x * d


def _addsub(rng: random.Random, value: int) -> tuple[str, int, int]:
    """A random ``+b`` or ``-b`` (b in 1..99) that keeps the value >= 0: ``(sign, b, new value)``."""
    if value >= 1 and rng.random() < 0.5:
        b = rng.randint(1, min(99, value))
        return "-", b, value - b
    b = rng.randint(1, 99)
    return "+", b, value + b


def make_problem(rng: random.Random, kind: str | None = None) -> Problem:
    """Draw one problem (of ``kind``, or a random kind) from ``rng``."""
    kind = kind if kind is not None else rng.choice(KINDS)
    if kind in ("add2", "add3"):
        a = rng.randint(1, 99)
        sign, b, value = _addsub(rng, a)
        expr, steps = f"{a}{sign}{b}", [f"{_num(a, 2)}{sign}{_num(b, 2)}={_num(value)}"]
        for _ in range(1 if kind == "add2" else 2):
            sign, b, value = _addsub(rng, value)
            steps.append(f"{sign}{_num(b, 2)}={_num(value)}")
            expr += f"{sign}{b}"
    elif kind in ("mul_sub", "mul_add"):
        x, d = rng.randint(10, 99), rng.randint(2, 9)
        mul, p = _mul_steps(x, d)
        b = rng.randint(1, min(99, p)) if kind == "mul_sub" else rng.randint(1, 99)
        sign = "-" if kind == "mul_sub" else "+"
        value = p - b if kind == "mul_sub" else p + b
        expr, steps = f"{x}*{d}{sign}{b}", [mul, f"{sign}{_num(b, 2)}={_num(value)}"]
    elif kind == "add_mul":  # b + x*d: precedence, the product comes first, then b is added to it
        b, x, d = rng.randint(1, 99), rng.randint(10, 99), rng.randint(2, 9)
        mul, p = _mul_steps(x, d)
        value = b + p
        expr, steps = f"{b}+{x}*{d}", [mul, f"+{_num(b, 2)}={_num(value)}"]
    else:
        raise ValueError(f"kind must be one of {KINDS} or None, got {kind!r}")
    return Problem(prompt=f"Q:{expr};", answer=";".join(steps) + f";A:{value}", value=value)


def problems(seed: int, split: str | None = None, gen_length: int = GEN_LENGTH) -> Iterator[Problem]:
    """An endless seeded stream of problems whose answer fits ``gen_length`` with one EOS.

    ``split`` keeps only prompts of that split (None: all); repeats are possible
    in the training stream and removed in :func:`heldout`.
    """
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
    rng = random.Random(seed)
    while True:
        p = make_problem(rng)
        if len(p.answer) >= gen_length:
            continue
        if split is None or split_of(p.prompt) == split:
            yield p


def heldout(n: int, split: str = "test") -> list[Problem]:
    """The first ``n`` distinct held-out problems of ``split`` (``"test"`` or ``"val"``), always the same."""
    if split not in ("test", "val"):
        raise ValueError(f"split must be 'test' or 'val', got {split!r}")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    seen: set[str] = set()
    out: list[Problem] = []
    for p in problems(TEST_SEED if split == "test" else VAL_SEED, split):
        if p.prompt not in seen:
            seen.add(p.prompt)
            out.append(p)
            if len(out) == n:
                return out
    raise AssertionError("unreachable: the stream is endless")


def encode(text: str) -> list[int]:
    """Character ids of ``text`` (no special tokens); unknown characters raise ``ValueError``."""
    try:
        return [TOKEN_ID[c] for c in text]
    except KeyError as err:
        raise ValueError(f"text holds a character outside the vocabulary {CHARS!r}: {err.args[0]!r}") from None


def answer_ids(answer: str, gen_length: int = GEN_LENGTH) -> list[int]:
    """Answer ids padded with EOS to ``gen_length`` (LLaDA SFT style)."""
    ids = encode(answer)
    if len(ids) >= gen_length:
        raise ValueError(f"answer {answer!r} has {len(ids)} characters; gen_length={gen_length} leaves no EOS")
    return ids + [EOS_ID] * (gen_length - len(ids))


def final_answer(text: str) -> str | None:
    """The value after the last ``A:`` in ``text`` (digits only), or None."""
    i = text.rfind("A:")
    if i < 0:
        return None
    digits = ""
    for c in text[i + 2 :]:
        if not c.isdigit():
            break
        digits += c
    return digits or None


def score(texts: Sequence[str], answers: Sequence[str]) -> tuple[float, float]:
    """``(answer accuracy, exact match)`` of generated ``texts`` against reference ``answers``.

    Answer accuracy compares the value after ``A:`` (a text without one is
    wrong); exact match compares the whole chain of thought. Texts are cut at
    EOS beforehand (``GenerationOutput.texts`` already is).
    """
    if len(texts) != len(answers):
        raise ValueError(f"texts and answers must have the same length, got {len(texts)} and {len(answers)}")
    if not texts:
        raise ValueError("texts must not be empty")
    right = sum(final_answer(t) is not None and final_answer(t) == final_answer(a) for t, a in zip(texts, answers))
    exact = sum(t.strip() == a.strip() for t, a in zip(texts, answers))
    return right / len(texts), exact / len(texts)
