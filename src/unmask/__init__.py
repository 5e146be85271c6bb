"""unmask: fast, correct sampling from masked diffusion language models.

The Dilated Unmasking Scheduler (arXiv 2506.19037) and every planner it is
compared with, on one engine that batches every live request into each
denoiser call, with exact oracle denoisers to measure a planner's error.

Every public name is imported on first use (PEP 562 module ``__getattr__``),
so ``import unmask`` and ``unmask --help`` do not load torch or transformers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "CACHE_MODES": "config", "GenerationConfig": "config",
    "CachingDenoiser": "denoiser", "Denoiser": "denoiser", "TokenSpec": "denoiser",
    "generate": "loop", "Engine": "engine", "EngineConfig": "engine", "Request": "engine",
    "GenerationOutput": "output", "Trace": "output",
    **{name: "planners" for name in ("EB", "PLANNERS", "Binary", "Dilated", "Factor", "Planner", "Spaced",
                                      "Threshold", "TopK", "make_planner", "parse_planner")},
    "binary_levels": "schedules", "dilated_levels": "schedules", "linear_counts": "schedules",
    "load": "models", "convert": "models", "encode_prompts": "models",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'unmask' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:  # for type checkers and editors: the same names, imported eagerly
    from .config import CACHE_MODES, GenerationConfig
    from .denoiser import CachingDenoiser, Denoiser, TokenSpec
    from .engine import Engine, EngineConfig, Request
    from .loop import generate
    from .models import convert, encode_prompts, load
    from .output import GenerationOutput, Trace
    from .planners import EB, PLANNERS, Binary, Dilated, Factor, Planner, Spaced, Threshold, TopK, make_planner, parse_planner
    from .schedules import binary_levels, dilated_levels, linear_counts

__all__ = [
    "CACHE_MODES", "EB", "PLANNERS", "Binary", "CachingDenoiser", "Denoiser", "Dilated", "Engine", "EngineConfig",
    "Factor", "GenerationConfig", "Request", "GenerationOutput", "Planner", "Spaced", "Threshold", "TokenSpec", "TopK", "Trace",
    "binary_levels", "convert", "dilated_levels", "encode_prompts", "generate", "linear_counts", "load",
    "make_planner", "parse_planner",
]
