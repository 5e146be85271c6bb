"""Revising planners served through SGLang's dLLM loop: the tokens ``unmask.generate`` gives, one forward more
per block (the one that finds the block done), and edits or re-masks written into the block's ids."""

from __future__ import annotations

import pytest
from scripted import MASK, FakeRunner, ScriptedModel, serve_fdfo
from test_sglang_equivalence import BL, BLOCKS, JOINS, SAMPLING, build, make_requests, serve_and_generate

from unmask import GenerationConfig, generate

REVISING = [
    "edit(threshold(tau=0.7), threshold=0.5, max_edit_calls=3)",
    "edit(dilated(base=2), threshold=0.3, max_edit_calls=2)",
    "wino(wide=0.5, narrow=0.7, max_calls=6)",
    "remask(dilated(base=2), eta=0.25, max_calls=6)",
    "stable(threshold(tau=0.5), window=2, tau=0.3)",
]


@pytest.mark.parametrize("mode", ["sync", "fdfo", "main"])
@pytest.mark.parametrize("sampling", list(SAMPLING))
@pytest.mark.parametrize("spec", REVISING)
def test_revising_planners_give_the_loops_tokens(spec: str, sampling: str, mode: str) -> None:
    reqs, runner, out, width = serve_and_generate(spec, None, sampling, mode)
    for i, r in enumerate(reqs):
        assert r.tokens == out.sequences[i, width:].tolist(), f"{r.rid}: tokens differ"
        forwards = sum(len(runner.snapshots[(r.rid, len(r.prompt) + b * BL)]) for b in range(BLOCKS))
        if mode != "sync":  # each call of the loop, then one forward that finds the block done
            assert forwards == int(out.nfe_per_row[i]) + BLOCKS, f"{r.rid}: {forwards} forwards"


def test_edits_are_written_into_the_ids_and_exercised() -> None:
    """The scripted model really makes the edit planner edit (else the test above is weak for it)."""
    model, reqs = ScriptedModel(BL, seed=3), make_requests()
    spec = REVISING[1]
    out = generate(model, [r.prompt for r in reqs], GenerationConfig(gen_length=BLOCKS * BL, block_length=BL,
                                                                    planner=spec, early_exit=False))
    assert out.trace.revisions.shape[0] > 0
    algo, runner = build(spec, {}, fdfo=True), FakeRunner(model, BL)
    serve_fdfo(algo, runner, reqs, BLOCKS, False, JOINS)
    edited = 0
    for r in reqs:
        for b in range(BLOCKS):
            snaps = runner.snapshots[(r.rid, len(r.prompt) + b * BL)]
            # a forward saw a revealed token other than the one the forward before it saw: an edit, not a reveal
            edited += sum(x != y and MASK not in (x, y) for s, t in zip(snaps, snaps[1:]) for x, y in zip(s, t))
    assert edited > 0
