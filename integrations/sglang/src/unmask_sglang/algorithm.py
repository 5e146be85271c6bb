"""unmask's planners as SGLang dLLM algorithms: one ``DllmAlgorithm`` subclass per planner.

SGLang runs a block of ``block_size`` tokens per request through repeated
model forwards and calls ``step(forward_batch, full_logits, states)`` after
each one. Here ``step`` views the logits as ``[B, block, V]`` and the ids as
``[B, block]`` and runs :func:`unmask.decide.decide`, the one per-call
decision of unmask's own loop, so for the same logits, positions and seeds a
request gets exactly the tokens ``unmask.generate`` would give it. The
contract SGLang asks for:

- a block reports done only when it had no mask at the start of the step, so
  the forward that holds its final tokens (and their KV) has run;
- revealed tokens are written into ``forward_batch.input_ids`` in place (its
  identity is what CUDA graphs replay from);
- every tensor-parallel rank draws the same numbers: unmask's noise is a hash
  of (request seed, call index within the block, position id, vocabulary
  index), and the request seed comes from the request (its sampling seed,
  else the config seed and the request id), never from the rank or a
  generator.

A request's state between steps is its seed, the index of its next call
within the block and the block's lead (:class:`RequestState`); DUS's deferral
needs nothing more (DESIGN.md, "Planner state"). With FDFO scheduling SGLang
keeps that state on the request across rounds, so rows of one batch may sit
at different calls: ``step`` runs ``decide`` once per group of rows with the
same (call index, lead), on those rows' logits.

SGLang lays blocks out from position 0, so a prompt that ends mid-block puts
its last ``m`` tokens at the first offsets of the first block to generate.
The number of such offsets, read at the block's first call, is the block's
``lead``: every schedule-based planner (DUS, binary, interleave, farthest,
top-k's dilated or step counts) plans the ``B - m`` offsets left exactly as
it plans a block of ``B - m`` in ``unmask.generate``
(:class:`unmask.planners.PlanStep`), instead of treating the prompt's offsets
as already revealed levels.

Revising planners (``edit``, ``wino``, ``remask``) write an edit's proposal
and a re-mask's mask id into ``input_ids`` like a reveal; a block stays open
after its last mask while the planner asks for another call (``edit``'s
post-fill edit calls: the request's ``pending`` flag, read in the step's one
host read) and reports done at the step after, whose forward holds the final
tokens, or once the request has made the planner's ``max_calls_per_block``
calls. Per-request planner state (``edit``'s call count, ``stable``'s
history) rides in :class:`RequestState` between steps.

SGLang up to 0.5.23 passes ``step`` the dense logits tensor
(``logits_output.full_logits``); its main branch passes the
``LogitsProcessorOutput`` itself. ``step`` takes either (:func:`dense_logits`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from sglang.srt.dllm.algorithm.base import DllmAlgorithm
from torch import Tensor

from unmask.decide import broken, check, decide
from unmask.noise import Noise, derive_seed
from unmask.planners import PLANNERS

from .settings import NOT_SERVED, Settings, algorithm_name

# The block-diffusion architectures SGLang serves with a mask token (its DllmConfig table);
# DiffusionGemma needs SGLang's own Gemma4Renoise algorithm.
ARCHITECTURES = ("LLaDA2MoeModelLM", "SDARForCausalLM", "SDARMoeForCausalLM")
SEED_MASK = (1 << 64) - 1  # a request's int64 sampling seed, read as the unsigned 64-bit seed unmask takes


@dataclass
class RequestState:
    """What one request's current block carries between steps."""

    seed: int  # the request's noise seed (>= 0)
    call: int = 0  # index of the next call within the block
    lead: int = 0  # offsets of the block filled before its first call (the prompt's tail)
    plan: tuple[Tensor, ...] | None = None  # the planner's state for this block's row ([1, ...] tensors)
    pending: Tensor | None = None  # 0-dim bool on the device: a revising planner wants another call


def rid_key(rid: str) -> int:
    """A stable 63-bit integer for a request id (the same in every process and run)."""
    return int.from_bytes(hashlib.sha256(rid.encode()).digest()[:8], "little") >> 1


