"""Any unmask planner as a uniform-state commit rule, and what each estimator of its error is worth.

:class:`PlannerCommit` runs a :class:`~unmask.planners.Planner` (from
:func:`~unmask.planners.parse_planner`) on the oracle's posteriors as the
engine runs it on a model's logits: the log posteriors are the logits, the
proposal is scored by :func:`unmask.sampling.scores` (the primitive
:func:`~unmask.sampling.propose` applies to the tokens it draws, float32, with
the planner's ``needs``) at the tokens drawn this call, the uncommitted
positions are ``masked``, the call index is ``call``, the canvas is one block
(``num_blocks = 1``), and the planner's ``reveal`` is the commit set.

Planners that choose by the tokens just drawn (the confidence of the drawn
token: top-k confidence, threshold, factor, dynamic, confidence deferral,
``spaced`` over those; :func:`~unmask.oracles.path_kl_status` ``"biased"``)
declare ``reads_draws``: the exact law of :func:`.uniform_law.uniform_law`
then sums over every joint draw of the uncommitted positions (``V ** u``
more rows). Planners that read a random order (random top-k) declare
``reads_order``: the law sums over every order of the uncommitted positions
(``u!``). Revising planners (edit, wino, remask, stable) are refused: a
commit here stays for good, and they re-decide revealed positions.

Estimators (:func:`uniform_estimators`), each checked by enumeration in the
tests (:attr:`.uniform_law.UniformLaw.expected_path_kl` against the exact KL):

- path KL (:meth:`.uniform_sample.UniformSamples.path_kl`): ``"exact"`` in
  expectation in the told view for planners that choose from the posterior
  alone; ``"upper bound"`` in the matched and blind views (the posterior reads
  the re-draws: E = KL + E_x KL(q(re-draws | x) || uniform)) and for a random
  order (the mean over orders of a convex KL); ``"biased"`` for planners that
  read the draws (the selection is left out; it can fall below the truth);
- sandwich (:func:`.uniform_sample.sandwich_kl`): ``"bracket"`` (its two ends
  meet at the exact KL) unless the planner reads the draws, then refused;
- pair KL (:func:`~unmask.oracles.pair_divergence` on
  :func:`.uniform_sample.sample_uniform`'s sequences): ``"consistent"`` for all.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..noise import ORDER
from ..planners import Planner, PlanStep, parse_planner
from ..sampling import Proposal, scores
from .enumerate import _keeps_state
from .metrics import BIASED, BOUND, EXACT, path_kl_status
from .uniform_law import VIEWS
from .uniform_rules import CommitRule

BRACKET, REFUSED, CONSISTENT = "bracket", "refused", "consistent"


class _Order:
    """A stand-in for :class:`~unmask.noise.CallNoise` whose ORDER uniforms are given; records whether read."""

    def __init__(self, priority: Tensor | None) -> None:
        self.priority, self.used = priority, False

    def uniform(self, stream: int, width: int | None = None) -> Tensor:
        if stream != ORDER or width is not None:
            raise ValueError(f"a commit planner may read order uniforms only, asked for stream {stream}, width {width}")
        self.used = True
        if self.priority is None:
            raise ValueError("this planner reads a random order: pass order=[B, L] uniforms to PlannerCommit.commit")
        return self.priority


def proposal_of(probs: Tensor, drawn: Tensor, need: frozenset[str]) -> Proposal:
    """The engine's :class:`~unmask.sampling.Proposal` for log posteriors ``log probs [B, L, V]`` at ``drawn [B, L]``.

    As :func:`~unmask.sampling.propose` builds it at temperature 1 without
    truncation: float32 logits, the first argmax as the peak, scores of the
    drawn tokens by :func:`~unmask.sampling.scores`; ``logq`` is the log
    posterior of the drawn token.
    """
    z = probs.log().float()  # [B, L, V]; -inf where the posterior is 0
    a = z.argmax(-1)
    m = z.gather(-1, a.unsqueeze(-1)).squeeze(-1)
    sc = scores(z, drawn, need, (m, a))
    logq = z.gather(-1, drawn.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(z, -1)
    return Proposal(tokens=drawn, confidence=sc.confidence, logq=logq, margin=sc.margin, entropy=sc.entropy,
                    doubt=sc.doubt, margin_doubt=sc.margin_doubt, finite=torch.isfinite(m).all(-1),
                    entropy_reference=sc.entropy_reference)


class PlannerCommit(CommitRule):
    """An unmask planner as a commit rule for a canvas of ``length`` generated tokens (see the module docstring)."""

    def __init__(self, planner: Planner | str, length: int) -> None:
        if isinstance(planner, str):
            planner = parse_planner(planner)
        if not isinstance(planner, Planner):
            raise ValueError(f"planner must be an unmask Planner or a planner spec string, got {type(planner).__name__}")
        if planner.revises or _keeps_state(planner) or "current" in planner.needs:
            raise ValueError(f"planner {planner.name!r} revises revealed positions (or keeps their history); a "
                             "uniform-state commit stays for good, so it is not a commit rule here: use a planner "
                             "that only reveals (dilated, binary, topk, eb, threshold, factor, spaced, interleave, ...)")
        if not isinstance(length, int) or isinstance(length, bool) or length < 1:
            raise ValueError(f"length must be an int >= 1 (generated tokens per canvas), got {length!r}")
        planner.check(length, length)
        self.planner, self.length = planner, length
        fixed = planner.calls_per_block(length, 1)
        self.calls = fixed if fixed is not None else planner.max_calls_per_block(length)
        self.fixed = fixed is not None
        self.reads_draws = path_kl_status(planner) == BIASED  # treating a state-only planner so is exact too
        probe = _Order(torch.rand(1, length, generator=torch.Generator().manual_seed(0)))
        self._select(torch.full((1, length, 2), 0.5, dtype=torch.float64), torch.zeros(1, length, dtype=torch.bool),
                     0, torch.zeros(1, length, dtype=torch.long), probe)
        self.reads_order = probe.used

    def __repr__(self) -> str:
        return repr(self.planner)

    def max_calls(self, length: int) -> int:
        if length != self.length:
            raise ValueError(f"this commit rule was built for {self.length} generated tokens, the canvas generates {length}")
        return self.calls

    def _select(self, probs: Tensor, committed: Tensor, call: int, drawn: Tensor, noise: _Order) -> Tensor:
        need = self.planner.needs - {"current"}
        step = PlanStep(~committed, proposal_of(probs, drawn, need), call, committed.shape[1], 1, noise)  # type: ignore[arg-type]
        return self.planner.select(step).reveal & ~committed

    def __call__(self, probs: Tensor, committed: Tensor, call: int) -> Tensor:
        return self.commit(probs, committed, call)

    def choose(self, probs: Tensor, committed: Tensor, call: int) -> Tensor:
        return self.commit(probs, committed, call)

    def commit(self, probs: Tensor, committed: Tensor, call: int, drawn: Tensor | None = None,
               order: Tensor | None = None) -> Tensor:
        """``[B, L]`` bool: the planner's reveal on the step built from ``probs``, ``committed`` and ``call``.

        ``drawn [B, L]``: this call's drawn tokens (required when the planner
        reads them; else the argmax stands in, which it does not read);
        ``order [B, L]``: the order uniforms a random planner reads.
        """
        if probs.dim() != 3 or committed.shape != probs.shape[:2]:
            raise ValueError(f"probs must be [B, L, V] and committed [B, L], got {list(probs.shape)} and {list(committed.shape)}")
        if drawn is None:
            if self.reads_draws:
                raise ValueError(f"{self!r} chooses by the tokens drawn this call: pass drawn=[B, L]")
            drawn = probs.argmax(-1)
        return self._select(probs, committed, call, drawn, _Order(order))


def uniform_estimators(rule: CommitRule, view: str) -> dict[str, str]:
    """What each sampled estimator of ``rule``'s KL is in ``view``: keys ``path_kl``, ``sandwich``, ``pair``.

    See the module docstring; the tests measure each label by enumeration.
    """
    if not isinstance(rule, CommitRule):
        raise ValueError(f"rule must be a CommitRule, got {type(rule).__name__}")
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    if rule.reads_draws:
        path = BIASED
    elif rule.reads_order or view != "told":
        path = BOUND
    else:
        path = EXACT
    return {"path_kl": path, "sandwich": REFUSED if rule.reads_draws else BRACKET, "pair": CONSISTENT}
