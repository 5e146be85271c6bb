"""Served through SGLang's dLLM loop, every unmask planner reveals exactly what ``unmask.generate`` reveals.

The same scripted model answers both: unmask's loop over a left-padded
batch, and SGLang's ``DllmAlgorithm.run`` (synchronous, or first-done-first-out
with requests joining at different rounds, so one batch holds blocks at
different calls, in a shuffled order; and first-done-first-out as SGLang's
main branch runs it, passing ``step`` the ``LogitsProcessorOutput``) through
the plugin's adapters. Prompts are whole blocks long, so SGLang's blocks are
unmask's blocks and both sides use the same position ids (prompts that end
mid-block: ``test_sglang_partial_blocks.py``); both use the same per-request seeds. Compared:
every generated token and, for every position, the call within its block
that revealed it; and SGLang's extra forward per block (the one that finds
no masks and reports the block done) is checked to be exactly one.
"""

from __future__ import annotations

import pytest
import torch
from scripted import MASK, FakeRunner, Request, ScriptedModel, build_algorithm, serve_fdfo, serve_sync

from unmask import GenerationConfig, generate
from unmask.noise import derive_seed
from unmask_sglang.algorithm import rid_key

BL, BLOCKS = 8, 3
PROMPT_BLOCKS = [1, 2, 1, 3]  # prompt lengths in blocks: rows sit at different positions
JOINS = [0, 2, 1, 5]  # FDFO: the round at which each request arrives

# (spec in the SGLang config, spec for unmask.generate): topk's steps count per block in SGLang (no fixed
# generation length there) and over the whole generation in unmask's loop
PLANNERS = [
    ("dilated(base=2)", None),
    ("dilated(base=2, confidence_threshold=0.6)", None),
    ("dilated(base=3)", None),
    ("binary(confidence_threshold=0.5)", None),
    ("topk(score='confidence', counts='dilated')", None),
    ("topk(score='margin', steps=3)", f"topk(score='margin', steps={3 * BLOCKS})"),
    ("topk(score='entropy', counts=(3, 3, 2))", None),
    ("topk(score='random', counts='dilated')", None),
    ("eb(gamma=1.0)", None),
    ("threshold(tau=0.5)", None),
    ("factor(factor=1.0)", None),
    ("spaced(eb(gamma=2.0), start_stride=8)", None),
    ("spaced(threshold(tau=0.3), start_stride=4)", None),
    ("topk(score='position', counts='dilated')", None),
    ("dynamic(counts='dilated', tau=0.6)", None),
    ("entropy_sum(bound=0.5)", None),
]
EOS_FREE = 14  # prompt tokens lie below the EOS and mask ids
SAMPLING = {"greedy": {}, "seeded": {"temperature": 0.8, "top_p": 0.95}}


def make_requests() -> list[Request]:
    g = torch.Generator().manual_seed(7)
    return [Request(f"req-{i}", torch.randint(0, EOS_FREE, (k * BL,), generator=g).tolist(), seed=1000 + 17 * i)
            for i, k in enumerate(PROMPT_BLOCKS)]


def build(spec: str, sampling: dict, fdfo: bool):
    return build_algorithm(spec, sampling, fdfo, BL, seed=5)


def serve_and_generate(spec: str, loop_spec: str | None, sampling: str, mode: str):
    """The requests served through SGLang's loop ``mode`` with ``spec``, its runner, and ``unmask.generate``'s
    output for the same prompts and seeds with ``loop_spec`` (default ``spec``), with the output's prompt width."""
    model, reqs = ScriptedModel(BL, seed=3), make_requests()
    algo, runner = build(spec, SAMPLING[sampling], fdfo=mode != "sync"), FakeRunner(model, BL)
    # sync: seeds from the requests' sampling seeds; fdfo, main: derived from the config seed and the request ids
    seeded = mode == "sync"
    if mode == "sync":
        serve_sync(algo, runner, reqs, BLOCKS, seeded)
    else:
        serve_fdfo(algo, runner, reqs, BLOCKS, seeded, JOINS, shuffle_seed=11, main=mode == "main")
    seeds = [r.seed if seeded else derive_seed(5, rid_key(r.rid)) for r in reqs]
    config = GenerationConfig(gen_length=BLOCKS * BL, block_length=BL, planner=loop_spec or spec,
                              sampling=SAMPLING[sampling], early_exit=False)
    out = generate(model, [r.prompt for r in reqs], config, seeds=seeds)
    return reqs, runner, out, out.sequences.shape[1] - BLOCKS * BL


@pytest.mark.parametrize("mode", ["sync", "fdfo", "main"])
@pytest.mark.parametrize("sampling", list(SAMPLING))
@pytest.mark.parametrize(("spec", "loop_spec"), PLANNERS, ids=[p[0] for p in PLANNERS])
def test_adapter_reveals_what_the_loop_reveals(spec: str, loop_spec: str | None, sampling: str, mode: str) -> None:
    reqs, runner, out, width = serve_and_generate(spec, loop_spec, sampling, mode)
    first_call = [int((out.trace.block_of_call == b).nonzero()[0]) for b in range(BLOCKS)]
    for i, r in enumerate(reqs):
        assert r.tokens == out.sequences[i, width:].tolist(), f"{r.rid}: tokens differ"
        for b in range(BLOCKS):
            start = len(r.prompt) + b * BL
            loop_calls = (out.trace.reveal_call[i, b * BL : (b + 1) * BL] - first_call[b]).tolist()
            assert runner.reveal_calls(r.rid, start, MASK) == loop_calls, f"{r.rid} block {b}: reveal order differs"
            snaps = runner.snapshots[(r.rid, start)]
            assert sum(MASK in s for s in snaps) == max(loop_calls) + 1  # one forward per call of the loop
            if mode != "sync":  # then one forward that finds no mask, after which the block is done and leaves
                assert len(snaps) == max(loop_calls) + 2, f"{r.rid} block {b}: {len(snaps)} forwards"
    if mode == "sync":  # the batch runs until its slowest block is done, plus the forward that finds no mask
        for b in range(BLOCKS):
            counts = [len(runner.snapshots[(r.rid, len(r.prompt) + b * BL)]) for r in reqs]
            slowest = max(sum(MASK in s for s in runner.snapshots[(r.rid, len(r.prompt) + b * BL)]) for r in reqs)
            assert counts == [slowest + 1] * len(reqs)

def test_fdfo_batches_mix_blocks_at_different_calls() -> None:
    """The staggered schedule really puts blocks at different calls into one batch (else the test above is weak)."""
    algo, runner = build("dilated(base=2)", {}, fdfo=True), FakeRunner(ScriptedModel(BL, seed=3), BL)
    seen: list[set[int]] = []
    step = algo.step

    def spy(fb, logits, states):
        seen.append({s.call for s in states})
        return step(fb, logits, states)

    algo.step = spy
    serve_fdfo(algo, runner, make_requests(), BLOCKS, seeded=False, joins=JOINS)
    assert any(len(calls) > 1 for calls in seen)
