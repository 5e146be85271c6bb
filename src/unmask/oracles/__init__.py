"""Exact oracle denoisers: Markov chains and HMMs whose posteriors are computed, not learned.

They implement the :class:`~unmask.denoiser.Denoiser` protocol, so
:func:`unmask.generate` runs on them unchanged, and :func:`path_kl` measures
exactly how far a planner's samples are from the true sequence distribution.
"""

from .hmm import HMMOracle
from .markov import ChainOracle, MarkovOracle
from .metrics import exact_logprob, ordered_partitions, path_kl, schedule_kl

__all__ = ["ChainOracle", "HMMOracle", "MarkovOracle", "exact_logprob", "ordered_partitions", "path_kl", "schedule_kl"]
