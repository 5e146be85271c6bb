"""Exact output distribution of any planner on a small oracle, by enumerating every branch.

At temperature 1 a call draws one token per position of the block from the
oracle's exact conditional, and the planner reveals some of them; which ones
may depend on the tokens just drawn (confidence, threshold, factor, confidence
deferral) and on a random order (random top-k). :func:`enumerate_sampler`
follows every branch: for each canvas state it lists every joint draw of the
masked positions of the block (``V ** m`` of them) and, when the planner asks
for a random order, every order of the masked positions (``m!``, each equally
likely: the order of i.i.d. uniforms), builds the
:class:`~unmask.sampling.Proposal` the loop would build for that draw, and
asks the planner itself (``planner.select``) what it reveals. Branches that
reach the same canvas are merged, so the tokens drawn but not revealed are
summed out. The result is the sampler's exact distribution q(x) over the
generated sequences, hence the exact KL(q || p), the exact expected value of
:func:`~unmask.oracles.path_kl`'s estimate, and the exact expected NFE.

Cost grows as ``V ** m`` (times ``m!`` with a random order) per state: keep
``V ** block_length`` in the thousands.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..config import GenerationConfig
from ..noise import ORDER
from ..planners import PlanStep, Planner
from ..sampling import Proposal, SamplingParams, propose
from .markov import DTYPE, ChainOracle


@dataclass(frozen=True)
class SamplerLaw:
    """A sampler's exact output distribution on an oracle (unconditional or after one fixed prompt)."""

    sequences: Tensor  # [M, G] long: every generated sequence the sampler can output
    prob: Tensor  # [M] float64: q(x), sums to 1
    log_p: Tensor  # [M] float64: log p(x | prompt) under the oracle
    expected_nfe: float  # E[denoiser calls] for the whole generation
    expected_path_kl: float  # E_q[path_kl's per-token estimate]

    @property
    def kl(self) -> float:
        """KL(q || p) in nats per generated token, exactly."""
        q = self.prob
        keep = q > 0
        return float((q[keep] * (q[keep].log() - self.log_p[keep])).sum()) / self.sequences.shape[1]


class _FixedOrder:
    """Stand-in for :class:`~unmask.noise.CallNoise` whose ORDER uniforms are given priorities.

    ``used`` records whether the planner asked for them (so the enumeration
    knows whether to branch over orders).
    """

    def __init__(self, priority: Tensor) -> None:
        self.priority, self.used = priority, False

    def uniform(self, stream: int, width: int | None = None) -> Tensor:
        if stream != ORDER or width is not None:
            raise AssertionError(f"planners draw only order uniforms, asked for stream {stream}, width {width}")
        self.used = True
        return self.priority


