"""``unmask demo``: the bundled model by default, the exact oracle with ``--oracle``, bad input refused first."""

from __future__ import annotations

import re

import pytest

from unmask.cli import main


def test_demo_on_the_bundled_model(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    page = tmp_path / "demo.html"
    assert main(["demo", "--problems", "6", "--show", "2", "--html", str(page)]) == 0
    out = capsys.readouterr().out
    assert "tiny-arith" in out
    for name, calls in (("DUS (dilated)", 5), ("confidence top-k, DUS counts", 5), ("one token per call", 32)):
        assert f"{name}: {calls} calls" in out
    for adaptive in ("threshold (tau=0.95)", "EB (gamma=0.1)"):  # the adaptive planners are in the views and the table
        assert re.search(rf"^{re.escape(adaptive)}: \d+(\.\d)? calls", out, flags=re.M)
        assert re.search(rf"^│ {re.escape(adaptive)}\s+│\s+\d+\.\d │", out, flags=re.M)
    marks = re.findall(r"^(Q:\S+;).*  (?:A:(\d+)|no A:) (right|wrong)(?: \(A:(\d+)\))?$", out, flags=re.M)
    assert len(marks) == 5 * 2  # two problems shown per planner, each with its final answer marked
    for _, answer, verdict, expected in marks:  # the mark judges the answer after A:, not the chain
        assert (verdict == "right") == (expected == "") and (verdict == "wrong" or answer)
    assert "6 held-out problems" in out and "answer acc" in out
    assert re.search(r"fewest calls within a point of one token per call \(\d+\.\d%\): .+, \d+\.\d calls", out)
    html = page.read_text()
    shown = [f"{q}  {name}: answer" for q in re.findall(r"^(Q:\S+;)", out, flags=re.M)[:2]
             for name in ("DUS (dilated)", "one token per call")]
    assert all(row in html for row in shown)
    assert "(5 calls)" in html and not re.search(r"calls\)?,? *<span class='calls'>", html)  # calls stated once


def test_demo_on_the_oracle(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--oracle", "--samples", "4", "--gen-length", "32", "--block-length", "16"]) == 0
    out = capsys.readouterr().out
    assert "Markov" in out and "path KL" in out
    assert re.search(r"DUS \(dilated\)\s+│\s+8\s+│", out)  # 2 blocks of 16 at 4 calls each


@pytest.mark.parametrize("argv, message", [
    (["demo", "--problems", "0"], "--problems must be a positive int"),
    (["demo", "--problems", "4", "--show", "5"], "--show must be an int in [0, --problems=4]"),
    (["demo", "--oracle", "--samples", "0"], "--samples must be a positive int"),
    (["demo", "--html", "/nonexistent/dir/demo.html"], "--html '/nonexistent/dir/demo.html': its folder does not exist"),
])
def test_demo_refuses_bad_counts(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err
