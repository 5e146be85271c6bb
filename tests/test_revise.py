"""Revising planners: edits, re-masks and history on hand-made scores, and the engine's invariants with them."""

import dataclasses

import pytest
import torch
from test_loop import HostReads
from toy import ToyDenoiser

from unmask import GenerationConfig, generate
from unmask.decide import broken, current_prob, decide
from unmask.noise import Noise
from unmask.output import Listener
from unmask.planners import Edit, PlanStep, Remask, Stable, Threshold, TopK, Wino, parse_planner
from unmask.sampling import Proposal, SamplingParams

M = 99  # the mask id of the hand-made blocks


def step(conf, proposal, tokens, call=0, current=None, state=None, lead=0):
    """A PlanStep over one row: ``proposal``/``conf`` per position, ``tokens`` the block (M = masked)."""
    conf = torch.tensor([conf], dtype=torch.float32)
    tokens = torch.tensor([tokens])
    prop = Proposal(tokens=torch.tensor([proposal]), confidence=conf, logq=torch.zeros_like(conf))
    cur = None if current is None else torch.tensor([current], dtype=torch.float32)
    return PlanStep(tokens == M, prop, call, tokens.shape[1], 1, None, lead, tokens, cur, state)


def where(mask):
    return torch.nonzero(mask[0]).flatten().tolist()


# -- edit -------------------------------------------------------------------------------------------------------
def test_edit_replaces_a_revealed_token_when_the_proposal_differs_confidently():
    p = Edit(Threshold(tau=0.9), threshold=0.95)
    #          revealed, differs, 0.97 | revealed, differs, 0.94 | revealed, same, 0.99 | masked, 0.99
    st = step([0.97, 0.94, 0.99, 0.99], [5, 6, 7, 8], [1, 2, 7, M])
    sel = p.select(st)
    assert where(sel.edit) == [0]  # 0.94 < 0.95 stays; an equal proposal is no edit; masks are revealed, not edited
    assert where(sel.reveal) == [3]
    assert sel.pending.tolist() == [True]  # something changed and edit calls are left


def test_edit_never_touches_the_prompt_offsets_before_lead():
    st = step([0.99, 0.99, 0.5], [5, 6, 7], [1, 2, M], lead=1)
    assert where(Edit(Threshold(tau=0.9), threshold=0.5).select(st).edit) == [1]


def test_edit_threshold_is_inclusive_and_exact_near_one():
    doubt = torch.tensor([[1e-7, 3e-7]])  # p = 1 - 1e-7 and 1 - 3e-7: equal in float32 confidence
    prop = Proposal(tokens=torch.tensor([[5, 6]]), confidence=1 - doubt, logq=torch.zeros(1, 2), doubt=doubt)
    st = PlanStep(torch.zeros(1, 2, dtype=torch.bool), prop, 3, 2, 1, None, 0, torch.tensor([[1, 2]]), None, None)
    assert where(Edit(Threshold(), threshold=1 - 2e-7).select(st).edit) == [0]


def test_edit_calls_after_the_last_mask_are_counted_in_its_state_and_capped():
    p = Edit(Threshold(tau=0.5), threshold=0.5, max_edit_calls=2)
    full = [1, 2, 3]
    sel = p.select(step([0.9, 0.9, 0.9], [5, 2, 3], full, call=4))  # first call with no mask: one edit
    (after,) = sel.state
    assert after.tolist() == [1] and where(sel.edit) == [0] and sel.pending.tolist() == [True]
    sel = p.select(step([0.9, 0.9, 0.9], [5, 6, 3], [5, 2, 3], call=5, state=sel.state))  # second: the last allowed
    assert sel.state[0].tolist() == [2] and where(sel.edit) == [1] and sel.pending.tolist() == [False]
    sel = p.select(step([0.9, 0.9, 0.9], [5, 6, 7], [5, 6, 3], call=6, state=sel.state))  # over the cap: nothing
    assert where(sel.edit) == [] and sel.pending.tolist() == [False]
    quiet = p.select(step([0.9, 0.9, 0.9], [1, 2, 3], full, call=4))  # no change: the block is done
    assert quiet.pending.tolist() == [False]
    assert p.max_calls_per_block(8) == 8 + 2


