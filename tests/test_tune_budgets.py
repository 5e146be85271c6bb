"""unmask tune: several budgets from one reference decode, max calls per block, over-budget notes, module:factory."""

import json

import pytest
import torch
from toy import ToyDenoiser

from unmask import GenerationConfig, generate
from unmask.cli import main
from unmask.cli.factory import load_factory
from unmask.oracles import named_oracle
from unmask.tune import (
    Score,
    TuneConfig,
    TuneResult,
    tune,
    tune_budgets,
    user_candidates,
)
from unmask.tune import core as core_module
from unmask.tune.candidates import candidate
from unmask.tune.measure import block_calls, reference_planner
from unmask.tune.report import OVER, SCREENED, notes, render_markdown, to_json

pytestmark = pytest.mark.usefixtures("one_thread")

SPECS = ["dilated(base=2, skip_exp=2)", "interleave(k=4)", "topk(score='confidence', steps=2)", "threshold(tau=0.7)",
         "eb(gamma=1.0)"]
FIELDS = ("calls", "calls_max", "eligible", "screened", "agreement", "loglik")


def _prompts():
    oracle = named_oracle("markov1")
    g = torch.Generator().manual_seed(0)
    ids = [oracle.sample(1, 4, g)[0].tolist() for _ in range(200)]
    return oracle, [list(p) for p in dict.fromkeys(map(tuple, ids))][:40]  # distinct prompts


def test_several_budgets_decode_the_reference_once_and_match_single_runs(monkeypatch):
    oracle, ids = _prompts()
    cal, rep = ids[:32], ids[32:]
    cfg = TuneConfig(budget=2, screen=8)
    ref = reference_planner(cfg)
    calls = {"reference": 0, "other": 0}
    real = core_module.decode

    def count(den, prompts, seeds, planner, config):
        calls["reference" if planner == ref else "other"] += 1
        return real(den, prompts, seeds, planner, config)

    monkeypatch.setattr(core_module, "decode", count)
    many = tune_budgets(oracle, cal, rep, user_candidates(SPECS, 32), cfg, (5, 2, 4))
    assert calls["reference"] == 2  # calibration and report, once for the three budgets
    assert [r.config.budget for r in many] == [2, 4, 5]
    for r in many:
        alone = tune(oracle, cal, rep, user_candidates(SPECS, 32), TuneConfig(budget=r.config.budget, screen=8))
        assert r.spec == alone.spec and r.report.agreement == alone.report.agreement
        assert [[getattr(s, f) for f in FIELDS] for s in r.scores] == [[getattr(s, f) for f in FIELDS]
                                                                         for s in alone.scores]
    by = {s.candidate.spec: s for s in many[0].scores}
    assert not by["dilated(base=2, skip_exp=2)"].eligible and by["dilated(base=2, skip_exp=2)"].screened is None
    with pytest.raises(ValueError, match="distinct"):
        tune_budgets(oracle, cal, rep, user_candidates(SPECS, 32), cfg, (2, 2))
    with pytest.raises(ValueError, match="budget must be a positive int"):
        tune_budgets(oracle, cal, rep, user_candidates(SPECS, 32), cfg, (2, 0))


def test_block_calls_sum_to_the_row_calls_and_count_each_blocks_own():
    den = ToyDenoiser(eos_bias=4.0)
    cfg = GenerationConfig(gen_length=16, block_length=4, planner="threshold(tau=0.6)", seed=0)
    out = generate(den, [[1, 2, 3], [4], [5, 6], [7, 8, 9, 10]], cfg)
    per = block_calls(out.trace, 4)  # [4 rows, 4 blocks]
    assert per.sum(-1).tolist() == out.nfe_per_row.tolist()
    t = out.trace  # independently: the calls of block b in which the row revealed something
    want = torch.stack([((t.block_of_call == b)[:, None] & (t.revealed_per_call > 0)).sum(0) for b in range(4)], -1)
    assert per.tolist() == want.tolist()
    assert (per == 0).any() and per.max() > 1  # an early exit skipped blocks; some block took several calls


def test_max_calls_per_block_is_measured_per_candidate():
    den, ids = ToyDenoiser(), [[a, b] for a in range(8) for b in range(5)]
    specs = ["dilated(base=2, skip_exp=2)", "threshold(tau=0.7)", "eb(gamma=4.0)"]
    cfg = TuneConfig(budget=4, gen_length=32, block_length=16)
    res = tune(den, ids[:32], ids[32:], user_candidates(specs, 16, 2), cfg)
    by = {s.candidate.spec: s for s in res.scores}
    assert by[specs[0]].calls_max == by[specs[0]].candidate.fixed_calls == 3
    for spec in specs[1:]:  # independently: the most calls any row revealed something in, within one block
        out = generate(den, ids[:32], cfg.generation(spec))
        t = out.trace
        most = max(int(((t.block_of_call == b)[:, None] & (t.revealed_per_call > 0)).sum(0).max()) for b in range(2))
        assert by[spec].calls_max == most and by[spec].calls_max > by[spec].calls  # the slowest row: above the mean
    data = json.loads(json.dumps(to_json([res])))
    assert [s["calls_max"] for s in data["budgets"][0]["scores"]] == [s.calls_max for s in res.scores]
    assert "max calls/block" in render_markdown(res)


