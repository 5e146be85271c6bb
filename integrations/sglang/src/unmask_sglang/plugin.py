"""The SGLang plugin entry point: adds unmask's algorithms to SGLang's dLLM algorithm registry.

SGLang calls every function of the entry-point group ``sglang.srt.plugins``
(``sglang.srt.plugins.load_plugins``) in the launching process, before it
builds the server arguments, and again in each scheduler process, so the
names are known wherever ``--dllm-algorithm`` is looked up
(``sglang.srt.dllm.algorithm.get_algorithm_cls``).
"""

from __future__ import annotations


def register() -> None:
    """Register ``unmask-dus``, ``unmask-topk``, ... in ``sglang.srt.dllm.algorithm.algo_name_to_cls``."""
    from sglang.srt.dllm.algorithm import algo_name_to_cls

    from .algorithm import ALGORITHMS
    from .counting import count_steps

    taken = sorted(name for name, cls in ALGORITHMS.items() if algo_name_to_cls.get(name, cls) is not cls)
    if taken:
        raise RuntimeError(f"SGLang already has dLLM algorithm(s) named {taken}; unmask-sglang will not replace them")
    algo_name_to_cls.update(ALGORITHMS)
    count_steps(algo_name_to_cls)
