"""Prompts that end mid-block: the first block plans its masked offsets as ``unmask.generate`` plans a shorter block.

SGLang lays blocks out from position 0, so a prompt of ``k * B + m`` tokens
puts its last ``m`` at offsets ``0..m-1`` of the first block to generate.
Served through the plugin, that block reveals exactly what
``unmask.generate`` reveals for the same request with ``gen_length =
block_length = B - m`` (each planner's schedule of a block of ``B - m``, laid
on offsets ``m..B-1``); the blocks after it are whole and match
``unmask.generate`` continued from there. Requests with different ``m`` share
batches (synchronous, and first-done-first-out with staggered joins and
shuffled batches), so one batch holds blocks
at different calls and with different leads. Each request is compared with
``unmask.generate`` of that request alone, on the same scripted logits and seeds.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from scripted import MASK, FakeRunner, Request, ScriptedModel, build_algorithm, serve_fdfo, serve_sync

from unmask import GenerationConfig, generate
from unmask.noise import derive_seed
from unmask.planners import Interleave, Planner, Schedule, parse_planner
from unmask_sglang.algorithm import rid_key

BL, BLOCKS = 8, 3
PROMPT_LENGTHS = [5, 11, 15, 9, 16, 2]  # m = 5, 3, 7, 1, 0, 6 prompt tokens in the first block
JOINS = [0, 2, 1, 5, 3, 0]  # FDFO: the round at which each request arrives
SCHEDULE = ((7,), (0, 3), (1, 5), (2, 4, 6))
PLANNERS = [
    "dilated(base=2)",
    "dilated(base=2, confidence_threshold=0.6)",
    "dilated(base=3)",
    "binary",
    "binary(confidence_threshold=0.5)",
    "interleave(k=4)",
    "interleave(k=3, confidence_threshold=0.5)",
    "farthest(calls=3)",
    "farthest(calls=4, growth=1.0)",
    f"schedule(groups={SCHEDULE!r})",
    "topk(score='confidence', counts='dilated')",
    "topk(score='random', counts='dilated')",
    "topk(score='margin', steps=3)",
    "eb(gamma=1.0)",
    "threshold(tau=0.5)",
    "topk(score='position', counts='dilated')",
    "dynamic(counts='dilated', tau=0.6)",
    "entropy_sum(bound=0.5)",
]
SAMPLING = {"greedy": {}, "seeded": {"temperature": 0.8, "top_p": 0.95}}
EOS_FREE = 14  # prompt tokens lie below the EOS and mask ids


def short_planner(planner: Planner, m: int) -> Planner:
    """The planner ``unmask.generate`` runs on the ``BL - m`` masked offsets of a first block with ``m`` filled.

    The same planner, except where a block of ``BL - m`` needs a setting of its own: a schedule keeps its
    groups' offsets from m on (shifted to start at 0, empty groups dropped), and a call or step count
    above ``BL - m`` becomes ``BL - m`` (one offset per call), as the plugin does.
    """
    n = BL - m
    if isinstance(planner, Schedule):
        groups = [tuple(i - m for i in g if i >= m) for g in planner.groups]
        return Schedule(groups=tuple(g for g in groups if g))
    if isinstance(planner, Interleave) and planner.k > n:  # classes with no offset are skipped: one offset per call,
        return Schedule(groups=tuple(map(tuple, planner.levels(n))),  # in the order of the classes (generate
                        confidence_threshold=planner.confidence_threshold)  # refuses k > block_length itself)
    for field in ("calls", "steps"):
        value = getattr(planner, field, None)
        if isinstance(value, int) and value > n:
            return dataclasses.replace(planner, **{field: n})
    return planner


def alone(model: ScriptedModel, prompt: list[int], spec: str, sampling: dict, seed: int) -> tuple[list, list]:
    """``unmask.generate`` of one request alone: its tokens, and per SGLang block the call revealing each offset."""
    planner = parse_planner(spec)
    m, tokens, calls = len(prompt) % BL, [], []
    if m:  # the block the prompt ends in: a block of BL - m
        cfg = GenerationConfig(gen_length=BL - m, block_length=BL - m, planner=short_planner(planner, m),
                               sampling=sampling, early_exit=False)
        out = generate(model, [prompt], cfg, seeds=[seed])
        tokens = out.sequences[0, -(BL - m):].tolist()
        calls.append([None] * m + out.trace.reveal_call[0].tolist())
    whole = BLOCKS - 1 if m else BLOCKS
    if getattr(planner, "steps", None):  # generate's steps count over the whole generation
        planner = dataclasses.replace(planner, steps=planner.steps * whole)
    cfg = GenerationConfig(gen_length=whole * BL, block_length=BL, planner=planner, sampling=sampling,
                           early_exit=False)
    out = generate(model, [prompt + tokens], cfg, seeds=[seed])
    tokens += out.sequences[0, -whole * BL:].tolist()
    for b in range(whole):
        first = int((out.trace.block_of_call == b).nonzero()[0])
        calls.append((out.trace.reveal_call[0, b * BL : (b + 1) * BL] - first).tolist())
    return tokens, calls


def make_requests() -> list[Request]:
    g = torch.Generator().manual_seed(11)
    return [Request(f"req-{i}", torch.randint(0, EOS_FREE, (n,), generator=g).tolist(), seed=2000 + 31 * i)
            for i, n in enumerate(PROMPT_LENGTHS)]


def build(spec: str, sampling: dict, fdfo: bool):
    return build_algorithm(spec, sampling, fdfo, BL, seed=9)


def serve(spec: str, sampling: str, mode: str, model: ScriptedModel, reqs: list[Request]) -> FakeRunner:
    algo, runner = build(spec, SAMPLING[sampling], fdfo=mode != "sync"), FakeRunner(model, BL)
    if mode == "sync":
        serve_sync(algo, runner, reqs, BLOCKS, seeded=True)
    else:
        serve_fdfo(algo, runner, reqs, BLOCKS, seeded=False, joins=JOINS, shuffle_seed=4, main=mode == "main")
    return runner


@pytest.mark.parametrize("mode", ["sync", "fdfo"])  # main's step signature: test_sglang_equivalence.py
@pytest.mark.parametrize("sampling", list(SAMPLING))
@pytest.mark.parametrize("spec", PLANNERS)
def test_a_prompt_ending_mid_block_gets_the_shorter_blocks_reveals(spec: str, sampling: str, mode: str) -> None:
    model, reqs = ScriptedModel(BL, seed=5), make_requests()
    runner = serve(spec, sampling, mode, model, reqs)
    for r in reqs:
        seed = r.seed if mode == "sync" else derive_seed(9, rid_key(r.rid))
        tokens, calls = alone(model, r.prompt, spec, SAMPLING[sampling], seed)
        assert r.tokens == tokens, f"{r.rid}: tokens differ"
        starts = [len(r.prompt) // BL * BL + b * BL for b in range(BLOCKS)]
        assert [runner.reveal_calls(r.rid, s, MASK) for s in starts] == calls, f"{r.rid}: reveal order differs"


@pytest.mark.parametrize("mode", ["sync", "fdfo"])
def test_batches_hold_blocks_with_different_leads_at_one_call(mode: str) -> None:
    """The requests really share steps at one call index with different leads (else the test above is weak)."""
    algo = build("dilated(base=2)", {}, fdfo=mode == "fdfo")
    seen: list[dict[int, set[int]]] = []
    step = algo.step

    def spy(fb, logits, states):
        done = step(fb, logits, states)
        by_call: dict[int, set[int]] = {}
        for s in states:
            by_call.setdefault(s.call - 1, set()).add(s.lead)  # the call this step ran
        seen.append(by_call)
        return done

    algo.step = spy
    reqs, runner = make_requests(), FakeRunner(ScriptedModel(BL, seed=5), BL)
    if mode == "sync":
        serve_sync(algo, runner, reqs, BLOCKS, seeded=True)
    else:
        serve_fdfo(algo, runner, reqs, BLOCKS, seeded=False, joins=JOINS, shuffle_seed=4)
    assert any(len(leads) > 1 for by_call in seen for leads in by_call.values())


def test_dus_over_five_prompt_tokens_in_a_block_of_eight() -> None:
    """The reported case: 5 prompt tokens in a block of 8 once gave [[6], [5], [7]] (one token per call)."""
    model, (req,) = ScriptedModel(BL, seed=5), [Request("r", list(range(5)), seed=1)]
    algo, runner = build("dilated(base=2)", {}, fdfo=True), FakeRunner(model, BL)
    serve_fdfo(algo, runner, [req], 1, seeded=True, joins=[0])
    # DUS on a block of 3: stride 3 // 2 = 1 takes every offset in one call
    assert runner.reveal_calls("r", 0, MASK) == [None] * 5 + [0, 0, 0]
