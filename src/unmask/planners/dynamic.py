"""A count floor with a confidence threshold on top: SDAR's ``low_confidence_dynamic``.

SDAR's generation script (JetAstra/SDAR ``block_diffusion_generate``, and
JetEngine's scheduler) gives each call of a block a count ``n_t`` (its linear
counts for ``denoising_steps`` calls) and reveals every masked position whose
confidence exceeds ``confidence_threshold`` when there are at least ``n_t`` of
them, else the ``n_t`` most confident: the union of the two sets. A block can
so finish in fewer calls than it has counts, which makes the planner adaptive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import PlanStep, Selection, at_least_one, confident, priority_of, top_n
from .scheduled import TopK


@dataclass(frozen=True)
class Dynamic(TopK):
    """Reveal the ``counts[call]`` most confident masked positions and every one with confidence >= ``tau``.

    ``steps`` / ``counts`` / ``base`` as for :class:`~unmask.planners.TopK`:
    ``steps`` counts calls over the whole generation (LLaDA's linear counts per
    block), ``counts`` is SDAR's per-block schedule given as is. The floor
    guarantees the block is full by the last count; the threshold lets it end
    sooner.
    """

    tau: float = 0.85
    name: ClassVar[str] = "dynamic"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.score != "confidence":
            raise ValueError(f"score must be 'confidence' (the threshold is on confidence), got {self.score!r}")
        if not isinstance(self.tau, (int, float)) or isinstance(self.tau, bool) or not 0.0 < self.tau <= 1.0:
            raise ValueError(f"tau must be in (0, 1], got {self.tau!r}")

    def calls_per_block(self, block_length: int, num_blocks: int) -> None:  # type: ignore[override]
        return None  # the threshold may end a block before its last count

    def select(self, step: PlanStep) -> Selection:
        counts = self.schedule(step.block_length, step.num_blocks, step.lead)
        n = counts[step.call] if step.call < len(counts) - 1 else step.block_length
        priority = priority_of(step, self.score)
        reveal = top_n(priority, step.masked, n) | (step.masked & confident(step.proposal, self.tau))
        return Selection(reveal=at_least_one(reveal, priority, step.masked), priority=priority)
