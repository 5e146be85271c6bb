"""DiffusionGemma's own sampler as an unmask planner: entropy-bound acceptance re-decided at every call.

transformers' ``DiffusionGemmaGenerationMixin.generate`` (``EntropyBoundSampler``
with ``LinearTemperatureScheduleLogitsProcessor`` and
``StableAndConfidentStoppingCriteria``; restated call by call in
:mod:`unmask.models.diffusion_gemma_sampler`) as a revising planner over a
uniform-state canvas, where "masked" means *not committed* (the engine puts a
fresh uniform token there before each call). At call ``k``:

1. the logits are divided by ``T_k = t_min + (t_max - t_min)(max_calls - k) / max_calls``
   (:meth:`EntropyBound.temperature`: :func:`unmask.decide.decide` applies it,
   and the processed logits are the model's next self-conditioning input);
2. every position draws a token from ``softmax(logits / T_k)`` (stream ``TOKENS``
   at the call's noise, inverted by :func:`unmask.sampling.draw`, as the
   restatement does) and takes its argmax;
3. entropy-bound acceptance (Ben-Hamu et al. 2025, arXiv 2505.24857): the
   lowest-entropy positions whose entropies, less the largest, sum to at most
   ``entropy_bound`` are committed with their drawn token (uncommitted ones are
   revealed, committed ones edited), every other position is uncommitted
   (re-masked): nothing stays committed across calls;
4. a row stops when its argmax equals each of the last ``stability`` calls'
   and the mean entropy is below ``confidence``, or at call ``max_calls - 1``:
   then every position is committed with the **argmax** (transformers' output
   of a canvas), and the row asks for no further call (``pending`` False).

Per-row state: the argmax of the last ``stability`` calls ``[N, S, C]``. The
planner ignores the request's sampling settings (its temperature schedule and
draws are the sampler's own).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from ..models.diffusion_gemma_sampler import EntropyBoundSpec, accept, entropy
from ..noise import TOKENS
from ..sampling import draw
from .base import Planner, PlanStep, Selection, revealed


@dataclass(frozen=True)
class EntropyBound(Planner):
    """DiffusionGemma's sampler (transformers' defaults): see the module docstring."""

    entropy_bound: float = 0.1
    t_min: float = 0.4
    t_max: float = 0.8
    max_calls: int = 48
    stability: int = 1
    confidence: float = 0.005
    name: ClassVar[str] = "entropy_bound"
    revises: ClassVar[bool] = True
    progress: ClassVar[bool] = False  # re-decides every call: a call may commit only positions committed before
    needs: ClassVar[frozenset[str]] = frozenset({"logits"})

    def __post_init__(self) -> None:
        self.spec  # validates  # noqa: B018

    @property
    def spec(self) -> EntropyBoundSpec:
        return EntropyBoundSpec(self.entropy_bound, self.max_calls, self.t_min, self.t_max, self.stability,
                                self.confidence)

    def temperature(self, call: int, device: torch.device | str = "cpu") -> Tensor:
        """``T_k`` (float32 scalar), with transformers' operations."""
        return self.spec.temperature(min(call, self.max_calls - 1), device)

    def max_calls_per_block(self, block_length: int) -> int:
        return self.max_calls

    def select(self, step: PlanStep) -> Selection:
        z = step.logits  # [N, C, V]: already divided by T_k (decide applies temperature())
        assert z is not None and step.noise is not None, "entropy_bound needs the processed logits and the noise"
        n, c = step.masked.shape
        probs = torch.softmax(z, dim=-1, dtype=torch.float32)
        drawn = draw(probs, step.noise.uniform64(TOKENS))[0]
        argmax = torch.argmax(z, dim=-1)
        h = entropy(z)  # [N, C]
        accepted = accept(h, self.entropy_bound)
        if self.stability == 0:
            stable = torch.ones(n, dtype=torch.bool, device=z.device)
            history = torch.zeros(n, 0, c, dtype=torch.long, device=z.device)
        else:
            before = (torch.full((n, self.stability, c), -1, dtype=torch.long, device=z.device)
                      if step.state is None else step.state[0])
            stable = (before == argmax[:, None]).all(-1).all(-1)
            history = torch.cat([before[:, 1:], argmax[:, None]], dim=1)
        stop = (stable & (h.mean(-1) < self.confidence)) | (step.call >= self.max_calls - 1)  # [N]
        committed = revealed(step)
        keep = accepted | stop[:, None]
        tokens = torch.where(stop[:, None], argmax, drawn)
        return Selection(step.masked & keep, -h.double(), edit=committed & keep, remask=committed & ~keep,
                         pending=~stop, state=(history,), tokens=tokens)


__all__ = ["EntropyBound"]
