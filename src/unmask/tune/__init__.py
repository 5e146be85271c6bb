"""``unmask tune``: the best planner for a model and a call budget, found without labels.

    from unmask.tune import TuneConfig, default_candidates, tune
    result = tune(denoiser, calibration_ids, report_ids, default_candidates(5, 32, 32), TuneConfig(budget=5))
    print(result.spec)   # a planner spec string for generate, eval and the CLI
    results = tune_budgets(den, cal, rep, lambda b: default_candidates(b, 32, 32), TuneConfig(budget=3), (3, 5, 8))

See :mod:`unmask.tune.core` for the procedure and the winner rule.
"""

from .candidates import Candidate, default_candidates, user_candidates
from .core import tune, tune_budgets
from .types import Score, TuneConfig, TuneResult

__all__ = ["Candidate", "Score", "TuneConfig", "TuneResult", "default_candidates", "tune", "tune_budgets", "user_candidates"]
