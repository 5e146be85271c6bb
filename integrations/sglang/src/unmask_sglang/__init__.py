"""unmask's planners inside SGLang: one dLLM algorithm per planner, registered by an entry-point plugin.

``--dllm-algorithm unmask-dus`` (and ``unmask-topk``, ``unmask-eb``, ...) with
``--dllm-algorithm-config file.yaml`` (``planner``, ``temperature``,
``top_p``, ``top_k``, ``seed``). See :mod:`unmask_sglang.algorithm`.
"""

from __future__ import annotations

from .settings import DEFAULT_SPECS, Settings, algorithm_name

__all__ = ["DEFAULT_SPECS", "Settings", "algorithm_name"]