# -- re-masking -------------------------------------------------------------------------------------------------
def test_wino_remasks_revealed_tokens_now_below_narrow_and_reveals_at_wide():
    p = Wino(wide=0.6, narrow=0.5)
    st = step([0.1, 0.1, 0.1, 0.7, 0.5], [0, 0, 0, 4, 5], [1, 2, 3, M, M], call=1, current=[0.75, 0.49, 0.5, 0, 0])
    sel = p.select(st)
    assert where(sel.remask) == [1]  # 0.49 < 0.5; 0.5 is not below
    assert where(sel.reveal) == [3]


def test_wino_last_allowed_call_reveals_everything_and_remasks_nothing():
    p = Wino(wide=0.6, narrow=0.9, max_calls=3)
    st = step([0.1, 0.1, 0.1], [0, 0, 0], [1, M, M], call=2, current=[0.01, 0, 0])
    sel = p.select(st)
    assert where(sel.reveal) == [1, 2] and where(sel.remask) == []
    assert p.max_calls_per_block(16) == 3 and Wino().max_calls_per_block(16) == 16


def test_remask_returns_the_floor_of_eta_times_the_revealed_lowest_current_first():
    p = Remask(TopK(counts=(1, 1, 1, 1, 1)), eta=0.5, max_calls=4, score="current")
    # 5 revealed (positions 0-4), floor(0.5 * 5) = 2: the two lowest current probabilities (ties leftmost)
    st = step([0.9] * 7, [0] * 7, [1, 2, 3, 4, 5, M, M], call=1, current=[0.8, 0.3, 0.9, 0.3, 0.3, 0, 0])
    sel = p.select(st)
    assert where(sel.remask) == [1, 3]
    assert len(where(sel.reveal)) == 1
    last = p.select(step([0.9] * 7, [0] * 7, [1, 2, 3, 4, 5, M, M], call=3, current=[0.1] * 5 + [0, 0]))
    assert where(last.reveal) == [5, 6] and where(last.remask) == []


def test_remask_by_reveal_confidence_keeps_it_as_state():
    p = Remask(TopK(counts=(2, 2, 2)), eta=0.5, max_calls=5)
    s0 = p.select(step([0.9, 0.6, 0.8, 0.7, 0.2, 0.1], [0] * 6, [M] * 6, call=0))
    assert where(s0.reveal) == [0, 2] and where(s0.remask) == []  # nothing revealed before call 0
    (kept,) = s0.state
    assert kept[0, [0, 2]].tolist() == pytest.approx([0.9, 0.8])
    tokens = [1, M, 3, M, M, M]  # call 1 sees new confidences; the one kept for 2 (0.8) is the lowest
    s1 = p.select(step([0.1, 0.95, 0.99, 0.7, 0.2, 0.1], [0] * 6, tokens, call=1, state=s0.state))
    assert where(s1.reveal) == [1, 3] and where(s1.remask) == [2]  # floor(0.5 * 2) = 1
    assert s1.state[0][0, [0, 1, 2, 3]].tolist() == pytest.approx([0.9, 0.95, 0.8, 0.7])


# -- stable -----------------------------------------------------------------------------------------------------
def test_stable_reveals_only_proposals_held_confidently_over_the_window():
    p = Stable(Threshold(tau=0.5), window=2, tau=0.6)
    s0 = p.select(step([0.9, 0.8, 0.7, 0.55], [4, 5, 6, 7], [M, M, M, M], call=0))
    assert where(s0.reveal) == [0]  # nothing has held twice yet: the inner planner's best pick
    last, run = s0.state
    assert last.tolist() == [[4, 5, 6, 7]] and run.tolist() == [[1, 1, 1, 0]]  # 0.55 < tau
    # call 1: 5 held (run 2), 6 changed (run 1), 7 held but was below tau before (run 1)
    s1 = p.select(step([0.9, 0.8, 0.7, 0.65], [4, 5, 9, 7], [4, M, M, M], call=1, state=s0.state))
    assert s1.state[1].tolist() == [[2, 2, 1, 1]]
    assert where(s1.reveal) == [1]