def request_seeds(forward_batch: Any, base: int) -> list[int]:
    """One noise seed per request of the batch, the same on every tensor-parallel rank.

    The request's sampling seed when SGLang passes one (``sampling_info.sampling_seed``,
    filled with ``--enable-deterministic-inference``; a non-negative seed is used as
    it is, so ``unmask.generate(seeds=[s])`` reproduces the request), else
    ``derive_seed(base, rid_key(rid))`` from the config seed and the request id.
    """
    n = forward_batch.batch_size
    sampling_seed = getattr(getattr(forward_batch, "sampling_info", None), "sampling_seed", None)
    if sampling_seed is not None:
        return [int(s) & SEED_MASK for s in sampling_seed.reshape(-1)[:n].tolist()]
    rids = getattr(forward_batch, "rids", None)
    if rids is None or len(rids) < n:
        raise RuntimeError("unmask's SGLang algorithms need each request's id (forward_batch.rids) or sampling "
                           "seed to seed its draws; this forward batch carries neither")
    return [derive_seed(base, rid_key(str(rid))) for rid in rids[:n]]


def dense_logits(logits: Any) -> Tensor:
    """The ``[tokens, V]`` logits ``step`` was given: the tensor itself (SGLang <= 0.5.23) or the
    ``full_logits`` of the ``LogitsProcessorOutput`` that SGLang's main branch passes."""
    if isinstance(logits, Tensor):
        return logits
    full = getattr(logits, "full_logits", None)
    if isinstance(full, Tensor):
        return full
    raise TypeError(f"unmask's SGLang algorithms need the dense logits of every block position: step got a "
                    f"{type(logits).__name__} whose full_logits is {type(full).__name__}, not a tensor")


