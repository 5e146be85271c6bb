"""lm-eval's code-execution metric (HF ``code_eval``), routed through :func:`unmask.eval.sandbox.run_untrusted`.

lm-eval's humaneval and mbpp tasks call ``evaluate.load("code_eval")`` when
their ``utils.py`` is imported and then ``compute(references, predictions, k)``.
:func:`sandboxed_code_eval` makes that load return :class:`SandboxedCodeEval`,
which has the same ``compute`` contract (``(pass_at_k, details)``, unbiased
pass@k of Chen et al. 2021) but runs each candidate, followed by its test
program, in its own sandboxed process. It also swaps the metric into task
modules that were imported earlier in the process, so no code of an
lm-eval task runs outside the sandbox while the context is active.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import numpy as np

from .sandbox import Result, run_untrusted


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` pass: ``1 - C(n-c, k) / C(n, k)``."""
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


class SandboxedCodeEval:
    """Drop-in for HF ``evaluate.load("code_eval")`` that executes in :func:`run_untrusted`."""

    name = "code_eval"

    def __init__(self, timeout_s: float = 10.0, memory_mb: int = 1024, workers: int = 2) -> None:
        if workers < 1:
            raise ValueError(f"workers must be a positive int, got {workers!r}")
        self.timeout_s, self.memory_mb, self.workers = timeout_s, memory_mb, workers

    def compute(
        self,
        references: Sequence[str],
        predictions: Sequence[Sequence[str]],
        k: Sequence[int] | int = (1, 10, 100),
        num_workers: int | None = None,
        timeout: float | None = None,
    ) -> tuple[dict[str, float], dict[int, list[tuple[int, dict[str, Any]]]]]:
        """``predictions[i]`` are candidate programs for test program ``references[i]``."""
        if len(references) != len(predictions):
            raise ValueError(f"references ({len(references)}) and predictions ({len(predictions)}) must align")
        ks = [k] if isinstance(k, int) else list(k)
        jobs = [(i, j, f"{cand}\n{ref}") for i, (ref, cands) in enumerate(zip(references, predictions)) for j, cand in enumerate(cands)]
        limit = timeout if timeout is not None else self.timeout_s
        workers = min(num_workers or self.workers, self.workers)  # the sandbox, not the task, sets the parallelism
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results: list[Result] = list(pool.map(lambda job: run_untrusted(job[2], limit, self.memory_mb), jobs))
        details: dict[int, list[tuple[int, dict[str, Any]]]] = {i: [] for i in range(len(references))}
        for (i, j, _), res in zip(jobs, results, strict=True):
            details[i].append((j, {"task_id": i, "completion_id": j, "passed": res.passed, "result": res.status}))
        totals = np.array([len(predictions[i]) for i in range(len(references))])
        correct = np.array([sum(d["passed"] for _, d in details[i]) for i in range(len(references))])
        scores = {f"pass@{kk}": float(np.mean([pass_at_k(int(n), int(c), kk) for n, c in zip(totals, correct)]))
                  for kk in ks if len(totals) and (totals >= kk).all()}
        return scores, details


@contextmanager
def sandboxed_code_eval(timeout_s: float = 10.0, memory_mb: int = 1024, workers: int = 2) -> Iterator[SandboxedCodeEval]:
    """While active, ``evaluate.load("code_eval")`` (and task modules already holding it) use the sandbox."""
    import evaluate

    metric = SandboxedCodeEval(timeout_s, memory_mb, workers)
    original = evaluate.load

    def load(path: str, *args: Any, **kwargs: Any) -> Any:
        if str(path).rstrip("/").split("/")[-1].removesuffix(".py") == "code_eval":
            return metric
        return original(path, *args, **kwargs)

    swapped: list[tuple[Any, str, Any]] = []
    for name, module in list(sys.modules.items()):
        if not name.startswith("lm_eval.tasks.") or module is None:
            continue
        for attr, value in list(vars(module).items()):
            if getattr(value, "name", None) == "code_eval" and hasattr(value, "compute") and value is not metric:
                swapped.append((module, attr, value))
                setattr(module, attr, metric)
    evaluate.load = load
    try:
        yield metric
    finally:
        evaluate.load = original
        for module, attr, value in swapped:
            setattr(module, attr, value)
