"""``--model module:factory``: a user's own model, built by a Python callable, for the command line.

The callable (a function or class in an importable module, ``pkg.mod:make`` or
``mod:Factory.build``) takes no arguments and returns ``(denoiser,
tokenizer)``: an :class:`unmask.Denoiser` and a tokenizer with ``encode``
(a Hugging Face tokenizer), or None when prompts are token ids. The module is
imported from the Python path and the current directory, as ``python -m`` and
uvicorn's ``module:app`` do. Mistakes (no such module, no such attribute, not
callable, a wrong return value) are ``ValueError``s that name the argument.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from pathlib import Path
from typing import Any

FACTORY = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def is_factory(name: str) -> bool:
    """``name`` reads as ``module:callable`` (dotted Python names) and is not an existing path."""
    return FACTORY.fullmatch(name) is not None and not Path(name).exists()


def _import(module: str, flag: str, spec: str) -> Any:
    cwd = os.getcwd()
    added = cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:  # only the named module (or a parent) missing; a missing dependency propagates
        if err.name is not None and (module == err.name or module.startswith(err.name + ".")):
            raise ValueError(f"{flag} {spec!r}: no module named {err.name!r} (module:factory imports from the Python "
                             "path and the current directory)") from None
        raise
    finally:
        if added:
            sys.path.remove(cwd)


def _describe(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} ({', '.join(type(v).__name__ for v in value)})"
    return f"a {type(value).__name__}"


def load_factory(spec: str, flag: str = "--model") -> tuple[Any, Any]:
    """``(denoiser, tokenizer or None)`` from the callable ``spec = "module:attr"`` (module docstring)."""
    from ..denoiser import Denoiser

    if FACTORY.fullmatch(spec) is None:
        raise ValueError(f"{flag} {spec!r}: a factory is module:callable with dotted Python names, e.g. mymodels:build")
    module_name, attr = spec.split(":")
    obj: Any = _import(module_name, flag, spec)
    missing = object()
    for part in attr.split("."):
        obj = getattr(obj, part, missing)
        if obj is missing:
            raise ValueError(f"{flag} {spec!r}: module {module_name!r} has no attribute {attr!r}")
    if not callable(obj):
        raise ValueError(f"{flag} {spec!r}: {attr} is {_describe(obj)}, not a callable returning (denoiser, tokenizer)")
    value = obj()
    if not (isinstance(value, (tuple, list)) and len(value) == 2 and isinstance(value[0], Denoiser)):
        raise ValueError(f"{flag} {spec!r}: the factory must return (denoiser, tokenizer) with an unmask.Denoiser "
                         f"first, got {_describe(value)}")
    den, tok = value
    if tok is not None and not callable(getattr(tok, "encode", None)):
        raise ValueError(f"{flag} {spec!r}: the tokenizer must have encode() (a Hugging Face tokenizer) or be None "
                         f"(prompts as token ids), got {_describe(tok)}")
    return den, tok
