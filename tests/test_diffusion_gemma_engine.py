"""DiffusionGemma through ``unmask.generate``: the ``entropy_bound`` spec against transformers' own ``generate``
call by call (same noise, as in ``test_diffusion_gemma_fidelity``), every unmask planner as a commit rule on a
uniform-state canvas, the refusals, and ``unmask generate`` on a saved tiny checkpoint."""

from __future__ import annotations

import pytest
import torch
from model_fixtures import diffusion_gemma_dense, write_diffusion_gemma
from test_diffusion_gemma_fidelity import (
    CANVASES,
    PROMPT_LENGTH,
    SEEDS,
    SPEC,
    bias,
    prompts,
    run_transformers,
)

import unmask
from unmask.denoiser import CanvasIO
from unmask.models import load
from unmask.models.diffusion_gemma_engine import DiffusionGemma
from unmask.noise import Noise, uniform_tokens
from unmask.output import Listener
from unmask.planners import parse_planner

RULE = (f"entropy_bound(entropy_bound={SPEC.entropy_bound}, max_calls={SPEC.max_calls}, t_min={SPEC.t_min}, "
        f"t_max={SPEC.t_max}, stability={SPEC.stability}, confidence={SPEC.confidence})")


class Recording(DiffusionGemma):
    """The engine denoiser with the fidelity test's per-call bias (by row and call within the canvas), recording
    each row's canvas entering each call: ``canvases[(row, block, call)]`` (the row is its arena slot: one
    request, slots handed out lowest first)."""

    def __init__(self, ops, case):
        super().__init__(ops)
        self.case, self.canvases, self.at = case, {}, {}

    def forward_canvas(self, arena, io: CanvasIO, canvas):
        logits = super().forward_canvas(arena, io, canvas)
        for i, (slot, start) in enumerate(zip(io.slots, io.starts, strict=True)):
            block, k = self.at.get(slot, (-1, 0))
            block, k = (block + 1, 0) if start else (block, k)
            self.at[slot] = (block, k + 1)
            self.canvases[(slot, block, k)] = canvas[i].clone()
            logits[i] += bias(self.case, k, self.vocab, self.canvas_length)[slot]
        return logits


class Accepts(Listener):
    """Positions each call committed (revealed or edited), per block and call within it, for all rows."""

    def __init__(self):
        self.accepted, self.block, self.k = {}, -1, 0

    def on_call(self, event):
        self.k = self.k + 1 if event.block == self.block else 0
        self.block = event.block
        self.accepted[(event.block, self.k)] = event.reveal | event.edit


@pytest.fixture(scope="module")
def ops():
    return load(diffusion_gemma_dense(), device="cpu", dtype="float32")[0].ops


def pad_after_eos(tokens, eos, pad):
    seen = (tokens == eos).long().cumsum(-1)
    return tokens.masked_fill((seen > 1) | ((seen == 1) & (tokens != eos)), pad)


@pytest.mark.parametrize("case", ["free", "converging"])
def test_entropy_bound_spec_is_transformers_generate_call_by_call(ops, case, monkeypatch):
    v, c = ops.vocab_size, ops.canvas_length
    prompt = prompts(v)
    out, calls, accepts, steps = run_transformers(ops.model, prompt, Noise.from_seeds(SEEDS), case, monkeypatch)
    gemma, seen = Recording(ops, case), Accepts()
    got = unmask.generate(gemma, prompt, dict(gen_length=CANVASES * c, block_length=c, planner=RULE),
                          seeds=SEEDS, listener=seen)
    stopped, block, k, compared = torch.zeros(len(SEEDS), dtype=torch.bool), -1, 0, 0
    for index, (b, canvas_in, _, _) in enumerate(calls):
        if b != block:
            stopped, block, k = torch.zeros(len(SEEDS), dtype=torch.bool), b, 0
        t_stopped = steps[index][3]
        for row in range(len(SEEDS)):
            ran = (row, b, k) in gemma.canvases
            if stopped[row]:  # a row that stopped is in no later call of ours (transformers keeps it, frozen)
                assert not ran, (row, b, k)
                continue
            if not ran:  # nor is a row that ended with an EOS in an earlier canvas (transformers pads it)
                assert (got.sequences[row, PROMPT_LENGTH : PROMPT_LENGTH + b * c] == ops.eos_ids[0]).any(), (row, b)
                continue
            assert torch.equal(gemma.canvases[(row, b, k)], canvas_in[row]), (row, b, k)
            if not t_stopped[row] and k < SPEC.max_calls - 1:  # at its last call our rule commits the argmax
                assert torch.equal(seen.accepted[(b, k)][row], accepts[index][row]), (row, b, k)
            compared += 1
        stopped, k = t_stopped.clone(), k + 1
    assert compared > len(SEEDS) * CANVASES
    assert compared == len(gemma.canvases)  # unmask ran exactly the calls transformers ran for live rows
    g = got.sequences[:, PROMPT_LENGTH:]
    want = torch.full_like(g, ops.pad_id)
    want[:, : out.sequences.shape[1] - PROMPT_LENGTH] = out.sequences[:, PROMPT_LENGTH:]
    assert torch.equal(pad_after_eos(g, ops.eos_ids[0], ops.pad_id), want)
    valid = (out.sequences[:, PROMPT_LENGTH:] != ops.pad_id).sum(-1)
    assert got.nfe_per_row.tolist() == (valid / out.tokens_per_forward).round().long().tolist()


