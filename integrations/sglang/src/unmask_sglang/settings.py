"""The algorithm-config YAML of the unmask algorithms, checked when SGLang builds the algorithm.

SGLang reads ``--dllm-algorithm-config file.yaml`` into a dict and hands it to
the algorithm's constructor; this module turns it into a planner and sampling
settings, with unmask's own parsing and checks (``GenerationConfig`` over one
block), so a bad value stops the server at start-up with a message naming the
key instead of failing inside a request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from unmask.config import GenerationConfig
from unmask.planners import PLANNERS, Planner
from unmask.sampling import SamplingParams

OWN_KEYS = ("planner", "temperature", "top_p", "top_k", "seed")
SGLANG_KEYS = ("block_size", "capture_input_preparation")  # read by SGLang itself (DllmConfig)
SAMPLING_KEYS = ("temperature", "top_p", "top_k")

# The planner each algorithm runs when the YAML names none (spec strings, as in unmask).
DEFAULT_SPECS = {
    "dilated": "dilated(base=2)",
    "binary": "binary",
    "topk": "topk(score='confidence', counts='dilated')",
    "eb": "eb(gamma=1.0)",
    "threshold": "threshold(tau=0.9)",
    "factor": "factor(factor=1.0)",
    "spaced": "spaced(eb(gamma=2.0), start_stride=8)",
    "interleave": "interleave(k=4)",
    "farthest": "farthest(calls=5)",
    "dynamic": "dynamic(counts='dilated')",
    "entropy_sum": "entropy_sum(bound=0.35)",
    "edit": "edit(threshold(tau=0.9), threshold=0.9, max_edit_calls=16)",
    "wino": "wino(wide=0.7, narrow=0.9)",
    "remask": "remask(threshold(tau=0.9), eta=0.1, max_calls=16)",
    "stable": "stable(threshold(tau=0.9), window=2, tau=0.5)",
}
# planners of unmask's registry that SGLang's dLLM path cannot run, and why
NOT_SERVED = {
    "entropy_bound": "DiffusionGemma's sampler re-draws uncommitted positions as uniform tokens (uniform-state "
                     "corruption); SGLang's dLLM path serves masked models",
}
NEEDS_SPEC = {  # planners with no sensible default: the YAML must name one
    "schedule": "an explicit schedule of the block offsets, e.g. the winner of unmask tune: "
                "planner: \"schedule(groups=((0, 16), (8, 24), ...))\"",
}


def algorithm_name(kind: str) -> str:
    """The ``--dllm-algorithm`` name of the adapter for planner ``kind`` (DUS keeps its paper's name)."""
    return "unmask-dus" if kind == "dilated" else f"unmask-{kind}"


@dataclass(frozen=True)
class Settings:
    """One algorithm's planner, sampling parameters and base seed, all checked."""

    planner: Planner
    sampling: SamplingParams
    seed: int = 0  # base of the per-request seeds of requests without a sampling seed

    @classmethod
    def parse(cls, kind: str, values: Mapping[str, Any] | None, block_size: int) -> Settings:
        """Settings for planner ``kind`` from the YAML mapping ``values`` (None: all defaults).

        Raises ``ValueError`` naming the key for unknown keys, a planner spec of
        another kind, bad sampling values, a seed that is not an int >= 0, or a
        planner that cannot run on blocks of ``block_size``.
        """
        if kind not in PLANNERS:
            raise ValueError(f"kind must be one of {sorted(PLANNERS)}, got {kind!r}")
        if kind in NOT_SERVED:
            raise ValueError(f"the {kind!r} planner does not run in SGLang: {NOT_SERVED[kind]}")
        name = algorithm_name(kind)
        where = f"--dllm-algorithm-config of {name}"
        values = {} if values is None else values
        if not isinstance(values, Mapping):
            raise ValueError(f"{where} must be a YAML mapping, got {type(values).__name__}")
        unknown = sorted(set(values) - set(OWN_KEYS) - set(SGLANG_KEYS))
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: {list(OWN_KEYS)} "
                             f"(and SGLang's own {list(SGLANG_KEYS)})")
        if kind in NEEDS_SPEC and "planner" not in values:
            raise ValueError(f"{where}: {name} needs a planner spec: {NEEDS_SPEC[kind]}")
        spec = values.get("planner", DEFAULT_SPECS.get(kind, kind))
        if not isinstance(spec, str):
            raise ValueError(f"{where}: planner must be a spec string such as 'dilated(base=2)', got {spec!r}")
        seed = values.get("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            # None is refused too: a seed drawn at random would differ between tensor-parallel ranks
            raise ValueError(f"{where}: seed must be an int >= 0, got {seed!r}")
        try:
            # one block of block_size: the planner checks its sizes, SamplingParams its values
            config = GenerationConfig(gen_length=block_size, block_length=block_size, planner=spec,
                                      sampling={k: values[k] for k in SAMPLING_KEYS if k in values}, seed=seed)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
        planner = config.planner
        assert isinstance(planner, Planner) and isinstance(config.sampling, SamplingParams)
        if planner.name != kind:
            raise ValueError(f"{where}: planner {spec!r} is a {planner.name!r} planner, but {name} runs {kind!r} "
                             f"planners; use --dllm-algorithm {algorithm_name(planner.name)}")
        return cls(planner, config.sampling, seed)