def _proposals(z: Tensor, block: Tensor, masked: Tensor, draws: Tensor, need: frozenset[str]) -> Proposal:
    """The loop's proposal for each state and joint draw, as :func:`~unmask.sampling.propose` computes it.

    ``z [S, Bl, V]`` float32 block logits of the states, ``block [S, Bl]`` their
    tokens, ``masked [Bl]`` (shared by the states), ``draws [C, m]`` the joint
    draws of the masked positions. Rows are (state, draw), state-major.
    """
    s, bl = block.shape
    c = draws.shape[0]
    lse = torch.logsumexp(z, -1)  # [S, Bl]
    scores = propose(z, SamplingParams(temperature=0.0), None, need)  # margin and entropy: draw-independent
    tokens = block.unsqueeze(1).repeat(1, c, 1)  # [S, C, Bl]
    tokens[:, :, masked] = draws.unsqueeze(0).expand(s, -1, -1)
    picked = z.unsqueeze(1).expand(s, c, bl, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # [S, C, Bl]
    logq = picked - lse.unsqueeze(1)  # temperature 1, no truncation: log_softmax(z) at the token
    logq = torch.where(masked, logq, torch.zeros((), dtype=logq.dtype))  # revealed: one-hot, exactly 0

    def rows(t: Tensor | None) -> Tensor | None:
        return None if t is None else t.unsqueeze(1).expand(s, c, bl).reshape(s * c, bl)

    return Proposal(tokens=tokens.reshape(s * c, bl), confidence=logq.exp().reshape(s * c, bl),
                    logq=logq.reshape(s * c, bl), margin=rows(scores.margin), entropy=rows(scores.entropy))


def _repeat_rows(p: Proposal, k: int) -> Proposal:
    def rep(t: Tensor | None) -> Tensor | None:
        return None if t is None else t.repeat_interleave(k, 0)

    return Proposal(rep(p.tokens), rep(p.confidence), rep(p.logq), rep(p.margin), rep(p.entropy))  # type: ignore[arg-type]


def _orders(masked: Tensor, n_rows: int) -> Tensor:
    """``[n_rows * m!, Bl]`` priorities: every order of the masked offsets once per row (row-major)."""
    idx = masked.nonzero().squeeze(-1).tolist()
    perms = list(itertools.permutations(range(len(idx))))
    pri = torch.zeros(len(perms), masked.numel(), dtype=torch.float32)
    for r, perm in enumerate(perms):
        pri[r, idx] = (torch.tensor(perm, dtype=torch.float32) + 1.0) / (len(idx) + 1.0)
    return pri.repeat(n_rows, 1)


def _branch(oracle: ChainOracle, planner: Planner, canvas: Tensor, weight: Tensor, acc: Tensor, lo: int, hi: int,
            call: int, num_blocks: int, max_rows: int) -> tuple[Tensor, Tensor, Tensor, bool]:
    """One call from states sharing their masked offsets.

    Returns the next canvases, their weights, their weighted logq sums and
    whether the planner asked for a random order (then every order was branched).
    """
    v, mask_id = oracle.num_tokens, oracle.spec.mask_id
    att = torch.ones_like(canvas, dtype=torch.bool)
    z64 = oracle(canvas, att, att.long().cumsum(-1) - 1, window=(lo, hi))  # [S, Bl, V + 2] float64, exact
    z64[..., mask_id] = float("-inf")  # what decide() does
    block = canvas[:, lo:hi]
    masked = block[0] == mask_id  # [Bl], the same for every state here
    m = int(masked.sum())
    draws = torch.tensor(list(itertools.product(range(v), repeat=m)), dtype=torch.long).reshape(-1, m)  # [C, m]
    prop = _proposals(z64.float(), block, masked, draws, planner.needs)  # what the planner sees (float32)
    exact = _proposals(z64, block, masked, draws, frozenset()).logq  # [S C, Bl] float64: the weights
    n = prop.tokens.shape[0]
    row_mask = masked.expand(n, -1)
    probe = _FixedOrder(_orders(masked, 1)[:1].expand(n, -1))
    reveal = planner.select(PlanStep(row_mask, prop, call, hi - lo, num_blocks, probe)).reveal  # type: ignore[arg-type]
    k = 1
    if probe.used:  # a random order: branch over every order of the masked offsets
        k = math.factorial(m)
        if n * k > max_rows:
            raise ValueError(f"a call has {v}**{m} joint draws times {m}! orders, over max_rows={max_rows}")
        prop = _repeat_rows(prop, k)
        exact = exact.repeat_interleave(k, 0)
        noise = _FixedOrder(_orders(masked, n))
        reveal = planner.select(PlanStep(masked.expand(n * k, -1), prop, call, hi - lo, num_blocks, noise)).reveal  # type: ignore[arg-type]
    c = draws.shape[0]
    assert not (reveal & ~masked).any() and bool(reveal.any(-1).all()), f"{planner} broke the planner contract"
    p_draw = exact.sum(-1).exp()  # [S C k]: probability of the joint draw (orders equally likely)
    own = weight.repeat_interleave(c * k) * p_draw / k  # [S C k]
    logq_revealed = torch.where(reveal, exact, torch.zeros((), dtype=DTYPE)).sum(-1)
    new_acc = acc.repeat_interleave(c * k) * p_draw / k + own * logq_revealed
    nxt = canvas.repeat_interleave(c * k, 0)
    nxt[:, lo:hi] = torch.where(reveal, prop.tokens, nxt[:, lo:hi])
    return nxt, own, new_acc, probe.used


def _merge(canvas: Tensor, weight: Tensor, acc: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    uniq, inv = torch.unique(canvas, dim=0, return_inverse=True)
    w = torch.zeros(uniq.shape[0], dtype=DTYPE).index_add_(0, inv, weight)
    a = torch.zeros(uniq.shape[0], dtype=DTYPE).index_add_(0, inv, acc)
    return uniq, w, a


@torch.no_grad()
def _keeps_state(planner: Planner) -> bool:
    """Whether ``planner`` (or a planner inside it) carries state between calls (``stable``'s history)."""
    return planner.name == "stable" or any(_keeps_state(v) for v in vars(planner).values() if isinstance(v, Planner))


def enumerate_sampler(
    oracle: ChainOracle, planner: Planner, gen_length: int, block_length: int, prompt: Sequence[int] = (),
    max_rows: int = 4_000_000,
) -> SamplerLaw:
    """The exact output distribution of ``planner`` at temperature 1 on ``oracle``.

    Semi-autoregressive blocks of ``block_length`` after the fixed ``prompt``
    (token ids, may be empty), as :func:`unmask.generate` runs them with
    ``temperature=1``, ``top_p=1`` and no early exit. ``max_rows`` bounds the
    branches of one call (``ValueError`` beyond it): the enumeration is for
    small vocabularies and blocks. Revising planners (edits, re-masks, pending
    calls) and planners with per-row history are followed exactly by
    :func:`~unmask.oracles.enumerate_revise.enumerate_stateful`.
    """
    config = GenerationConfig(gen_length=gen_length, block_length=block_length, planner=planner, early_exit=False)
    planner = config.planner  # type: ignore[assignment]  # spec strings parsed and checked
    prompt = [int(t) for t in prompt]
    if any(not 0 <= t < oracle.num_tokens for t in prompt):
        raise ValueError(f"prompt must hold token ids in [0, {oracle.num_tokens}), got {prompt!r}")
    if planner.revises or _keeps_state(planner):  # the state of a branch is (canvas, planner state)
        from .enumerate_revise import enumerate_stateful

        return enumerate_stateful(oracle, planner, config.num_blocks, block_length, prompt, gen_length, max_rows)
    p_len, mask_id = len(prompt), oracle.spec.mask_id
    canvas = torch.tensor([prompt + [mask_id] * gen_length], dtype=torch.long)
    weight, acc = torch.ones(1, dtype=DTYPE), torch.zeros(1, dtype=DTYPE)  # acc: E[sum logq so far; state]
    nfe = 0.0
    for b in range(config.num_blocks):
        lo, hi = p_len + b * block_length, p_len + (b + 1) * block_length
        call = 0
        while bool((canvas[:, lo:hi] == mask_id).any()):
            pending = (canvas[:, lo:hi] == mask_id).any(-1)
            nfe += float(weight[pending].sum())
            parts = [(canvas[~pending], weight[~pending], acc[~pending])]
            patterns, group = torch.unique(canvas[pending, lo:hi] == mask_id, dim=0, return_inverse=True)
            for g in range(patterns.shape[0]):
                rows = pending.nonzero().squeeze(-1)[group == g]
                m = int(patterns[g].sum())
                if oracle.num_tokens**m > max_rows:
                    raise ValueError(f"a call has {oracle.num_tokens}**{m} joint draws, over max_rows={max_rows}")
                i, step = 0, 1  # the first state alone tells whether orders are branched too
                while i < rows.numel():
                    r = rows[i : i + step]
                    *part, ordered = _branch(oracle, planner, canvas[r], weight[r], acc[r], lo, hi, call, config.num_blocks,
                                             max_rows)
                    parts.append(tuple(part))
                    i += r.numel()
                    step = max(1, max_rows // (oracle.num_tokens**m * (math.factorial(m) if ordered else 1)))
            canvas, weight, acc = _merge(*(torch.cat(t) for t in zip(*parts)))
            call += 1
    gen = canvas[:, p_len:]
    full = oracle.log_prob(canvas)
    log_p = full - (oracle.log_prob(canvas[:, :p_len]) if p_len else 0.0)
    path = (float(acc.sum()) - float((weight * log_p).sum())) / gen_length
    return SamplerLaw(gen, weight, log_p, nfe, path)
