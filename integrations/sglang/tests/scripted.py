"""A scripted model, and SGLang's serving of it reduced to what the dLLM algorithms see.

- :class:`ScriptedModel`: an unmask ``Denoiser`` whose logits are exact (integer
  sums, then one power-of-two scale), so a request's logits are bit-identical
  in unmask's left-padded canvas and in SGLang's prefix-plus-block layout.
- :class:`FakeRunner`: stands in for SGLang's ``ModelRunner.forward``: it
  computes the logits of every request's block from the committed prefix and
  the block's current ids, and records the block at each forward (so the call
  that revealed each position can be read back).
- :func:`serve_sync` and :func:`serve_fdfo` drive ``DllmAlgorithm.run``,
  SGLang's own code for one round, as its scheduler does: all blocks together,
  or first-done-first-out with requests joining at different rounds and the
  batch order shuffled every round. Blocks are laid out from position 0, as
  SGLang's scheduler lays them (``ReqDllmMixin``): a prompt that ends
  mid-block puts its last tokens at the first offsets of the first block to
  generate, and only the offsets after them are output.
- :func:`run_main`: one FDFO round as SGLang's main branch runs it, which
  passes ``step`` the ``LogitsProcessorOutput`` instead of its ``full_logits``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import torch
from sglang.srt.layers.logits_processor import LogitsProcessorOutput
from torch import Tensor

from unmask import Denoiser, TokenSpec
from unmask.canvas import Canvas
from unmask.denoiser import select_window

VOCAB, EOS, MASK = 16, 14, 15


class ScriptedModel(Denoiser):
    """logits[i] = (E[x_i] + P[p_i % 7] + sum_j max(0, 4 - |p_i - p_j|) F[x_j]) / 8 over visible positions j.

    Attention is block-causal, as in the block-diffusion models SGLang serves
    (LLaDA2, SDAR): position i sees the real positions j of its own block and
    of earlier ones (blocks of ``block_size`` counted from position 0), so
    masks after the current block, which unmask's canvas holds and SGLang's
    does not, change nothing. Every term is an integer, so every sum is exact
    whatever the padding, batch or summation order; neighbours within three
    positions shape each logit, so what a call reveals changes the next call's logits.
    """

    def __init__(self, block_size: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.block_size = block_size
        self.spec = TokenSpec(mask_id=MASK, eos_ids=(EOS,), pad_id=0, vocab_size=VOCAB)
        self.E = torch.randint(-24, 25, (VOCAB, VOCAB), generator=g).double()
        self.P = torch.randint(-8, 9, (7, VOCAB), generator=g).double()
        self.F = torch.randint(-6, 7, (VOCAB, VOCAB), generator=g).double()

    def __call__(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, window=None) -> Tensor:
        rel = (position_ids[:, :, None] - position_ids[:, None, :]).abs()  # [N, T, T]
        block = position_ids // self.block_size
        visible = attention_mask[:, None, :] & (block[:, None, :] <= block[:, :, None])  # [N, T, T]
        w = (4 - rel).clamp_min(0).double() * visible
        z = self.E[input_ids] + self.P[position_ids % 7] + w @ self.F[input_ids]  # [N, T, V], integers
        return select_window((z / 8).float(), window)


@dataclass
class Request:
    rid: str
    prompt: list[int]
    seed: int  # the request's sampling seed (used when the batch carries sampling seeds)
    tokens: list[int] = field(default_factory=list)  # committed output

    @property
    def prefix(self) -> list[int]:
        return self.prompt + self.tokens

    def start(self, block_size: int) -> int:
        """Position of the block to generate next: blocks are counted from position 0."""
        return len(self.prefix) // block_size * block_size

    def new_block(self, block_size: int, mask_id: int) -> list[int]:
        """The next block as SGLang fills it: the committed tokens past its start, then masks."""
        head = self.prefix[self.start(block_size):]
        return head + [mask_id] * (block_size - len(head))

    def target(self, block_size: int, num_blocks: int) -> int:
        """Tokens to generate: to the end of the block the prompt ends in, then ``num_blocks - 1`` whole ones."""
        return (len(self.prompt) // block_size + num_blocks) * block_size - len(self.prompt)


def forward_batch(reqs: list[Request], blocks: list[list[int]], block_size: int, seeded: bool) -> SimpleNamespace:
    """What the algorithms read of SGLang's ForwardBatch (flat ids and positions, request ids, sampling seeds)."""
    offsets = [r.start(block_size) for r in reqs]
    positions = torch.tensor([[o + k for k in range(block_size)] for o in offsets], dtype=torch.int32)
    seeds = torch.tensor([r.seed for r in reqs], dtype=torch.int64) if seeded else None
    return SimpleNamespace(
        batch_size=len(reqs), input_ids=torch.tensor(blocks, dtype=torch.long).reshape(-1),
        positions=positions.reshape(-1), dllm_prompt_mask=None, rids=[r.rid for r in reqs],
        sampling_info=SimpleNamespace(sampling_seed=seeds), prefixes=[r.prefix[: o] for r, o in zip(reqs, offsets)],
    )


