"""Code-executing tasks: refused unless allowed, and when allowed scored through the sandbox."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("lm_eval", reason="needs the eval extra: pip install -e '.[eval]'")

from eval_tasks import scripted
from lm_eval.tasks import TaskManager

from unmask.eval import code_execution_tasks, simple_evaluate
from unmask.eval.code_eval import SandboxedCodeEval, pass_at_k


def test_sandboxed_code_eval_scores_pass_at_k(tmp_path: Path) -> None:
    check = "assert f(2, 3) == 5"
    programs = ["def f(a, b):\n    return a + b", "def f(a, b):\n    while True:\n        pass",
                "def f(a, b):\n    x = bytearray(1 << 40)\n    return a + b",
                f"def f(a, b):\n    open({str(tmp_path / 'out.txt')!r}, 'w')\n    return a + b"]
    metric = SandboxedCodeEval(timeout_s=1.0, memory_mb=256, workers=2)
    scores, details = metric.compute(references=[check] * 4, predictions=[[p] for p in programs], k=[1])
    assert scores == {"pass@1": 0.25}
    assert [details[i][0][1]["result"] for i in range(4)] == ["passed", "timeout", "memory", "blocked"]
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3) and pass_at_k(2, 2, 1) == 1.0


def test_code_tasks_are_detected(task_dir: Path, tmp_path: Path) -> None:
    manager = TaskManager(include_path=str(task_dir), include_defaults=False)
    assert code_execution_tasks(["tiny_gsm8k", "tiny_mc"], manager) == []
    assert code_execution_tasks(["tiny_humaneval", "tiny_gsm8k"], manager) == ["tiny_humaneval"]
    assert code_execution_tasks([str(task_dir / "tiny_humaneval.yaml")], manager) == ["tiny_humaneval"]
    assert code_execution_tasks([{"task": "custom", "unsafe_code": True}], manager) == ["custom"]
    utils = tmp_path / "utils.py"
    utils.write_text("import evaluate\nm = evaluate.load('code_eval')\ndef score(references, predictions): ...\n")
    assert code_execution_tasks([{"task": "sneaky", "metric_list": [{"metric": f"{tmp_path}/utils.score"}]}],
                                manager) == ["sneaky"]


def test_code_task_refused_then_contained_end_to_end(task_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "escape.txt"
    lm = scripted.scripted_lm(scripted.code_script(outside), marker='"""\n', gen_length=96)
    manager = TaskManager(include_path=str(task_dir), include_defaults=False)
    with pytest.raises(ValueError, match=r"tasks \['tiny_humaneval'\] execute model-generated code.*--allow-code-execution"):
        simple_evaluate(lm, tasks=["tiny_humaneval"], task_manager=manager)
    assert not lm.speed.tasks  # refused before any generation
    results = simple_evaluate(lm, tasks=["tiny_humaneval"], bootstrap_iters=0, log_samples=True, task_manager=manager,
                              allow_code_execution=True, code_timeout_s=1.0, code_memory_mb=256)
    assert results is not None
    samples = sorted(results["samples"]["tiny_humaneval"], key=lambda s: s["doc_id"])
    # lm-eval's humaneval pipeline: prompt + completion (cut at "\ndef"), then the test, through the sandbox
    assert samples[0]["filtered_resps"][0][0].endswith("    return a + b\n")
    assert [s["pass@1"] for s in samples] == [1.0, 0.0, 0.0, 0.0]  # right, loop, memory bomb, write outside
    assert "open(" in samples[3]["filtered_resps"][0][0] and not outside.exists()
    assert results["results"]["tiny_humaneval"]["pass@1,create_test"] == 0.25
