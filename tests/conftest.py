"""Shared test set-up: nothing reaches a model or data-set hub, and local eval tasks are written once per module."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The local lm-eval tasks of ``tests/eval_tasks`` written to a fresh folder."""
    from eval_tasks import scripted

    return scripted.write_tasks(tmp_path_factory.mktemp("tasks"))


@pytest.fixture
def one_thread():
    """One torch thread for the test (restored after): the oracles' tiny ops run several times faster without
    thread contention on a shared CPU. Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