COMMIT_RULES = ["dilated(base=2)", "binary", "topk(steps=4)", "eb(gamma=0.5)", "threshold(tau=0.3)",
                "spaced(eb(gamma=2), start_stride=2)", "interleave(k=2)", "farthest(calls=3)", "entropy_sum",
                "edit(eb(gamma=1), threshold=0.5)", "wino(wide=0.3, narrow=0.05)", "remask(topk(steps=4), eta=0.5, max_calls=4)",
                "stable(eb(gamma=1), window=2)", "entropy_bound(max_calls=6, entropy_bound=1.0, confidence=1.0)"]
ROWS = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [14, 15, 16, 17]]  # different lengths: left padding, merged caches


@pytest.fixture(scope="module")
def gemma(tmp_path_factory):
    """A calmer random model (weights' std 0.1, not the fidelity fixture's 0.3) for batch == alone: a padded
    batch's logits differ from a row's alone by float32 rounding (~5e-6), and with std 0.3 the self-conditioning
    loop amplifies that about fourfold per call (measured: 0.85 by call 7), so a decision flips within a block."""
    path = write_diffusion_gemma(tmp_path_factory.mktemp("gemma") / "calm", moe=False, init_std=0.1, seed=4)
    return load(path, device="cpu", dtype="float32")[0]


@pytest.mark.parametrize("spec", COMMIT_RULES)
def test_every_planner_commits_every_position(gemma, spec):
    # greedy proposals: float32 rounding between a padded batch and a row alone could move a sampled token across
    # an inverse-CDF boundary; the uniform canvas tokens are counter-based and exact
    cfg = dict(gen_length=16, block_length=8, planner=spec, sampling={"temperature": 0.0}, early_exit=False)
    out = unmask.generate(gemma, ROWS, cfg, seeds=[3, 4, 5])
    gen = out.sequences[:, -16:]
    assert not (gen == gemma.spec.mask_id).any() and (gen < gemma.vocab).all()  # every position committed
    for i, row in enumerate(ROWS):
        assert out.sequences[i, -16 - len(row) : -16].tolist() == row  # the prompt unchanged
    planner = parse_planner(spec)
    fixed = planner.calls_per_block(8, 2)
    assert out.nfe == (2 * fixed if fixed is not None else int(out.nfe_per_row.max()))
    assert int(out.nfe_per_row.max()) <= 2 * planner.max_calls_per_block(8)
    again = unmask.generate(gemma, ROWS, cfg, seeds=[3, 4, 5])
    assert torch.equal(again.sequences, out.sequences)  # same seed, same output
    for i, row in enumerate(ROWS):  # each row alone: its batch tokens and calls
        alone = unmask.generate(gemma, [row], cfg, seeds=[3 + i])
        assert alone.sequences[0, -16:].tolist() == gen[i].tolist(), (spec, i)
        assert alone.nfe_per_row.tolist() == [int(out.nfe_per_row[i])]
    other = unmask.generate(gemma, ROWS, cfg, seeds=[6, 7, 8])
    assert not torch.equal(other.sequences, out.sequences)  # the seed matters


def test_uncommitted_positions_are_redrawn_each_call(gemma):
    """Every uncommitted position enters each call with the uniform token of stream CANVAS at (seed, call, position);
    a committed one keeps its token (topk commits one position per call, for good)."""
    rec = Recording(gemma.ops, "free")
    out = unmask.generate(rec, [[5, 6, 7]], dict(gen_length=8, block_length=8, planner="topk(steps=8)"), seeds=[1])
    positions = torch.arange(3, 11)[None]  # the canvas after a 3-token prompt
    calls = out.trace.reveal_call[0]  # [8]: the call that committed each position
    for k in range(8):
        fresh = uniform_tokens(Noise.from_seeds([1]).at(k, positions), gemma.vocab)[0]
        want = torch.where(calls < k, out.sequences[0, 3:], fresh)
        assert torch.equal(rec.canvases[(0, 0, k)], want), k
    assert sorted(calls.tolist()) == list(range(8))


