"""``simple_evaluate`` with the unmask model: speed in the results, code execution opt-in.

:func:`simple_evaluate` wraps ``lm_eval.simple_evaluate`` and adds:

- ``results["unmask_speed"]``: per task and ``_total``, the counters of
  :mod:`unmask.eval.speed`, gathered from every data-parallel rank to rank 0;
  ``results["config"]["unmask"]``: the model's settings (planner spec, sizes).
- a refusal, before anything is loaded, of tasks that execute generated code
  (humaneval, mbpp, ``unsafe_code: true``, or a metric that uses
  ``code_eval`` / ``HF_ALLOW_CODE_EVAL``) unless ``allow_code_execution=True``;
  when allowed, code runs through :func:`unmask.eval.sandbox.run_untrusted`.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import lm_eval.evaluator
from lm_eval.evaluator import simple_evaluate as lm_eval_simple_evaluate
from lm_eval.loggers.utils import get_commit_from_path
from lm_eval.tasks import TaskManager

from .code_eval import sandboxed_code_eval
from .lm import UnmaskLM
from .speed import SPEED_KEY, merge, print_speed, speed_report

log = logging.getLogger(__name__)
CODE_TASK_NAME = re.compile(r"humaneval|mbpp", re.IGNORECASE)
CODE_MARKERS = ("code_eval", "HF_ALLOW_CODE_EVAL")


def _metric_runs_code(metric: Any) -> bool:
    """A metric given as ``/path/module.function`` (unresolved ``!function``) whose module uses code_eval."""
    if not isinstance(metric, str) or "." not in metric:
        return False
    if any(marker in metric for marker in CODE_MARKERS):
        return True
    module = Path(metric.rpartition(".")[0] + ".py")
    try:
        return module.is_file() and any(m in module.read_text(encoding="utf-8") for m in CODE_MARKERS)
    except OSError as err:
        log.warning("could not read %s to check for code execution (%s); treating it as executing code", module, err)
        return True


def _config_runs_code(name: str, cfg: dict[str, Any] | None) -> bool:
    if CODE_TASK_NAME.search(name or ""):
        return True
    if not cfg:
        return False
    if cfg.get("unsafe_code"):
        return True
    metrics = cfg.get("metric_list") or []
    return any(_metric_runs_code(m.get("metric")) for m in metrics if isinstance(m, dict))


def code_execution_tasks(tasks: Sequence[Any], task_manager: TaskManager) -> list[str]:
    """The tasks among ``tasks`` (names, groups, tags, globs, YAML paths, dicts, Task objects) that run code."""
    from lm_eval.tasks._yaml_loader import load_yaml  # lm-eval has no public loader that keeps !function tags

    index = task_manager.task_index
    tags, groups = set(task_manager.all_tags), set(task_manager.all_groups)
    found: list[str] = []
    seen: set[str] = set()

    def visit(spec: Any) -> None:
        if isinstance(spec, dict):
            name = str(spec.get("task") or spec.get("group") or "")
            if "group" in spec:
                for sub in spec.get("task") or []:
                    visit(sub)
            if _config_runs_code(name, spec):
                found.append(name or repr(spec))
            return
        if not isinstance(spec, str):  # a built Task or Group object
            name = str(getattr(spec, "task_name", None) or getattr(getattr(spec, "config", None), "task", "") or spec)
            cfg = getattr(spec, "config", None)
            cfg_dict = cfg.to_dict() if hasattr(cfg, "to_dict") else None
            if getattr(spec, "UNSAFE_CODE", False) or _config_runs_code(name, cfg_dict):
                found.append(name)
            return
        if spec in seen:
            return
        seen.add(spec)
        entry = index.get(spec)
        if entry is None:
            path = Path(spec).expanduser()
            if path.is_file():
                visit(load_yaml(path, resolve_func=False))
            elif any(c in spec for c in "*?["):
                for name in task_manager.match_tasks([spec]):
                    visit(name)
            elif CODE_TASK_NAME.search(spec):
                found.append(spec)
            return
        if spec in tags:
            for member in sorted(entry.tags):
                visit(member)
        elif spec in groups:
            for sub in (entry.cfg or {}).get("task") or []:
                visit(sub)
        elif _config_runs_code(spec, entry.cfg):
            found.append(spec)

    for task in tasks:
        visit(task)
    return sorted(set(found))


def git_commit_hash() -> str | None:
    """lm-eval's ``git_hash`` of the results (``git describe --always`` in the working directory), with git's
    own complaint outside a repository ("fatal: not a git repository") kept out of the user's terminal."""
    try:
        done = subprocess.run(["git", "describe", "--always"], capture_output=True, text=True, check=False)
    except FileNotFoundError:  # git is not installed: lm-eval falls back to reading .git, as here
        return get_commit_from_path(os.getcwd())
    if done.returncode == 0:
        return done.stdout.strip()
    log.debug("git describe failed (%s); reading .git instead", done.stderr.strip())
    return get_commit_from_path(os.getcwd())


