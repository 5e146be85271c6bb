"""Exact oracle denoisers: Markov chains and HMMs whose posteriors are computed, not learned.

They implement the :class:`~unmask.denoiser.Denoiser` protocol, so
:func:`unmask.generate` runs on them unchanged, and a planner's error is
measured against the true sequence distribution: exactly on small cases by
:func:`enumerate_sampler` (every planner), exactly in expectation by
:func:`path_kl` (planners that choose from the state alone, see
:func:`path_kl_status`) and :func:`schedule_kl` (fixed schedules on a
first-order chain), and consistently for every planner by
:func:`pair_divergence`. :func:`search_schedule` finds the best fixed
schedule of a block under a call budget.

Uniform-state samplers (DiffusionGemma: a canvas of random tokens, commits
that stay): :class:`UniformOracle` gives the exact posterior given a noisy
canvas, :func:`uniform_law` the exact law of a commit rule by enumeration,
:func:`sample_uniform` and :func:`sandwich_kl` sampled estimates for larger
canvases; :class:`PlannerCommit` makes any unmask planner a commit rule and
:func:`uniform_estimators` says which estimate is exact, a bound or biased.
"""

from .enumerate import SamplerLaw, enumerate_sampler
from .hmm import HMMOracle
from .markov import ChainOracle, MarkovOracle
from .metrics import BIASED, BOUND, EXACT, ordered_partitions, path_kl, path_kl_status, schedule_kl
from .named import NAMED_ORACLES, named_oracle, oracle_title
from .pairs import PairDivergence, exact_pair_marginals, pair_divergence, pair_js, pair_kl, sample_pair_marginals
from .search import SearchResult, search_schedule
from .uniform import UniformOracle
from .uniform_law import UniformLaw, uniform_law
from .uniform_planner import PlannerCommit, uniform_estimators
from .uniform_rules import CommitRule, EntropyBoundCommit, FixedGroups, TopKCommit
from .uniform_sample import KLSandwich, UniformSamples, sample_uniform, sandwich_kl

__all__ = [
    "BIASED", "BOUND", "EXACT", "NAMED_ORACLES", "ChainOracle", "HMMOracle", "MarkovOracle", "PairDivergence",
    "SamplerLaw", "SearchResult", "enumerate_sampler", "exact_pair_marginals", "named_oracle", "oracle_title",
    "ordered_partitions", "pair_divergence", "pair_js", "pair_kl", "path_kl", "path_kl_status",
    "sample_pair_marginals", "schedule_kl", "search_schedule",
    "CommitRule", "EntropyBoundCommit", "FixedGroups", "KLSandwich", "PlannerCommit", "TopKCommit", "UniformLaw",
    "UniformOracle", "UniformSamples", "sample_uniform", "sandwich_kl", "uniform_estimators", "uniform_law",
]
