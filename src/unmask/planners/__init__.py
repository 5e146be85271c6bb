"""One registry of planners, one signature, and a small spec language.

``make_planner("eb", gamma=1.0)`` or ``parse_planner("spaced(eb(gamma=2), start_stride=8)")``
build the same frozen dataclass objects a user can construct directly.
"""

from __future__ import annotations

import ast
import dataclasses
from typing import Any

from .adaptive import EB, Factor, Spaced, Threshold
from .base import PlanStep, Planner, Selection, State
from .dynamic import Dynamic
from .entropy_sum import EntropySum
from .orders import Farthest, Interleave, Schedule
from .redraw import EntropyBound
from .revise import Edit, Remask, Stable, Wino
from .scheduled import TOPK_SCORES, Binary, Dilated, TopK, fixed_schedule

WRAPPERS = ("spaced", "edit", "remask", "stable")  # planners whose ``inner`` setting is a planner
PLANNERS: dict[str, type[Planner]] = {
    cls.name: cls
    for cls in (Dilated, Binary, TopK, EB, Threshold, Factor, Spaced, Interleave, Farthest, Schedule, Dynamic,
                EntropySum, Edit, Wino, Remask, Stable, EntropyBound)
}


def planner_fields(name: str) -> list[str]:
    """The settings a planner accepts, in declaration order."""
    return [f.name for f in dataclasses.fields(PLANNERS[name])]  # type: ignore[arg-type]


def make_planner(name: str, **kwargs: Any) -> Planner:
    """Build a planner by registry name; unknown names or settings raise ``ValueError``."""
    if name not in PLANNERS:
        raise ValueError(f"planner must be one of {sorted(PLANNERS)}, got {name!r}")
    allowed = planner_fields(name)
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ValueError(f"planner {name!r} does not take {unknown}; its settings are {allowed}")
    if name in WRAPPERS and isinstance(kwargs.get("inner"), str):
        kwargs["inner"] = parse_planner(kwargs["inner"])
    if name in ("topk", "dynamic") and isinstance(kwargs.get("counts"), list):
        kwargs["counts"] = tuple(kwargs["counts"])
    try:
        return PLANNERS[name](**kwargs)
    except TypeError as err:  # missing required settings, e.g. spaced without inner
        raise ValueError(f"planner {name!r}: {err}; its settings are {allowed}") from None


def _literal(node: ast.AST, spec: str, key: str) -> Any:
    """A setting's value: a planner (a registered name, called or not) or a Python literal."""
    name = node.func if isinstance(node, ast.Call) else node
    if isinstance(name, ast.Name) and name.id in PLANNERS:
        return _build(node, spec)
    try:
        return ast.literal_eval(node)
    except ValueError:
        hint = f"; quote a string: {key}={ast.unparse(node)!r}" if isinstance(node, ast.Name) else ""
        raise ValueError(f"planner spec {spec!r}: {key}={ast.unparse(node)} is not a literal; settings are numbers, "
                         f"quoted strings, tuples, None/True/False or planners{hint}") from None


def _build(node: ast.AST, spec: str) -> Planner:
    if isinstance(node, ast.Name):
        return make_planner(node.id)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        if len(node.args) > 1:
            raise ValueError(f"planner spec {spec!r}: use keyword settings, e.g. eb(gamma=1.0)")
        kwargs = {kw.arg: _literal(kw.value, spec, kw.arg) for kw in node.keywords if kw.arg}
        if node.args:  # spaced(eb(...)), edit(threshold(...)): the one positional argument is the inner planner
            kwargs["inner"] = _literal(node.args[0], spec, "inner")
        return make_planner(node.func.id, **kwargs)
    raise ValueError(f"planner spec {spec!r} is not of the form name or name(key=value, ...)")


MAX_SPEC_CHARS = 16_384  # room for a literal list of counts over a long canvas
MAX_SPEC_DEPTH = 32  # nesting of calls, lists and operators; _build and literal_eval recurse


def _depth(tree: ast.AST) -> int:
    """The nesting depth of a syntax tree, walked without recursion."""
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return deepest


def parse_planner(spec: str) -> Planner:
    """Parse ``"dilated(base=2)"``, ``"topk(score='margin', counts='dilated')"``, ``"spaced(eb(gamma=2), start_stride=8)"``.

    Specs longer than ``MAX_SPEC_CHARS`` or nested deeper than ``MAX_SPEC_DEPTH``
    are refused before they reach the recursive parts of the parser.
    """
    if not isinstance(spec, str):
        raise ValueError(f"planner spec must be a string such as 'dilated(base=2)', got {spec!r}")
    if len(spec) > MAX_SPEC_CHARS:
        raise ValueError(f"planner spec is {len(spec)} characters long; at most {MAX_SPEC_CHARS} are allowed")
    try:
        tree = ast.parse(spec.strip(), mode="eval")
    except (RecursionError, MemoryError):  # CPython's parser signals a too-deep expression with these
        raise ValueError(f"planner spec nests deeper than {MAX_SPEC_DEPTH} levels") from None
    except SyntaxError:
        raise ValueError(f"planner spec {spec!r} is not of the form name or name(key=value, ...)") from None
    if _depth(tree) > MAX_SPEC_DEPTH:
        raise ValueError(f"planner spec nests deeper than {MAX_SPEC_DEPTH} levels")
    return _build(tree.body, spec)


__all__ = [
    "EB", "PLANNERS", "TOPK_SCORES", "Binary", "Dilated", "Dynamic", "Edit", "EntropySum", "Factor", "Farthest",
    "Interleave", "PlanStep", "Planner", "Remask", "Schedule", "Selection", "Spaced", "Stable", "State", "Threshold",
    "TopK", "Wino", "fixed_schedule", "make_planner", "parse_planner", "planner_fields",
]
