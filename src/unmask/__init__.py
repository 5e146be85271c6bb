"""unmask: fast, correct sampling from masked diffusion language models.

The Dilated Unmasking Scheduler (arXiv 2506.19037) and every planner it is
compared with, on one engine that batches every live request into each
denoiser call, with exact oracle denoisers to measure a planner's error.
"""

from .config import CACHE_MODES, GenerationConfig
from .denoiser import CachingDenoiser, Denoiser, TokenSpec
from .engine import Engine, EngineConfig, Request
from .loop import generate
from .output import GenerationOutput, Trace
from .planners import (
    EB,
    PLANNERS,
    Binary,
    Dilated,
    Factor,
    Planner,
    Spaced,
    Threshold,
    TopK,
    make_planner,
    parse_planner,
)
from .schedules import binary_levels, dilated_levels, linear_counts

__version__ = "0.1.0"

_LAZY = {"load": "models", "convert": "models", "encode_prompts": "models"}


def __getattr__(name: str):  # load transformers only when a real model is asked for
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'unmask' has no attribute {name!r}")

__all__ = [
    "CACHE_MODES", "EB", "PLANNERS", "Binary", "CachingDenoiser", "Denoiser", "Dilated", "Engine", "EngineConfig",
    "Factor", "GenerationConfig", "Request", "GenerationOutput", "Planner", "Spaced", "Threshold", "TokenSpec", "TopK", "Trace",
    "binary_levels", "convert", "dilated_levels", "encode_prompts", "generate", "linear_counts", "load",
    "make_planner", "parse_planner",
]