def test_stable_window_one_and_tau_zero_is_its_inner_planner():
    inner = Threshold(tau=0.75)
    st = step([0.9, 0.8, 0.7, 0.6], [4, 5, 6, 7], [M, M, M, M])
    assert torch.equal(Stable(inner, window=1).select(st).reveal, inner.select(st).reveal)


# -- settings ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, needle", [
    ("edit(threshold, threshold=1.5)", "threshold"), ("edit(threshold, max_edit_calls=-1)", "max_edit_calls"),
    ("edit(wino)", "must only reveal"), ("spaced(wino)", "must only reveal"), ("wino(wide=0)", "wide"),
    ("wino(narrow=2)", "narrow"), ("wino(max_calls=0)", "max_calls"), ("remask(dilated, eta=1.0)", "eta"),
    ("remask(dilated, max_calls=0)", "max_calls"), ("remask(dilated, score='x')", "score"), ("stable(eb, window=0)", "window"), ("stable(eb, tau=-1)", "tau"),
    ("edit", "inner"),
])
def test_bad_settings_are_refused_with_the_setting_named(spec, needle):
    with pytest.raises(ValueError, match=needle):
        parse_planner(spec)


def test_spec_strings_build_the_planners():
    p = parse_planner("edit(threshold(tau=0.9), threshold=0.95, max_edit_calls=4)")
    assert p == Edit(Threshold(tau=0.9), threshold=0.95, max_edit_calls=4) and p.revises
    assert parse_planner("stable(threshold(tau=0.8), window=3)").revises is False


# -- decide and the engine ----------------------------------------------------------------------------------------
def test_decide_gives_the_probability_of_the_current_tokens():
    logits = torch.log(torch.tensor([[[0.2, 0.5, 0.3, 0.0], [0.1, 0.1, 0.8, 0.0]]]))
    tokens = torch.tensor([[1, 3]])  # 3 is the mask
    cur = current_prob(logits.clone().index_fill_(-1, torch.tensor([3]), float("-inf")), tokens)
    assert cur.tolist()[0][0] == pytest.approx(0.5, rel=1e-6) and cur.tolist()[0][1] == 0.0
    d = decide(logits.clone(), tokens == 3, Wino(wide=0.7, narrow=0.6), SamplingParams(), Noise.from_seeds([0]).at(
        0, torch.arange(2).unsqueeze(0)), 0, 1, 3, tokens=tokens)
    assert d.remask.tolist() == [[True, False]] and d.reveal.tolist() == [[False, True]]
    with pytest.raises(ValueError, match="tokens"):
        decide(logits.clone(), tokens == 3, Wino(), SamplingParams(), None, 1, 1, 3)
    assert broken(tokens == 3, d.reveal, None, torch.tensor([[False, True]]))  # a re-mask of a masked position


REVISING = [
    "edit(threshold(tau=0.9), threshold=0.6, max_edit_calls=3)",
    "edit(dilated, threshold=0.5, max_edit_calls=2)",
    "wino(wide=0.4, narrow=0.7)",
    "wino(wide=0.2, narrow=0.9, max_calls=4)",
    "remask(threshold(tau=0.7), eta=0.5, max_calls=5)",
    "remask(stable(dilated, window=2), eta=0.2, max_calls=6)",
    "stable(threshold(tau=0.6), window=2, tau=0.3)",
]


class Canvases(Listener):
    def __init__(self):
        self.events = []

    def on_call(self, event):  # the event's tokens are a view of the canvas: keep a copy
        self.events.append(dataclasses.replace(event, tokens=event.tokens.clone()))