class UnmaskAlgorithm(DllmAlgorithm):
    """An unmask planner behind SGLang's dLLM algorithm interface (subclassed once per planner kind)."""

    kind: ClassVar[str] = ""  # registry name of the planner in unmask.planners.PLANNERS
    supported_architectures = ARCHITECTURES

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        if not self.kind:
            raise TypeError("UnmaskAlgorithm is a base class; use one of unmask_sglang.ALGORITHMS")
        self.settings = Settings.parse(self.kind, config.algorithm_config, self.block_size)
        planner = self.settings.planner
        self.cap = planner.max_calls_per_block(self.block_size) if planner.revises else None

    def max_steps(self, block_size: int) -> int:
        """Steps SGLang's synchronous loop allows a block: the planner's bound on calls, plus the step that finds
        the block done (SGLang's default, ``block_size + 1``, for planners that only reveal)."""
        return (block_size if self.cap is None else max(block_size, self.cap)) + 1

    def init_step_state(self, forward_batch: Any) -> list[RequestState]:
        return [RequestState(seed) for seed in request_seeds(forward_batch, self.settings.seed)]

    def step(self, forward_batch: Any, logits: Any, states: list[RequestState]) -> list[bool]:
        """Reveal this call's positions of every block that has masks; True for blocks that had none.

        ``logits``: the ``[n * block, V]`` tensor (SGLang <= 0.5.23) or the
        ``LogitsProcessorOutput`` holding it (SGLang's main branch).
        """
        n, bl = forward_batch.batch_size, self.block_size
        ids = forward_batch.input_ids.view(n, bl)  # a view: writes land in input_ids itself
        masked = ids == self.mask_id  # [n, bl]
        prompt = getattr(forward_batch, "dllm_prompt_mask", None)  # committed tokens that are literally the mask id
        if prompt is not None:
            masked &= ~prompt.view(n, bl)
        # per row: has masks (or, for a revising planner, still edits), and the filled offsets before its first
        # mask (the lead, read at call 0); one host read, as SGLang's own algorithms make
        flags = [masked.any(-1).long(), (~masked).long().cumprod(-1).sum(-1)]
        if self.cap is not None:
            no = torch.zeros((), dtype=torch.bool, device=ids.device)
            pending = torch.stack([no if s.pending is None else s.pending for s in states]).long()
            under = torch.tensor([s.call < self.cap for s in states], dtype=torch.long, device=ids.device)
            flags[0] = (flags[0] | pending) & under  # the planner leaves no mask at its last allowed call
        active, leads = torch.stack(flags).tolist()
        groups: dict[tuple[int, int], list[int]] = {}
        for i, has_masks in enumerate(active):
            if has_masks:
                if states[i].call == 0:
                    states[i].lead = leads[i]
                groups.setdefault((states[i].call, states[i].lead), []).append(i)
        if groups:
            full = dense_logits(logits).view(n, bl, -1)
            # position ids, counted from the request's first token (a graph-padded buffer is cut to the batch)
            positions = forward_batch.positions[: n * bl].view(n, bl).long()
            nonfinite = torch.zeros((), dtype=torch.bool, device=ids.device)
            bad = torch.zeros_like(nonfinite)
            for (call, lead), rows in groups.items():
                nonfinite, bad = self._reveal(ids, full, masked, positions, states, call, lead, rows, nonfinite, bad)
                for i in rows:
                    states[i].call += 1
            check(nonfinite, bad, self.settings.planner)
        return [not has_masks for has_masks in active]

    def _reveal(self, ids: Tensor, logits: Tensor, masked: Tensor, positions: Tensor, states: list[RequestState],
                call: int, lead: int, rows: list[int], nonfinite: Tensor, bad: Tensor) -> tuple[Tensor, Tensor]:
        """Run ``decide`` for the blocks ``rows`` (all at call ``call``, with lead ``lead``); write their reveals
        into ``ids``."""
        whole = len(rows) == ids.shape[0]  # the common case: no gather, no scatter
        idx = None if whole else torch.tensor(rows, dtype=torch.long, device=ids.device)
        pick = (lambda t: t) if idx is None else (lambda t: t.index_select(0, idx))
        m, planner = pick(masked), self.settings.planner
        noise = Noise.from_seeds([states[i].seed for i in rows], ids.device).at(call, pick(positions))
        looks_back = planner.revises or "current" in planner.needs
        kept = [states[i].plan for i in rows]
        state = None if kept[0] is None else tuple(torch.cat(parts) for parts in zip(*kept, strict=True))
        d = decide(pick(logits), m, planner, self.settings.sampling, noise, call, 1, self.mask_id,
                   lead=lead, tokens=pick(ids) if looks_back else None, state=state)
        write = d.reveal if d.edit is None else d.reveal | d.edit
        new = torch.where(write, d.proposal.tokens, pick(ids))  # [k, bl]
        if d.remask is not None:
            new = new.masked_fill(d.remask, self.mask_id)
        for j, i in enumerate(rows):
            if d.state is not None:
                states[i].plan = tuple(t[j : j + 1] for t in d.state)
            if d.pending is not None:
                states[i].pending = d.pending[j]
        if idx is None:
            ids.copy_(new)
        else:
            ids.index_copy_(0, idx, new)
        finite = d.proposal.finite
        if finite is not None:
            nonfinite = nonfinite | ~finite.all()  # per row: any row of this group
        return nonfinite, bad | broken(m, d.reveal, d.edit, d.remask)


def _adapter(kind: str) -> type[UnmaskAlgorithm]:
    name = algorithm_name(kind)
    doc = f"``--dllm-algorithm {name}``: unmask's {kind!r} planner (unmask.planners.{PLANNERS[kind].__name__})."
    cls_name = "Unmask" + PLANNERS[kind].__name__
    return type(cls_name, (UnmaskAlgorithm,), {"kind": kind, "__doc__": doc, "__module__": __name__,
                                               "__qualname__": cls_name})


# name -> class, DUS first; one adapter per planner in unmask's registry (but NOT_SERVED)
ALGORITHMS: dict[str, type[UnmaskAlgorithm]] = {
    algorithm_name(kind): _adapter(kind)
    for kind in sorted(PLANNERS, key=lambda k: (k != "dilated", k)) if kind not in NOT_SERVED
}
