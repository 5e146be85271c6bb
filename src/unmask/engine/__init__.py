"""The engine: continuous batching of generation requests over one denoiser (see :mod:`unmask.engine.engine`)."""

from .arena import EngineConfig, parse_memory
from .engine import Engine, EngineStats
from .request import Request

__all__ = ["Engine", "EngineConfig", "EngineStats", "Request", "parse_memory"]