def check_revising_run(den, prompts, cfg, out, events):
    spec, planner = den.spec, cfg.planner
    assert not (out.sequences == spec.mask_id).any(), "a mask was left"
    width = max(map(len, prompts))
    for i, p in enumerate(prompts):
        assert out.sequences[i, width - len(p) : width].tolist() == list(p), "prompt changed"
    per_block = torch.bincount(out.trace.block_of_call, minlength=cfg.num_blocks)
    assert int(per_block.max()) <= planner.max_calls_per_block(cfg.block_length)
    if not planner.revises:
        assert out.trace.revisions is None
        return
    # every change between consecutive canvases is a reveal, an edit or a re-mask, and the trace lists the latter
    rev = {(c, r, g): (o, n) for c, r, g, o, n in out.trace.revisions.tolist()}
    prev = {}
    for e in events:
        block = e.tokens
        old = prev.get(e.block, torch.full_like(block, spec.mask_id))
        changed = block != old
        assert torch.equal(changed, e.reveal | e.edit | e.remask)
        for r, o in torch.nonzero(e.edit | e.remask).tolist():
            assert rev.pop((e.call, r, e.offset + o)) == (int(old[r, o]), int(block[r, o]))
        prev[e.block] = block.clone()
    assert not rev, "the trace lists revisions no call made"


@pytest.mark.parametrize("planner", REVISING)
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_revising_planners_keep_the_invariants_and_batch_equals_alone(planner, temperature):
    den = ToyDenoiser(seed=3)
    prompts, seeds = [[3, 4, 5, 6, 7], [8], [], [9, 10, 11]], [11, 12, 13, 14]
    cfg = GenerationConfig(gen_length=24, block_length=8, planner=planner, sampling=dict(temperature=temperature),
                           early_exit=False)
    events = Canvases()
    batch = generate(den, prompts, cfg, seeds=seeds, listener=events)
    check_revising_run(den, prompts, cfg, batch, [e for e in events.events])
    for i, p in enumerate(prompts):
        alone = generate(den, [p], cfg, seeds=[seeds[i]])
        assert torch.equal(batch.generated[i], alone.generated[0]), f"row {i} differs from its single run"
        assert batch.nfe_per_row[i] == alone.nfe
    again = generate(den, prompts, cfg, seeds=seeds)
    assert torch.equal(again.generated, batch.generated)


@pytest.mark.parametrize("revising, plain", [
    ("edit(threshold(tau=0.7), threshold=1.0, max_edit_calls=0)", "threshold(tau=0.7)"),
    ("wino(wide=0.5, narrow=0.0)", "threshold(tau=0.5)"),
    ("remask(dilated, eta=0.0)", "dilated"),
    ("stable(eb(gamma=1.0), window=1)", "eb(gamma=1.0)"),
])
def test_revising_planners_that_cannot_revise_equal_their_inner_planner(revising, plain):
    den = ToyDenoiser(seed=4)
    prompts = [[3, 4, 5], [8], []]
    base = dict(gen_length=32, block_length=16, early_exit=False)
    a = generate(den, prompts, GenerationConfig(planner=revising, **base))
    b = generate(den, prompts, GenerationConfig(planner=plain, **base))
    assert torch.equal(a.generated, b.generated) and a.nfe == b.nfe
    assert torch.equal(a.trace.reveal_call, b.trace.reveal_call)
    assert a.trace.revisions is None or a.trace.revisions.shape[0] == 0


def test_edit_runs_its_edit_calls_after_the_last_mask_within_the_bound():
    den = ToyDenoiser(seed=1)
    cfg = GenerationConfig(gen_length=16, block_length=16, planner="edit(topk(counts=(16,)), threshold=0.3, "
                           "max_edit_calls=3)", early_exit=False)
    out = generate(den, [[3, 4, 5]], cfg)
    revised_calls = sorted({c for c, *_ in out.trace.revisions.tolist()})
    assert out.nfe <= 1 + 3 and out.trace.revealed_per_call[0].item() == 16
    assert revised_calls and min(revised_calls) >= 1  # edits come after the fill, in the edit calls
    if out.nfe < 4:
        assert revised_calls[-1] < out.nfe - 1  # it stopped early: its last call changed nothing


@pytest.mark.parametrize("planner", ["edit(threshold(tau=0.5), threshold=0.9)", "wino(wide=0.5, narrow=0.8)",
                                     "remask(threshold(tau=0.5), eta=0.1, max_calls=8)",
                                     "stable(threshold(tau=0.5), window=2)"])
