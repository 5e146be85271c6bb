"""Fixed schedules as planners: residue-class interleaving, farthest-point order, explicit levels.

Each is a schedule fixed before the block starts (:mod:`unmask.schedules`)
run by the same level machinery as DUS (``_LevelPlanner``): optional
confidence deferral to the next level, and the last level reveals everything
left, so no mask survives the block.

- ``Interleave``: call t reveals the offsets of one residue class mod ``k``,
  classes ordered far apart; tokens revealed together are ``k`` apart.
- ``Farthest``: the farthest-point order of the offsets, cut into ``calls``
  groups growing by ``growth``.
- ``Schedule``: any explicit partition of the block offsets, e.g. the result
  of a schedule search (:func:`unmask.oracles.search_schedule`) or of
  ``unmask tune``, as a spec string: ``schedule(groups=((0, 16), (8, 24), ...))``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..schedules import check_levels, farthest_levels, interleave_levels
from .scheduled import _check_threshold, _LevelPlanner, shift_levels


def _positive_int(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _at_most_block(name: str, value: int, block_length: int) -> None:
    """The one rule of the count of calls of a fixed schedule: at most one call per block position."""
    if value > block_length:
        raise ValueError(f"{name} must be <= block_length={block_length} (one call per position at most), got {value}")


@dataclass(frozen=True)
class Interleave(_LevelPlanner):
    """Residue classes mod ``k``, one per call, in ``order`` (default far apart: ``k=4`` -> 0, 2, 1, 3)."""

    k: int = 4
    order: tuple[int, ...] | None = None
    confidence_threshold: float | None = None
    name: ClassVar[str] = "interleave"

    def __post_init__(self) -> None:
        _positive_int("k", self.k)
        if self.order is not None:
            if isinstance(self.order, (str, bytes)) or not hasattr(self.order, "__iter__"):
                raise ValueError(f"order must be a permutation of range(k={self.k}) or None, got {self.order!r}")
            object.__setattr__(self, "order", tuple(self.order))
            if sorted(self.order) != list(range(self.k)):
                raise ValueError(f"order must be a permutation of range(k={self.k}), got {self.order!r}")
        _check_threshold(self.confidence_threshold)

    def check(self, gen_length: int, block_length: int) -> None:
        _at_most_block("k", self.k, block_length)

    def levels(self, block_length: int) -> list[list[int]]:
        return interleave_levels(block_length, self.k, self.order)


@dataclass(frozen=True)
class Farthest(_LevelPlanner):
    """Farthest-point order (the context before the block counts as revealed), ``calls`` groups growing by ``growth``."""

    calls: int = 5
    growth: float = 2.0
    confidence_threshold: float | None = None
    name: ClassVar[str] = "farthest"

    def __post_init__(self) -> None:
        _positive_int("calls", self.calls)
        if not isinstance(self.growth, (int, float)) or isinstance(self.growth, bool) or not 1.0 <= self.growth < float("inf"):
            raise ValueError(f"growth must be a finite number >= 1, got {self.growth!r}")
        _check_threshold(self.confidence_threshold)

    def check(self, gen_length: int, block_length: int) -> None:
        _at_most_block("calls", self.calls, block_length)

    def levels(self, block_length: int) -> list[list[int]]:
        return farthest_levels(block_length, self.calls, self.growth)

    def planned_levels(self, block_length: int, lead: int = 0) -> list[list[int]]:
        """As for any level planner, the levels of a block of ``block_length - lead``; a part shorter than
        ``calls`` (only possible after a lead: ``check`` keeps whole blocks at least ``calls`` long)
        takes one call per offset, since every call reveals at least one."""
        n = block_length - lead
        return shift_levels(farthest_levels(n, min(self.calls, n), self.growth), lead)


@dataclass(frozen=True)
class Schedule(_LevelPlanner):
    """An explicit schedule: ``groups[t]`` are the block offsets call t reveals (a partition of the block)."""

    groups: tuple[tuple[int, ...], ...]
    confidence_threshold: float | None = None
    name: ClassVar[str] = "schedule"

    def __post_init__(self) -> None:
        bad = ValueError(f"groups must be a sequence of groups of non-negative int block offsets, got {self.groups!r}")
        if isinstance(self.groups, (str, bytes)) or not hasattr(self.groups, "__iter__"):
            raise bad
        groups = []
        for level in self.groups:
            if isinstance(level, (str, bytes)) or not hasattr(level, "__iter__"):
                raise bad
            if any(not isinstance(i, int) or isinstance(i, bool) or i < 0 for i in level):
                raise bad
            groups.append(tuple(sorted(level)))
        check_levels(groups, sum(map(len, groups)), "groups")
        object.__setattr__(self, "groups", tuple(groups))
        _check_threshold(self.confidence_threshold)

    @property
    def block_length(self) -> int:
        return sum(map(len, self.groups))

    def check(self, gen_length: int, block_length: int) -> None:
        if block_length != self.block_length:
            raise ValueError(f"schedule groups cover a block of {self.block_length} offsets, but block_length={block_length}")

    def levels(self, block_length: int) -> list[list[int]]:
        return [list(level) for level in self.groups]

    def planned_levels(self, block_length: int, lead: int = 0) -> list[list[int]]:
        """The groups restricted to offsets ``lead..``, in their order, empty ones dropped: an explicit
        schedule has no version for a shorter block, so the offsets filled before the block began are
        taken out of it and every call still reveals a scheduled group."""
        if lead == 0:
            return self.levels(block_length)
        return [kept for level in self.groups if (kept := [i for i in level if i >= lead])]
