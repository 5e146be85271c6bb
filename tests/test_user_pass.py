"""A new user's pass (issue 19): start-up checks of the server, logs off a terminal, bench outputs, a quick --help."""

from __future__ import annotations

import argparse
import io
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from unmask.bench.args import (
    ORACLE_FULL, ORACLE_QUICK, TINY_FULL, TINY_QUICK, add_oracle_arguments, add_tiny_arguments, output_dir,
    quick_defaults,
)
from unmask.cli import main
from unmask.progress import StageLog
from unmask.serve.launch import check_port
from unmask.serve.settings import ServeSettings

SRC = Path(__file__).resolve().parents[1] / "src"


# ------------------------------------------------------------------ serve: start-up checks


def test_a_port_in_use_is_one_line_before_the_model(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    import unmask.models

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ValueError, match=f"--port {port}: 127.0.0.1:{port} is already in use by another process"):
            check_port("127.0.0.1", port)
        monkeypatch.setattr(unmask.models, "load", lambda *a, **k: pytest.fail("the model must not be read"))
        assert main(["serve", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already in use" in err and "unmask serve" not in err  # no banner
    check_port("127.0.0.1", port)  # free again once closed
    check_port("127.0.0.1", 0)


def test_a_host_that_is_not_here_is_named() -> None:
    with pytest.raises(ValueError, match="--host 'no-such-host.invalid' is not an address of this machine"):
        check_port("no-such-host.invalid", 8000)


@pytest.mark.parametrize(
    "max_tokens, block, max_length, prompt, fits",
    [(1000, 32, 64, 1, 32), (60, 32, 64, 2, 32), (33, 32, 64, 1, 32), (40, 64, 40, 2, 38), (64, 32, 64, 1, 32)],
)
def test_default_max_tokens_is_checked_against_the_model(max_tokens: int, block: int, max_length: int, prompt: int,
                                                         fits: int) -> None:
    settings = ServeSettings(max_tokens=max_tokens, block_length=block)
    with pytest.raises(ValueError, match=f"max_tokens: the default {max_tokens} .* the most that fits is {fits}$"):
        settings.check_model(max_length, prompt)
    ServeSettings(max_tokens=fits, block_length=block).check_model(max_length, prompt)  # the advice is right
    ServeSettings(max_tokens=max_tokens, block_length=block).check_model(None, prompt)  # no limit, no check


def test_default_planner_must_run_the_default_request() -> None:
    with pytest.raises(ValueError, match=r"planner 'interleave\(k=64\)' cannot run the default request "
                                         r"\(max_tokens=32, block_length=32\): k must be <= block_length=32"):
        ServeSettings(planner="interleave(k=64)")
    with pytest.raises(ValueError, match="model_name must be a non-empty string"):
        ServeSettings(model_name="  ")


# ------------------------------------------------------------------ progress in a log


def test_stage_log_prints_one_line_per_stage_and_the_last_step() -> None:
    out = io.StringIO()
    log = StageLog(out, min_interval_s=3600.0)  # no time-based lines: only stages and the end
    with log:
        task = log.add_task("reference", total=4)
        log.advance(task, 2)
        log.update(task, description="dilated")
        log.advance(task)
        log.update(task, description="dilated")  # the same stage: no new line
        log.advance(task)
    lines = [line.rsplit(" (", 1)[0] for line in out.getvalue().splitlines()]
    assert lines == ["reference: 0/4", "dilated: 2/4", "dilated: 4/4"]
    quiet = io.StringIO()
    off = StageLog(quiet)
    off.disable = True
    off.advance(off.add_task("x", total=1))
    hidden = StageLog(quiet)
    hidden.advance(hidden.add_task("x", total=1, visible=False))
    assert quiet.getvalue() == ""


def test_commands_log_progress_when_stdout_is_not_a_terminal() -> None:
    from unmask.progress import make_progress

    assert not sys.stdout.isatty()  # pytest captures stdout
    assert isinstance(make_progress(), StageLog)


# ------------------------------------------------------------------ bench: outputs and --quick


def _parse(add: object, argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add(p)  # type: ignore[operator]
    return p.parse_args(argv)


def test_quick_fills_only_the_options_left_out() -> None:
    a = _parse(add_oracle_arguments, ["--quick", "--budgets", "0"])
    quick_defaults(a, ORACLE_FULL, ORACLE_QUICK)
    assert a.budgets == [0] and a.samples == ORACLE_QUICK["samples"]  # the given value is kept, to be refused
    a = _parse(add_oracle_arguments, [])
    quick_defaults(a, ORACLE_FULL, ORACLE_QUICK)
    assert (a.samples, a.budgets, a.search_evals, a.tune_samples) == tuple(ORACLE_FULL.values())
    a = _parse(add_tiny_arguments, ["--quick"])
    quick_defaults(a, TINY_FULL, TINY_QUICK)
    assert a.n == TINY_QUICK["n"] < TINY_FULL["n"]


def test_reports_go_to_a_fresh_folder_unless_out_names_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert output_dir("benchmarks", "tiny") == Path("benchmarks")
    first = output_dir(None, "tiny")
    assert first.parent == Path("runs") / "bench" and first.name.startswith("tiny-") and not first.exists()
    first.mkdir(parents=True)
    second = output_dir(None, "tiny")
    assert second != first and not second.exists()


def test_bench_tiny_default_run_writes_no_committed_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """``unmask bench tiny --quick`` from a checkout's root: the report lands in runs/bench/, benchmarks/ is untouched."""
    import unmask.bench.tiny as tiny

    (tmp_path / "benchmarks").mkdir()
    committed = tmp_path / "benchmarks" / "tiny_accuracy.md"
    committed.write_text("committed\n")
    monkeypatch.chdir(tmp_path)
    full = tiny.tiny_settings
    monkeypatch.setattr(tiny, "tiny_settings", lambda quick: full(quick)[1:2])  # one setting: where files go is tested
    assert main(["bench", "tiny", "--quick", "--n", "4", "--batch-size", "4"]) == 0
    assert committed.read_text() == "committed\n"
    [folder] = (tmp_path / "runs" / "bench").iterdir()
    assert sorted(p.name for p in folder.iterdir()) == ["tiny_accuracy.md", "tiny_accuracy.png"]
    assert "4 held-out problems" in capsys.readouterr().out


# ------------------------------------------------------------------ start-up time


@pytest.mark.parametrize("argv", [["--help"], ["generate", "--help"], ["bench", "tiny", "--help"], ["serve", "--help"]])
def test_help_imports_neither_torch_nor_transformers(argv: list[str]) -> None:
    """What keeps ``unmask --help`` quick (benchmarks/cli_startup.py times it): no heavy import before a command runs."""
    probe = ("import runpy, sys\nsys.argv = ['unmask', *sys.argv[1:]]\ntry:\n    runpy.run_module('unmask', "
             "run_name='__main__')\nexcept SystemExit:\n    pass\nprint(sorted(m for m in ('torch', 'transformers', "
             "'numpy', 'matplotlib') if m in sys.modules), file=sys.stderr)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, env=env, check=True)
    assert "usage: unmask" in done.stdout
    assert done.stderr.strip().splitlines()[-1] == "[]"


# ------------------------------------------------------------------ python -m unmask.serve.browser


def test_browser_timeout_is_one_line_with_the_reason(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from unmask.serve import browser

    class NeverDone:  # a page whose status never reads 'done' (no generation was started)
        def __init__(self, *args: object) -> None:
            pass

        def __enter__(self) -> NeverDone:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def open(self, url: str) -> None:
            pass

        def wait_for(self, expression: str, timeout: float) -> None:
            raise TimeoutError(f"the page did not reach {expression!r} within {timeout} s; errors: []")

    monkeypatch.setattr(browser, "Chromium", NeverDone)
    assert browser.main(["http://127.0.0.1:8000/", "out.png", "--timeout", "0.5"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "within 0.5 s" in err and "open the playground with ?autorun=1" in err
    assert browser.main(["http://127.0.0.1:8000/?autorun=1", "out.png"]) == 1
    assert "autorun=1, e.g." not in capsys.readouterr().err  # the hint only where it applies


# ------------------------------------------------------------------ tiny-arith's prompt format


@pytest.mark.parametrize("prompt", ["Q:26+34-6+33;", "Q:86*2+89;", "Q:15*8-3;", "Q:5+15*8;", "Q:99-1+5;"])
def test_trained_prompt_kinds_match(prompt: str) -> None:
    from unmask.tiny.data import matches_format

    assert matches_format(prompt)


@pytest.mark.parametrize("prompt", ["Q:1+2;", "Q:1+2+3+4+5;", "Q:05+3+4;", "Q:8*2+1;", "Q:26*10+1;", "1+2+3", "Q:1+2+3"])
def test_other_prompts_do_not(prompt: str) -> None:
    from unmask.tiny.data import matches_format

    assert not matches_format(prompt)


def test_every_drawn_problem_matches_the_format() -> None:
    import random

    from unmask.tiny.data import KINDS, make_problem, matches_format

    rng = random.Random(0)
    assert all(matches_format(make_problem(rng, kind).prompt) for kind in KINDS for _ in range(300))


def test_generate_warns_about_a_prompt_out_of_format(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--model", "tiny-arith", "--gen-length", "32", "Q:1+2;", "Q:86*2+89;"]) == 0
    err = capsys.readouterr().err
    assert "warning: prompts[0] 'Q:1+2;' is not of the form tiny-arith was trained on" in err
    assert "prompts[1]" not in err


# ------------------------------------------------------------------ unmask eval offline


def test_a_task_whose_data_cannot_be_fetched_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("lm_eval", reason="needs the eval extra")
    import lm_eval.__main__

    def offline() -> None:  # what datasets raises for a Hub task without a network
        raise ConnectionError("Couldn't reach 'openai/gsm8k' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(lm_eval.__main__, "cli_evaluate", offline)
    assert main(["eval", "--model_args", "factory=eval_tasks.scripted:factory", "--tasks", "gsm8k"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "a task's data could not be fetched: Couldn't reach 'openai/gsm8k' on the Hub" in err
    assert "--include_path DIR (see examples/eval/tiny_arith" in err


README_LOCAL_TASK = ["eval", "--model_args", "pretrained=tiny-arith,planner=dilated,gen_length=32,block_length=32,"
                     "batch_size=50", "--include_path", "examples/eval/tiny_arith", "--tasks", "tiny_arith"]


def test_readme_local_task_command_is_the_one_tested() -> None:
    readme = (SRC.parent / "README.md").read_text()
    assert "unmask " + " ".join(README_LOCAL_TASK[:3]) + " \\\n    " + " ".join(README_LOCAL_TASK[3:]) in readme


@pytest.mark.slow
def test_readme_local_task_runs_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's offline eval example, as written (from the repository root), with the network off."""
    pytest.importorskip("lm_eval", reason="needs the eval extra")
    import json

    monkeypatch.chdir(SRC.parent)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main([*README_LOCAL_TASK, "--output_path", str(tmp_path)]) == 0
    (path,) = tmp_path.rglob("results_*.json")
    data = json.loads(path.read_text())
    assert data["unmask_speed"]["tiny_arith"]["requests"] == 50
    # the task is the first 50 held-out test problems: lm-eval's score is the library's own accuracy on them
    from unmask import GenerationConfig
    from unmask.tiny import heldout, load_tiny, solve

    denoiser, tok = load_tiny()
    own = solve(denoiser, heldout(50, "test"), GenerationConfig(gen_length=32, block_length=32, planner="dilated"),
                tokenizer=tok)
    assert data["results"]["tiny_arith"]["exact_match,answer"] == pytest.approx(own["answer_acc"])


def test_eval_summarize_never_cuts_a_cell(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from test_eval_cli import _results_file

    long = "spaced(inner=eb(gamma=2.0), start_stride=8)"
    _results_file(tmp_path / "runs" / "a" / "results_1.json", long, 32, 0.7, 40.0)
    _results_file(tmp_path / "runs" / "b" / "results_2.json", "topk(score='confidence', counts='dilated')", 32, 0.6, 40.0)
    assert main(["eval", "summarize", str(tmp_path / "runs"), "--out", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert long in out and "topk(score='confidence', counts='dilated')" in out and "exact_match,flexible-extract" in out
    assert "…" not in out