class FakeRunner:
    """``forward(forward_batch)`` as SGLang's model runner answers it, from a scripted model."""

    def __init__(self, model: Denoiser, block_size: int) -> None:
        self.model, self.block_size = model, block_size
        self.snapshots: dict[tuple[str, int], list[list[int]]] = {}  # (rid, block start) -> block ids per forward

    def forward(self, fb: Any, pp_proxy_tensors: Any = None) -> SimpleNamespace:
        n, bl = fb.batch_size, self.block_size
        blocks = fb.input_ids.view(n, bl).tolist()
        for rid, prefix, block in zip(fb.rids, fb.prefixes, blocks):
            self.snapshots.setdefault((rid, len(prefix)), []).append(block)
        canvas = Canvas.build([p + b for p, b in zip(fb.prefixes, blocks)], 0, self.model.spec)
        t = canvas.ids.shape[1]
        logits = self.model(canvas.ids, canvas.attention_mask, canvas.positions, window=(t - bl, t))  # [n, bl, V]
        output = LogitsProcessorOutput(next_token_logits=None, full_logits=logits.reshape(n * bl, -1))
        return SimpleNamespace(logits_output=output, can_run_graph=False)

    def reveal_calls(self, rid: str, start: int, mask_id: int) -> list[int | None]:
        """For each position of a block, the index of the call (within the block) that revealed it
        (None for positions filled before the block's first call)."""
        snaps = self.snapshots[(rid, start)]
        calls = [next(k for k, s in enumerate(snaps) if s[p] != mask_id) - 1 for p in range(self.block_size)]
        return [None if c < 0 else c for c in calls]


def serve_sync(algo: Any, runner: FakeRunner, reqs: list[Request], num_blocks: int, seeded: bool) -> None:
    """Synchronous scheduling: every request's block runs to the end together, block after block."""
    bl = algo.block_size
    for _ in range(num_blocks):
        fb = forward_batch(reqs, [r.new_block(bl, algo.mask_id) for r in reqs], bl, seeded)
        _, next_ids, _, _, _ = algo.run(runner, fb)
        for r, ids in zip(reqs, next_ids):  # SGLang returns each block from its first masked offset
            r.tokens += ids.tolist()


def run_main(algo: Any, runner: FakeRunner, fb: Any, algo_states: list[Any]) -> tuple:
    """One FDFO round as SGLang's main branch runs it (``DllmAlgorithm._run_fdfo``), where ``step`` gets
    ``out.logits_output`` itself; 0.5.23 passes ``out.logits_output.full_logits``."""
    fresh = algo.init_step_state(fb)
    states = [f if s is None else s for s, f in zip(algo_states, fresh)]
    algo.prepare_inputs(runner, fb, states)
    out = runner.forward(fb, pp_proxy_tensors=None)
    done = algo.step(fb, out.logits_output, states)
    ids = fb.input_ids.view(fb.batch_size, algo.block_size).tolist()
    return (out.logits_output, ids, [algo.block_size if d else 0 for d in done],
            [None if d else s for d, s in zip(done, states)], out.can_run_graph)


def serve_fdfo(algo: Any, runner: FakeRunner, reqs: list[Request], num_blocks: int, seeded: bool,
               joins: list[int], shuffle_seed: int = 0, main: bool = False) -> None:
    """First-done-first-out: one forward per round; finished blocks commit, the rest carry ids and state.

    ``main``: run each round as SGLang's main branch does (:func:`run_main`) instead of the installed ``run``.
    """
    assert algo.fdfo, "serve_fdfo needs an algorithm built with first_done_first_out_mode=True"
    bl, rng = algo.block_size, random.Random(shuffle_seed)
    block = {r.rid: r.new_block(bl, algo.mask_id) for r in reqs}
    state: dict[str, Any] = {r.rid: None for r in reqs}
    for rnd in range(10 * num_blocks * (bl + 1) + max(joins)):
        batch = [r for r, j in zip(reqs, joins) if j <= rnd and len(r.tokens) < r.target(bl, num_blocks)]
        if not batch and rnd >= max(joins):
            return
        rng.shuffle(batch)
        if not batch:
            continue
        fb = forward_batch(batch, [block[r.rid] for r in batch], bl, seeded)
        states_in = [state[r.rid] for r in batch]
        if main:
            _, next_ids, accepted, states_out, _ = run_main(algo, runner, fb, states_in)
        else:
            _, next_ids, accepted, states_out, _ = algo.run(runner, fb, states_in)
        for r, ids, acc, st in zip(batch, next_ids, accepted, states_out):
            if acc:  # SGLang's scheduler outputs the block past the committed tokens it started with
                r.tokens += ids[len(r.prefix) - r.start(bl):]
                block[r.rid], state[r.rid] = r.new_block(bl, algo.mask_id), None
            else:
                block[r.rid], state[r.rid] = ids, st
    raise AssertionError("serve_fdfo did not finish every request")


def build_algorithm(spec: str, sampling: dict, fdfo: bool, block_size: int, seed: int) -> Any:
    """The plugin's algorithm for planner ``spec`` as SGLang builds it from ``--dllm-algorithm-config``."""
    from sglang.srt.dllm.config import DllmConfig
    from unmask.planners import parse_planner
    from unmask_sglang.algorithm import ALGORITHMS
    from unmask_sglang.settings import algorithm_name

    name = algorithm_name(parse_planner(spec).name)
    config = DllmConfig(algorithm=name, algorithm_config={"planner": spec, "seed": seed, **sampling},
                        block_size=block_size, mask_id=MASK, max_running_requests=8, first_done_first_out_mode=fdfo)
    return ALGORITHMS[name](config)
