"""unmask tune with revising planners: they are candidates and scored, and their calls per block count the calls
that only edit."""

import pytest
import torch
from toy import ToyDenoiser

from unmask import GenerationConfig, generate
from unmask.oracles import BIASED, named_oracle
from unmask.tune import TuneConfig, default_candidates, tune, user_candidates
from unmask.tune.measure import block_calls, decode

pytestmark = pytest.mark.usefixtures("one_thread")


def test_default_candidates_include_the_revising_planners():
    for budget in (2, 3, 5):
        cands = default_candidates(budget, 32, 64)
        fam = {c.family for c in cands}
        assert {"remask", "wino", "edit", "stable"} <= fam
        for c in cands:
            if c.family in ("remask", "wino", "edit", "stable"):
                assert c.fixed_calls is None  # adaptive: kept or dropped by their measured calls
                assert c.planner.max_calls_per_block(32) >= 1
                GenerationConfig(gen_length=64, block_length=32, planner=c.spec)
        assert any(f"max_calls={budget}" in c.spec for c in cands if c.family == "remask")


def test_revising_candidates_are_scored_on_an_oracle():
    oracle = named_oracle("markov2")
    specs = ["interleave(k=4)", "remask(interleave(k=4), eta=0.1, max_calls=4)", "wino(wide=0.7, narrow=0.9, max_calls=4)",
             "edit(interleave(k=3), threshold=0.95, max_edit_calls=1)", "stable(threshold(tau=0.7), window=2)"]
    cfg = TuneConfig(budget=4, temperature=1.0, batch_size=64, search=0)
    res = tune(oracle, [[]] * 32, [[]] * 16, user_candidates(specs, 32), cfg)
    by = {s.candidate.spec: s for s in res.scores}
    assert set(by) == set(specs)
    for spec in specs[1:]:
        s = by[spec]
        assert s.calls > 0 and s.calls_max >= s.calls and s.js is not None
    assert by[specs[1]].calls == 4 and by[specs[1]].eligible and by[specs[1]].kl_status == BIASED
    assert by[specs[3]].calls == 4 and by[specs[3]].calls_max == 4  # 3 reveal calls and the post-fill edit call
    assert by[specs[3]].kl_status == "exact"  # an exact oracle never edits: its inner planner's status
    assert by[specs[2]].calls <= 4 and by[specs[2]].calls_max <= 4


def test_block_calls_count_the_calls_after_the_last_reveal():
    den = ToyDenoiser()
    cfg = GenerationConfig(gen_length=8, block_length=8, planner="edit(dilated, threshold=0.5, max_edit_calls=2)", seed=0)
    out = generate(den, [[1, 2, 3], [4], [5, 6], [7, 8, 9, 10]], cfg)
    last_reveal = out.trace.reveal_call.max(-1).values + 1  # one block from call 0: dilated on 8 takes 3 calls
    assert last_reveal.tolist() == [3] * 4
    traced = block_calls(out.trace, 8)[:, 0]  # reveals and the trace's edits
    rev = out.trace.revisions
    assert rev is not None and rev.numel()  # this toy model edits
    last_edit = torch.zeros(4, dtype=torch.long).scatter_reduce_(0, rev[:, 1], rev[:, 0] + 1, "amax")
    assert traced.tolist() == torch.maximum(last_reveal, last_edit).tolist() and bool((traced > 3).any())
    per = block_calls(out.trace, 8, out.nfe_per_row)[:, 0]
    assert per.tolist() == out.nfe_per_row.tolist()  # one block: exact, the last call that changed nothing too
    assert bool((per > last_reveal).all())


def test_block_calls_with_several_blocks_sum_to_the_row_calls():
    den = ToyDenoiser(eos_bias=4.0)
    cfg = GenerationConfig(gen_length=16, block_length=4, planner="edit(threshold(tau=0.6), threshold=0.5, max_edit_calls=2)",
                           seed=0)
    out = generate(den, [[1, 2, 3], [4], [5, 6], [7, 8, 9, 10]], cfg)
    base = block_calls(out.trace, 4)
    per = block_calls(out.trace, 4, out.nfe_per_row)
    assert per.sum(-1).tolist() == out.nfe_per_row.tolist() and bool((per >= base).all())
    assert bool((base.sum(-1) < out.nfe_per_row).any())  # the trace alone misses calls that changed nothing


def test_decode_reports_the_edit_calls_in_its_max():
    oracle = named_oracle("markov1")
    cfg = TuneConfig(budget=4, temperature=1.0, batch_size=16, search=0)
    d = decode(oracle, [[]] * 16, list(range(16)), user_candidates(["edit(interleave(k=3), threshold=0.9)"], 32)[0].planner,
               cfg)
    assert d.calls_per_block.tolist() == [4.0] * 16 and d.calls_max.tolist() == [4] * 16  # 3 reveal calls + 1 edit call
