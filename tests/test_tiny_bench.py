"""The tiny-arith accuracy-vs-NFE benchmark: interval, settings, CLI wiring and a miniature run."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pytest

from unmask import GenerationConfig
from unmask.bench.tiny import register_tiny, run_tiny_bench, tiny_settings, wilson


def test_wilson_interval() -> None:
    lo, hi = wilson(50, 100)
    assert lo < 0.5 < hi and math.isclose(0.5 - lo, hi - 0.5)
    assert math.isclose(lo, 0.4038, abs_tol=1e-3) and math.isclose(hi, 0.5962, abs_tol=1e-3)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0
    with pytest.raises(ValueError, match="n must"):
        wilson(0, 0)


def test_every_setting_is_a_valid_config() -> None:
    settings = tiny_settings()
    families = {s.family for s in settings}
    assert {"one per call", "DUS", "top-k confidence", "top-k random", "EB", "threshold", "spaced EB"} <= families
    assert sorted(s.block_length for s in settings if s.family == "DUS") == [4, 8, 16, 32]
    for s in settings + tiny_settings(quick=True):
        GenerationConfig(gen_length=32, block_length=s.block_length, planner=s.planner)


def test_register_tiny_adds_the_subcommand() -> None:
    parser = argparse.ArgumentParser()
    register_tiny(parser.add_subparsers(dest="benchmark"))
    args = parser.parse_args(["tiny", "--n", "10", "--quick", "--out", "x"])
    assert (args.n, args.quick, args.out) == (10, True, "x") and callable(args.func)


@pytest.mark.slow  # every quick setting, the report and its plot
def test_miniature_run_writes_the_report(tmp_path: Path) -> None:
    result = run_tiny_bench(n=8, out_dir=tmp_path, batch_size=8, quick=True, progress=False)
    assert len(result.rows) == len(tiny_settings(quick=True))
    ref = result.rows[0]
    assert ref.family == "one per call" and ref.nfe == 32 and ref.lo <= ref.acc <= ref.hi
    dus32 = next(r for r in result.rows if r.family == "DUS" and r.block_length == 32)
    assert dus32.nfe == 5
    md = (tmp_path / "tiny_accuracy.md").read_text()
    assert "| DUS | B=32 |" in md and "What the table shows" in md
    assert (tmp_path / "tiny_accuracy.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="n must"):
        run_tiny_bench(n=0, out_dir=None)
