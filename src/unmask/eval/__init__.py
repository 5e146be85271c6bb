"""Evaluation with lm-evaluation-harness: the ``unmask`` model, speed in the results, recipes, tables.

The lm-eval model ``unmask`` (:class:`~unmask.eval.lm.UnmaskLM`) is registered
when :mod:`unmask.eval.lm` is imported, which happens on first use of
``UnmaskLM`` or :func:`simple_evaluate` from this package (``import
unmask.eval.lm`` registers it explicitly, for ``lm_eval`` used directly). Use
:func:`simple_evaluate` (or the ``unmask eval`` command) rather than
``lm_eval.simple_evaluate`` to get the ``unmask_speed`` block in the results and
contained code execution.

The lm-eval parts need the ``eval`` extra (``lm-eval``, ``accelerate``); the
recipes, settings parser and summaries do not.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "UnmaskLM": ".lm", "simple_evaluate": ".runner", "code_execution_tasks": ".runner",
    "KNOWN_KEYS": ".settings", "EvalSettings": ".settings", "parse_model_args": ".settings", "planner_spec": ".settings",
    "SPEED_KEY": ".speed",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_LAZY[name], __name__), name)


__all__ = sorted(_LAZY)
