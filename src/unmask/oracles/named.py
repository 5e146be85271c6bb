"""The benchmark oracles by name, for ``unmask tune --model oracle:NAME`` and ``unmask bench oracle``."""

from __future__ import annotations

from collections.abc import Callable

from .hmm import HMMOracle
from .markov import ChainOracle, MarkovOracle

NAMED_ORACLES: dict[str, tuple[str, Callable[[int], ChainOracle]]] = {
    "markov1": ("Markov order 1 (V=16, Dirichlet 0.3)", lambda seed: MarkovOracle(16, order=1, concentration=0.3, seed=seed)),
    "markov2": ("Markov order 2 (V=8, Dirichlet 0.3)", lambda seed: MarkovOracle(8, order=2, concentration=0.3, seed=seed)),
    "hmm": ("HMM (8 states, V=16, persistence 0.95)",
            lambda seed: HMMOracle(8, 16, persistence=0.95, concentration=0.3, seed=seed)),
}


def named_oracle(name: str, seed: int = 0) -> ChainOracle:
    """``"markov1"``, ``"markov2"`` or ``"hmm"``: the oracles of the benchmark, built from ``seed``."""
    if name not in NAMED_ORACLES:
        raise ValueError(f"oracle must be one of {sorted(NAMED_ORACLES)}, got {name!r}")
    return NAMED_ORACLES[name][1](seed)


def oracle_title(name: str) -> str:
    """The display name of a named oracle."""
    return NAMED_ORACLES[name][0]