@pytest.mark.parametrize("bad, match", [(dict(block_length=4), "canvas length 8"),
                                        (dict(cfg_scale=1.0), "uniform-state: use cfg_scale=0"),
                                        (dict(cache="prefix"), "cache='auto' or 'committed'"),
                                        (dict(compile=True), "compile=True needs")])
def test_refusals(gemma, bad, match):
    cfg = dict(gen_length=8, block_length=8, planner="dilated") | bad
    with pytest.raises(ValueError, match=match):
        unmask.generate(gemma, [[5, 6]], cfg)


def test_cli_generates_from_a_saved_checkpoint(capsys, monkeypatch):
    import unmask.cli as cli

    monkeypatch.setattr(cli, "COMMANDS", ("generate",))
    path = str(diffusion_gemma_dense())
    for planner in ("entropy_bound(max_calls=6)", "dilated(base=2)"):
        code = cli.main(["generate", "--model", path, "--gen-length", "16", "--block-length", "8", "--device", "cpu",
                         "--planner", planner, "hello world", "the cat sat"])
        out, err = capsys.readouterr()
        assert code == 0, err
        assert "--- [0] hello world" in out and "--- [1] the cat sat" in out and "NFE" in out
    code = cli.main(["generate", "--model", path, "--gen-length", "16", "--block-length", "4", "--device", "cpu", "hello"])
    assert code != 0 and "canvas length 8" in capsys.readouterr().err
    # without --block-length the canvas is the block
    code = cli.main(["generate", "--model", path, "--gen-length", "16", "--device", "cpu", "--planner",
                     "entropy_bound(max_calls=6)", "hello"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "blocks of 8" in out + err


def test_requests_at_different_canvases_share_calls_and_reuse_slots(gemma):
    """Requests that join later (another canvas, other caches' lengths, another planner) share the engine's calls,
    and a request that takes a freed slot gets what it gets alone."""
    from unmask.config import GenerationConfig
    from unmask.engine import Engine, EngineConfig, Request

    def config(planner):
        return GenerationConfig(gen_length=24, block_length=8, planner=planner, sampling={"temperature": 0.0},
                                early_exit=False)

    jobs = [([[5, 6, 7, 8, 9], [10, 11]], "dilated(base=2)", [1, 2]),
            ([[12, 13, 14]], "entropy_bound(max_calls=5, entropy_bound=1.0, confidence=1.0)", [3]),
            ([[15, 16], [17, 18, 19, 20, 21, 22]], "topk(steps=9)", [4, 5])]
    engine = Engine(gemma, EngineConfig(max_rows=8, kv_slots=4))
    requests = [Request(rows, config(p), seeds) for rows, p, seeds in jobs]
    outputs, shared = {}, 0
    engine.add(requests[0])
    for step in range(200):
        if step == 4:
            engine.add(requests[1])  # joins while the first request is in its second canvas
        if step == 5:
            engine.add(requests[2])  # waits for slots (4 held of 4), then takes the freed ones
        if not engine.has_work:
            break
        for req, out in engine.step():
            outputs[req.id] = out
        shared = max(shared, engine.live_rows)
    assert shared >= 3  # rows of two requests were in one call
    for req, (rows, planner, seeds) in zip(requests, jobs, strict=True):
        alone = unmask.generate(gemma, rows, config(planner), seeds=seeds)
        assert torch.equal(outputs[req.id].sequences, alone.sequences), planner
        assert torch.equal(outputs[req.id].nfe_per_row, alone.nfe_per_row)


def test_moe_checkpoint_runs_every_planner_kind(tmp_path):
    from model_fixtures import diffusion_gemma_moe

    moe = load(diffusion_gemma_moe(), device="cpu", dtype="float32")[0]
    for spec in ("entropy_bound(max_calls=6)", "dilated(base=2)", "remask(topk(steps=4), eta=0.5, max_calls=4)"):
        out = unmask.generate(moe, ROWS, dict(gen_length=16, block_length=8, planner=spec, early_exit=False))
        assert not (out.sequences == moe.spec.mask_id).any() and out.sequences.shape == (3, 7 + 16)
        assert int(out.nfe_per_row.max()) <= 2 * parse_planner(spec).max_calls_per_block(8)