def test_revising_costs_no_extra_host_reads(monkeypatch, planner):
    def reads(spec):
        den = ToyDenoiser(seed=6)
        cfg = GenerationConfig(gen_length=64, block_length=64, planner=spec, early_exit=False)
        with monkeypatch.context() as m:
            count = HostReads(m)
            out = generate(den, [[1, 2, 3], [4]], cfg)
        return count.count, out.nfe
    revising, calls = reads(planner)
    fixed, _ = reads("dilated")
    assert revising - fixed <= calls + 1  # one read per call, as every adaptive planner


# -- views ------------------------------------------------------------------------------------------------------
def edited_run():
    den = ToyDenoiser(seed=3)
    cfg = GenerationConfig(gen_length=16, block_length=8, planner="edit(dilated, threshold=0.5, max_edit_calls=2)",
                           early_exit=False)
    out = generate(den, [[3, 4, 5]], cfg)
    revised = out.trace.revised(0)
    assert revised, "the run must hold an edit for the views to show"
    return out, revised


def test_terminal_view_marks_edited_tokens():
    from unmask.viz import reveal_text
    out, revised = edited_run()
    pieces = [str(t) for t in out.generated[0].tolist()]
    text = reveal_text(pieces, out.trace.reveal_call[0].tolist(), edited=set(revised))
    starts = {len("".join(pieces[:i])): i for i in range(len(pieces))}
    marked = {starts[s.start] for s in text.spans if "underline" in str(s.style)}
    assert marked == set(revised)


def test_html_view_marks_edited_cells_from_their_first_revision():
    from unmask.viz.html import replay_row, reveal_html
    out, revised = edited_run()
    pieces = [str(t) for t in out.generated[0].tolist()]
    calls = out.trace.reveal_call[0].tolist()
    row = replay_row("edit", pieces, calls, revised)
    first = min(calls)
    assert row["edits"] == {p: sorted(c - first for c, _, _ in r) for p, r in revised.items()}
    page = reveal_html([("edit", pieces, calls, revised)])
    assert ".tok.edited" in page and "revised at call" in page
    plain = reveal_html([("edit", pieces, calls)])
    assert "revised at call" not in plain


def test_png_crosses_the_revised_cells(tmp_path):
    import matplotlib.image as mpimg

    from unmask.viz.png import plot_reveal_order, revision_cells
    assert revision_cells([[3, 4, 5], [7, 8, 7]], [(6, 0, 1, 2, 3), (9, 1, 2, 4, 5)]) == [(2, 2), (3, 1)]
    with pytest.raises(ValueError, match="revisions"):
        revision_cells([3, 4], [(5, 0, 2, 1, 1)])
    out, _ = edited_run()
    plain = plot_reveal_order(tmp_path / "a.png", out.trace.reveal_call[0])
    crossed = plot_reveal_order(tmp_path / "b.png", out.trace.reveal_call[0], revisions=out.trace.revisions)
    dark = lambda p: int((mpimg.imread(p)[..., :3] < 0.15).all(-1).sum())  # noqa: E731
    assert dark(crossed) > dark(plain)


@pytest.mark.parametrize("planner", ["edit(threshold(tau=0.7), threshold=0.3, max_edit_calls=2)",
                                     "wino(wide=0.99, narrow=0.9999, max_calls=5)", "remask(dilated, eta=0.3, max_calls=4)"])
@pytest.mark.parametrize("mode", ["prefix", "dual"])
def test_revising_planners_run_cached_and_batch_equals_alone(planner, mode):
    import model_fixtures as mf

    from unmask.models import load
    den, _ = load(mf.llada_small(), dtype=torch.float64)
    prompts = [[1, 2, 3, 4, 5, 6], [7, 8], []]
    cfg = GenerationConfig(gen_length=16, block_length=8, planner=planner, cache=mode, early_exit=False)
    batch = generate(den, prompts, cfg)
    assert not (batch.generated == den.spec.mask_id).any()
    assert batch.full_forwards == cfg.num_blocks and batch.full_forwards + batch.partial_forwards == batch.nfe
    per_block = torch.bincount(batch.trace.block_of_call, minlength=cfg.num_blocks)
    assert int(per_block.max()) <= cfg.planner.max_calls_per_block(8)
    for i, p in enumerate(prompts):
        alone = generate(den, [p], cfg)
        assert torch.equal(batch.generated[i], alone.generated[0]), f"row {i} differs from its single run"
