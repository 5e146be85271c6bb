"""The tiny-arith problem generator, its splits, verifier and tokenizer."""

from __future__ import annotations

import itertools
import random
import re

import pytest

from unmask.tiny.data import (
    EOS_ID, GEN_LENGTH, KINDS, MASK_ID, PAD_ID, PROMPT_WIDTH, VOCAB, answer_ids, encode, final_answer, heldout,
    make_problem, problems, score, split_of,
)


def _check_chain(prompt: str, answer: str, value: int) -> None:
    """Every step's arithmetic is right, computed values have their fixed width, A: is the prompt's value."""
    expr = prompt.removeprefix("Q:").removesuffix(";")
    assert eval(expr) == value  # standard precedence: b+x*d multiplies first
    *steps, last = answer.split(";")
    assert last == f"A:{value}"
    ops = {"+": int.__add__, "-": int.__sub__, "*": int.__mul__}
    running = None
    for i, step in enumerate(steps):
        lhs, *results = step.split("=")
        if i == 0:  # the first operation: two-digit operands (a one-digit multiplier)
            m = re.fullmatch(r"(\d{2})([-+])(\d{2})|(\d{2})(\*)([2-9])", lhs)
            assert m, step
            a, op, b = (g for g in m.groups() if g is not None)
            target = ops[op](int(a), int(b))
        else:  # the next operation on the running value, operand two digits
            m = re.fullmatch(r"([-+])(\d{2})", lhs)
            assert m, step
            target = ops[m[1]](running, int(m[2]))
        for r in results[:-1]:  # partial products: three digits + two digits
            assert re.fullmatch(r"\d{3}\+\d{2}", r), step
            assert sum(int(x) for x in r.split("+")) == target
        assert re.fullmatch(r"\d{3}", results[-1]), step  # no sign: never negative
        running = int(results[-1])
        assert running == target
    assert running == value


def test_stream_is_seeded_and_correct() -> None:
    a = list(itertools.islice(problems(7), 300))
    b = list(itertools.islice(problems(7), 300))
    c = list(itertools.islice(problems(8), 300))
    assert a == b and a != c
    for p in a:
        _check_chain(p.prompt, p.answer, p.value)
        assert len(p.answer) < GEN_LENGTH and len(p.prompt) <= PROMPT_WIDTH


def test_every_kind_is_generated_and_checked() -> None:
    rng = random.Random(0)
    for kind in KINDS:
        for _ in range(50):
            p = make_problem(rng, kind)
            _check_chain(p.prompt, p.answer, p.value)
    with pytest.raises(ValueError, match="kind"):
        make_problem(rng, "div")


def test_splits_are_disjoint() -> None:
    test, val = heldout(1000, "test"), heldout(300, "val")
    assert len({p.prompt for p in test}) == 1000
    assert all(split_of(p.prompt) == "test" for p in test)
    assert all(split_of(p.prompt) == "val" for p in val)
    assert not {p.prompt for p in test} & {p.prompt for p in val}
    train = {p.prompt for p in itertools.islice(problems(0, "train"), 20000)}
    assert not train & {p.prompt for p in test} and not train & {p.prompt for p in val}
    assert heldout(10, "test") == test[:10]  # always the same problems


def test_heldout_arguments() -> None:
    with pytest.raises(ValueError, match="split"):
        heldout(5, "train")
    with pytest.raises(ValueError, match="n must"):
        heldout(0)
    with pytest.raises(ValueError, match="split"):
        next(problems(0, "dev"))


def test_verifier() -> None:
    ref = "15*8=080+40=120;-43=077;A:77"
    assert final_answer(ref) == "77"
    assert final_answer("no answer") is None and final_answer("A:") is None
    assert final_answer("1+2=3;A:3<eos>junk") == "3"
    assert score([ref, "15*8=080+40=120;-43=076;A:77", "A:78", ""], [ref] * 4) == (0.5, 0.25)
    with pytest.raises(ValueError, match="same length"):
        score(["A:1"], [])


def test_encoding_and_tokenizer_agree() -> None:
    from unmask.tiny.tokenizer import build_tokenizer

    tok = build_tokenizer()
    text = "Q:15*8-43;15*8=080+40=120;-43=077;A:77"
    assert tok(text, add_special_tokens=False)["input_ids"] == encode(text)
    assert tok.decode(encode(text)) == text
    assert (tok.mask_token_id, tok.eos_token_id, tok.pad_token_id) == (MASK_ID, EOS_ID, PAD_ID)
    assert len(tok) == len(VOCAB)
    ids = answer_ids("1+2=3;A:3")
    assert len(ids) == GEN_LENGTH and ids[-1] == EOS_ID
    with pytest.raises(ValueError, match="outside the vocabulary"):
        encode("Q:1/2")
    with pytest.raises(ValueError, match="no EOS"):
        answer_ids("1" * GEN_LENGTH)
