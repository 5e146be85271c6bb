"""Data parallel: two CPU processes (gloo) give the same merged results as one process."""

from __future__ import annotations

import json
import socket

from pathlib import Path

import pytest

pytest.importorskip("lm_eval", reason="needs the eval extra: pip install -e '.[eval]'")

import torch.multiprocessing as mp
from eval_tasks import scripted
from lm_eval.tasks import TaskManager

from unmask.eval import simple_evaluate

COUNTERS = ("requests", "nfe", "gen_positions", "answer_tokens")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_ranks_match_one(tmp_path: Path) -> None:
    task_dir = scripted.write_tasks(tmp_path / "tasks")
    lm = scripted.scripted_lm({**scripted.GSM8K_SCRIPT, **scripted.MC_SCRIPT}, device="cpu")
    single = simple_evaluate(lm, tasks=["tiny_gsm8k", "tiny_mc"], bootstrap_iters=0, log_samples=False,
                             task_manager=TaskManager(include_path=str(task_dir), include_defaults=False))
    assert single is not None
    mp.start_processes(scripted.dp_worker, args=(2, _free_port(), str(task_dir), str(tmp_path)), nprocs=2,
                       join=True, start_method="spawn")
    merged = json.loads((tmp_path / "results.json").read_text())
    for task in ("tiny_gsm8k", "tiny_mc"):
        for key, value in single["results"][task].items():
            if isinstance(value, float):
                assert merged["results"][task][key] == pytest.approx(value), (task, key)
        for key in COUNTERS:  # every request counted once: rank padding is not
            assert merged["unmask_speed"][task][key] == single["unmask_speed"][task][key], (task, key)
    assert merged["unmask_speed"]["_total"]["world_size"] == 2
    assert merged["config"]["unmask"]["world_size"] == 2