def _result(scores):
    cfg = TuneConfig(budget=4)
    return TuneResult(cfg, scores, scores[0], scores[0], 64, 16)


def test_over_budget_notes_mark_screened_and_fully_measured_rows_apart():
    ok = Score(candidate("x", "interleave(k=4)", 32), 4.0, 4, True, agreement=0.9)
    full = Score(candidate("x", "dilated(base=2, skip_exp=1)", 32), 5.0, 5, False, agreement=0.95)
    screened = Score(candidate("x", "threshold(tau=0.99)", 32), 9.5, 14, False, screened=32)
    md = render_markdown(_result([ok, full, screened]))
    rows = {line.split("`")[1]: line for line in md.splitlines() if line.startswith("|") and "`" in line}
    assert "5.00 ✗ |" in rows["dilated(base=2, skip_exp=1)"] and "9.50 ✗* |" in rows["threshold(tau=0.99)"]
    assert "✗" not in rows["interleave(k=4)"]
    assert OVER in md and SCREENED.format(n=32) in md
    assert notes(_result([ok, full])) == OVER  # no screened row: no screened note
    assert notes(_result([ok, screened])) == SCREENED.format(n=32)
    assert notes(_result([ok])) == ""


FACTORY = """
from unmask.oracles import named_oracle
from unmask.models import load


def ids():
    return named_oracle("markov1"), None


def text():
    return load("tiny-arith")


class Builder:
    @staticmethod
    def make():
        return ids()


not_callable = 3


def one():
    return named_oracle("markov1")


def bad_tokenizer():
    return named_oracle("markov1"), 5
"""


@pytest.fixture
def factory(tmp_path, monkeypatch):
    name = f"userfactory_{tmp_path.name}"
    (tmp_path / f"{name}.py").write_text(FACTORY)
    (tmp_path / "broken_dep_factory.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_cli_tune_factory_with_token_ids_at_several_budgets(factory, tmp_path, capsys):
    plot, md, js = tmp_path / "f.png", tmp_path / "f.md", tmp_path / "f.json"
    code = main(["tune", "--model", f"{factory}:Builder.make", "--budget", "4,2", "--temperature", "1",
                 "--samples", "24", "--search", "0", "--plot", str(plot), "--markdown", str(md), "--json", str(js),
                 "--candidates", "dilated(base=2, skip_exp=2)", "interleave(k=2)", "threshold(tau=0.9)"])
    out = capsys.readouterr().out
    assert code == 0 and out.count("calibration frontier at") == 2 and out.count("winner: ") == 2
    assert (tmp_path / "f-2.png").exists() and (tmp_path / "f-4.png").exists() and not plot.exists()
    text = md.read_text()
    assert text.index("## 2 calls per 32-token block") < text.index("## 4 calls per 32-token block")
    data = json.loads(js.read_text())
    assert [b["budget"] for b in data["budgets"]] == [2, 4] and data["n_calibration"] == 24
    assert all(isinstance(s["calls_max"], int) for b in data["budgets"] for s in b["scores"])


def test_cli_tune_factory_with_a_tokenizer(factory, tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(["Q:26+34-6+33;", "Q:80-30+89;", "Q:27+97*4;", "Q:15*8-3;"]))
    code = main(["tune", "--model", f"{factory}:text", "--prompts", str(prompts), "--budget", "2", "--plot",
                 str(tmp_path / "t.png"), "--candidates", "dilated(base=6, skip_exp=1)"])
    out = capsys.readouterr().out
    assert code == 0 and "2 prompts" in out and "winner: dilated(base=6, skip_exp=1)" in out


@pytest.mark.parametrize(
    "model, extra, message",
    [
        ("no_such_module_xyz:build", [], "no module named 'no_such_module_xyz'"),
        ("{f}:missing", [], "has no attribute 'missing'"),
        ("{f}:not_callable", [], "not_callable is a int, not a callable"),
        ("{f}:one", [], "must return (denoiser, tokenizer) with an unmask.Denoiser first, got a MarkovOracle"),
        ("{f}:bad_tokenizer", [], "the tokenizer must have encode()"),
        ("{f}:ids", ["--device", "cpu"], "--device and --dtype apply to checkpoints"),
        ("{f}:ids", ["--budget", "2,x"], "--budget must be calls per block"),
        ("{f}:ids", ["--budget", "2,4,2"], "--budget must not repeat a value"),
        ("{f}:ids", ["--temperature", "0"], "--prompts FILE is required at --temperature 0"),
    ],
)
def test_cli_tune_factory_mistakes_are_one_line(factory, model, extra, message, capsys):
    argv = ["tune", "--model", model.format(f=factory), "--budget", "2", "--samples", "8", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_a_factory_whose_own_import_fails_is_not_reported_as_missing(factory):
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_xyz"):
        load_factory("broken_dep_factory:build")


def test_cli_greedy_search_needs_held_out_prompts(tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(f"{i % 3} {i // 3}" for i in range(12)))  # 6 calibration, 6 report
    assert main(["tune", "--model", "oracle:markov1", "--prompts", str(prompts), "--budget", "4", "--temperature",
                 "0", "--search", "10"]) == 2
    assert "needs at least 8 calibration prompts" in capsys.readouterr().err
