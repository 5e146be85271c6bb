"""Opt-in forward counts for benchmarks (``benchmarks/sglang_speed.py``).

SGLang runs its schedulers in spawned processes, so a benchmark cannot count
their model forwards from outside. With ``UNMASK_SGLANG_NFE_DIR`` set when the
plugin is loaded, every registered dLLM algorithm's ``step`` (SGLang's own
included) is wrapped: each step follows exactly one forward, so the counts
are the batched forwards (``steps``) and the request-forwards of blocks that
still had masks (``block_steps``, the NFE summed over requests). Each process
rewrites ``nfe-<pid>.json`` in that folder after every step. Unset, nothing
is wrapped.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

ENV = "UNMASK_SGLANG_NFE_DIR"
_WRAPPED = "__unmask_counted__"


def _blocks_with_masks(algo: Any, forward_batch: Any) -> int:
    n = forward_batch.batch_size
    masked = forward_batch.input_ids.view(n, algo.block_size) == algo.mask_id
    prompt = getattr(forward_batch, "dllm_prompt_mask", None)
    if prompt is not None:
        masked &= ~prompt.view(n, algo.block_size)
    return int(masked.any(-1).sum())


def count_steps(registry: dict[str, type]) -> None:
    """Wrap each algorithm class's ``step`` with a counter when ``UNMASK_SGLANG_NFE_DIR`` is set."""
    folder = os.environ.get(ENV)
    if not folder:
        return
    out = Path(folder) / f"nfe-{os.getpid()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    totals = {"steps": 0, "block_steps": 0}
    owners = {next(c for c in cls.__mro__ if "step" in c.__dict__) for cls in registry.values()}
    for owner in owners:  # the classes that define a step (ours inherit one from UnmaskAlgorithm)
        step = owner.__dict__["step"]
        if getattr(step, _WRAPPED, False):
            continue

        @functools.wraps(step)
        def counted(self: Any, forward_batch: Any, logits: Any, states: Any, _step: Any = step) -> Any:
            totals["block_steps"] += _blocks_with_masks(self, forward_batch)  # before the step reveals
            totals["steps"] += 1
            result = _step(self, forward_batch, logits, states)
            out.write_text(json.dumps(totals))
            return result

        setattr(counted, _WRAPPED, True)
        owner.step = counted