@contextmanager
def quiet_git_hash() -> Iterator[None]:
    """While active, lm-eval's evaluator records :func:`git_commit_hash` instead of running git on our stderr."""
    original = lm_eval.evaluator.get_git_commit_hash
    lm_eval.evaluator.get_git_commit_hash = git_commit_hash
    try:
        yield
    finally:
        lm_eval.evaluator.get_git_commit_hash = original


def _build_lm(model: Any, model_args: Any, batch_size: Any, device: Any) -> Any:
    """Instantiate the unmask model here (not inside lm-eval) so its counters can be read afterwards."""
    if not (isinstance(model, str) and model == "unmask"):
        return model
    from lm_eval.utils import simple_parse_args_string

    args = dict(model_args) if isinstance(model_args, dict) else simple_parse_args_string(model_args or "")
    for key, value in (("batch_size", batch_size), ("device", device)):
        if value is None:
            continue
        if key not in args:
            args[key] = value
        elif str(args[key]) != str(value):  # lm-eval's CLI always sends its defaults (batch_size 1, cuda:0)
            log.warning("model_args %s=%s takes precedence over --%s %s", key, args[key], key, value)
    return UnmaskLM(**args)


def simple_evaluate(
    model: Any = "unmask",
    model_args: str | dict[str, Any] | None = None,
    tasks: Sequence[Any] | None = None,
    *,
    allow_code_execution: bool = False,
    include_path: str | Iterable[str] | None = None,
    code_timeout_s: float = 10.0,
    code_memory_mb: int = 1024,
    print_speed_table: bool = False,
    **kwargs: Any,
) -> dict[str, Any] | None:
    """``lm_eval.simple_evaluate`` plus ``unmask_speed`` and contained code execution.

    ``model`` is ``"unmask"`` (built from ``model_args``), an :class:`UnmaskLM`,
    or any other lm-eval model (no speed block then). Returns the results on
    rank 0 and None on other ranks, like lm-eval.
    """
    tasks = list(tasks or [])
    task_manager = kwargs.pop("task_manager", None)
    if task_manager is None:
        paths = [include_path] if isinstance(include_path, str) else list(include_path or [])
        task_manager = TaskManager(include_path=paths or None)
    elif include_path is not None:
        raise ValueError("give include_path or task_manager, not both")
    runs_code = code_execution_tasks(tasks, task_manager)
    if runs_code and not allow_code_execution:
        raise ValueError(
            f"tasks {runs_code} execute model-generated code to score it; refusing without --allow-code-execution "
            "(allow_code_execution=True). When allowed, each program runs in a sandboxed process with time, CPU, "
            "memory and file-size limits, a fresh temporary directory and a scrubbed environment."
        )
    lm = _build_lm(model, model_args, kwargs.pop("batch_size", None), kwargs.pop("device", None))
    t0 = time.perf_counter()
    with ExitStack() as stack:
        if runs_code:
            kwargs["confirm_run_unsafe_code"] = True
            stack.enter_context(sandboxed_code_eval(code_timeout_s, code_memory_mb))
        stack.enter_context(quiet_git_hash())
        results = lm_eval_simple_evaluate(model=lm, model_args=model_args, tasks=tasks, task_manager=task_manager, **kwargs)
    wall = time.perf_counter() - t0
    if not isinstance(lm, UnmaskLM):
        return results
    gathered = lm.gather_object(lm.speed.snapshot(), dst=0)  # every rank takes part
    if results is None:
        return None
    assert gathered is not None
    results[SPEED_KEY] = speed_report(merge(gathered), wall, lm.world_size)
    results.setdefault("config", {})["model"] = "unmask"
    if print_speed_table:
        print_speed(results[SPEED_KEY])
    return results
