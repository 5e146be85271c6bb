"""``unmask eval``: forwarding to lm-eval, recipes, and the summary table and plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eval_tasks import scripted

from unmask.cli import main
from unmask.eval.settings import parse_model_args
from unmask.eval.recipes import RECIPES, commands, sweep, variant_args
from unmask.eval.summarize import load_rows, summarize


@pytest.mark.slow  # a full lm-eval run
def test_eval_command_forwards_to_lm_eval_and_writes_speed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("lm_eval", reason="needs the eval extra")
    task_dir = scripted.write_tasks(tmp_path / "tasks")
    out = tmp_path / "out"
    code = main(["eval", "--model_args", "factory=eval_tasks.scripted:factory,gen_length=64,block_length=16,batch_size=4",
                 "--include_path", str(task_dir), "--tasks", "tiny_gsm8k", "--output_path", str(out)])
    assert code == 0
    (path,) = out.rglob("results_*.json")
    data = json.loads(path.read_text())
    assert data["results"]["tiny_gsm8k"]["exact_match,flexible-extract"] == pytest.approx(2 / 3)
    assert data["unmask_speed"]["tiny_gsm8k"]["requests"] == 3 and data["unmask_speed"]["tiny_gsm8k"]["nfe"] > 0
    assert data["config"]["unmask"]["block_length"] == 16
    printed = capsys.readouterr().out
    assert "unmask speed" in printed and "exact_match" in printed
    assert "batch_size: 4" in printed  # lm-eval's summary line names the batch size that ran (model_args)


@pytest.mark.slow  # a full lm-eval run (imports, task index): the slowest of the default run before
def test_eval_output_holds_no_stray_lines(tmp_path: Path, capfd: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside a git repository and without --device or --batch_size: no git complaint, no device or batch line."""
    pytest.importorskip("lm_eval", reason="needs the eval extra")
    task_dir = scripted.write_tasks(tmp_path / "tasks")
    monkeypatch.chdir(tmp_path)  # not a git repository
    code = main(["eval", "--model_args", "factory=eval_tasks.scripted:factory,gen_length=64,block_length=16,batch_size=4",
                 "--include_path", str(task_dir), "--tasks", "tiny_gsm8k", "--output_path", str(tmp_path / "out")])
    out, err = capfd.readouterr()
    assert code == 0, err
    for stray in ("fatal:", "not a git repository", "cuda", "CUDA", "takes precedence"):
        assert stray not in out + err, stray
    (path,) = (tmp_path / "out").rglob("results_*.json")
    assert json.loads(path.read_text())["git_hash"] is None  # recorded as lm-eval would outside a repository


def test_eval_command_rejects_bad_model_args(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("lm_eval", reason="needs the eval extra")
    code = main(["eval", "--model_args", "factory=eval_tasks.scripted:factory,planner=dilated,gamma=2",
                 "--tasks", "tiny_gsm8k"])
    assert code == 2 and "planner 'dilated' does not take ['gamma']" in capsys.readouterr().err


def test_recipes_list_and_describe(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--recipe", "list"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in RECIPES)
    assert main(["eval", "--recipe", "llada/humaneval"]) == 0
    text = capsys.readouterr().out
    assert "settings from:" in text and "--allow-code-execution" in text and "planner=dilated" in text
    assert main(["eval", "--recipe", "nope"]) == 2


def test_every_recipe_command_parses() -> None:
    names = {v.name for v in sweep()}
    assert {"dus-B8", "dus-B64", "conf-topk-B32", "one-per-call-B32", "eb-g2-B32", "spaced-eb-g2-B32"} <= names
    for recipe in RECIPES.values():
        assert recipe.gen_length % 64 == 0, recipe.name  # every block size of the sweep divides it
        for variant in sweep():
            args = dict(kv.split("=", 1) for kv in _split(variant_args(recipe, variant)))
            settings, config = parse_model_args(args)
            assert settings.pretrained == recipe.model and config.block_length == variant.block_length
        cmd = commands(recipe)[0]
        assert ("--allow-code-execution" in cmd) == recipe.code and recipe.source


def _split(model_args: str) -> list[str]:
    parts, depth, buf = [], 0, ""
    for ch in model_args:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(buf)
            buf = ""
        else:
            buf += ch
    return [*parts, buf]


def _results_file(path: Path, planner: str, block: int, acc: float, nfe: float, gen: int = 256) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "results": {"gsm8k": {"alias": "gsm8k", "exact_match,strict-match": acc - 0.01, "exact_match,flexible-extract": acc,
                              "exact_match_stderr,flexible-extract": 0.01}},
        "config": {"model": "unmask", "model_args": {"pretrained": "GSAI-ML/LLaDA-8B-Instruct"},
                   "unmask": {"planner": planner, "block_length": block}},
        "unmask_speed": {"gsm8k": {"requests": 10, "nfe": nfe * 10, "nfe_per_request": nfe, "nfe_per_token": nfe / gen,
                                   "tokens_per_nfe": gen / nfe, "tokens_per_second": 1000.0 / nfe}},
    }))


def test_summarize_table_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    _results_file(runs / "a" / "results_1.json", "topk(steps=256)", 32, 0.78, 256.0)
    _results_file(runs / "b" / "results_2.json", "dilated", 32, 0.73, 40.0)
    _results_file(runs / "c" / "results_3.json", "topk(counts='dilated')", 32, 0.39, 40.0)
    (runs / "a" / "samples_gsm8k.json").write_text("[]")  # not a results file: skipped
    rows = load_rows(runs)
    assert [r.planner for r in rows] == ["topk(steps=256)", "dilated", "topk(counts='dilated')"]
    dus = rows[1]
    assert dus.metric == "exact_match,flexible-extract" and dus.value == 0.73 and dus.model == "LLaDA-8B-Instruct"
    assert dus.speedup_vs_slowest == pytest.approx(256 / 40) and dus.speedup_vs_one_per_call == pytest.approx(6.4)
    assert main(["eval", "summarize", str(runs), "--out", str(tmp_path / "summary")]) == 0
    md = (tmp_path / "summary" / "summary.md").read_text()
    assert "| gsm8k | LLaDA-8B-Instruct | dilated | 32 | exact_match,flexible-extract | 0.7300 |" in md
    png = (tmp_path / "summary" / "accuracy_vs_nfe.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert "gsm8k" in (tmp_path / "summary" / "summary.csv").read_text()
    assert "6.40" in capsys.readouterr().out
    assert load_rows(runs, metric="exact_match,strict-match")[1].value == pytest.approx(0.72)
    with pytest.raises(FileNotFoundError):
        summarize(tmp_path / "missing")
