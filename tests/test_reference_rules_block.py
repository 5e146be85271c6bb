"""Block-diffusion references, call by call, on blocks laid from position 0 (a prompt may end mid-block).

SDAR, Fast-dLLM v2 and SGLang (LLaDA2) count blocks from position 0, so the
first block to generate holds the prompt's last ``m`` tokens at its first
offsets (``lead``). Each ``ref_*`` below restates one reference's per-call rule
on a block (a restatement of the algorithm, scored on float64 probabilities);
``drive`` runs ``unmask.decide.decide(..., lead=m)`` on the same scripted
logits (a function of the call index, ``test_reference_rules.script_logits``).
Both sides run greedy; the tests compare, at every call, the offsets revealed
and their tokens, and the number of calls.

- SDAR ``block_diffusion_generate``: counts ``n_t`` from the *whole* block
  length and ``denoising_steps`` (``base + 1`` for the first ``B % S``);
  ``low_confidence_static`` the ``n_t`` most confident, ``low_confidence_dynamic``
  every masked position with confidence > tau when they are at least ``n_t``,
  else the ``n_t`` most confident; ``sequential`` ``n_t`` offsets from the first
  masked one. Its top-``n_t`` ranks filled offsets at -inf, so when ``n_t``
  exceeds the masks left it also re-draws ``n_t - masked`` filled offsets (the
  prompt's tail included); unmask never overwrites a filled offset (tested below).
- Fast-dLLM v2 ``generate``: blocks of 32 cut into sub-blocks of 8, done left
  to right; in a sub-block every call reveals the masked offsets with
  confidence > threshold and the most confident one; sub-blocks with no mask
  cost no call.
- SGLang ``LowConfidence``: every masked offset with confidence > threshold,
  else the most confident one (``torch.argmax``: the leftmost of equals).
- LLaDA2's own ``generate`` (``modeling_llada2_moe.py``): SDAR's dynamic rule
  with counts for the whole block, but its top-k takes at most the masks left.
"""

from __future__ import annotations

import math

import pytest
import torch
from test_reference_rules import MASK, NEAR, V, best_first, confidence, script_logits

from unmask.decide import decide
from unmask.noise import Noise
from unmask.planners import parse_planner
from unmask.sampling import SamplingParams

REGIMES = ["near-tie", "bf16", "moderate"]


def sdar_counts(block: int, steps: int) -> list[int]:
    return [block // steps + (i < block % steps) for i in range(steps)]


def ref_sdar(strategy: str, counts: list[int], tau: float = 0.85):
    """One SDAR call: the offsets it writes (filled ones included, see the module docstring)."""

    def rule(z, masked, call):
        n = counts[call]
        if strategy == "sequential":
            first = int(torch.nonzero(masked)[0, 0])
            return list(range(first, min(first + n, masked.numel())))
        c = torch.where(masked, confidence(z), -math.inf)
        if strategy in ("dynamic", "llada2") and int((c > tau).sum()) >= n:
            return torch.nonzero(c > tau)[:, 0].tolist()
        if strategy == "llada2":  # LLaDA2's generate: top-min(n, masks left), never a filled offset
            n = min(n, int(masked.sum()))
        return torch.argsort(-c, stable=True)[:n].tolist()  # -inf (filled) offsets last, leftmost first

    return rule


def ref_low_confidence(tau: float):
    """One SGLang LowConfidence call (also one Fast-dLLM v2 call inside a sub-block)."""

    def rule(z, masked, call):
        c = torch.where(masked, confidence(z), -math.inf)
        above = torch.nonzero(c > tau)[:, 0].tolist()
        return above if above else [int(c.argmax())]

    return rule


def ref_block(rule, block: int, lead: int, regime: str, seed: int, max_calls: int):
    """The reference loop over one block whose first ``lead`` offsets hold the prompt's tail: per call, the
    offsets written and their tokens, and the block's tokens at the end."""
    x = torch.full((block,), MASK)
    x[:lead] = torch.arange(lead) % 5  # the prompt's tail
    calls = []
    for call in range(max_calls):
        masked = x == MASK
        if not masked.any():
            break
        z = script_logits(seed, call, block, regime).double()
        written = rule(z, masked, call)
        x[written] = z.argmax(-1)[written]
        calls.append((sorted(written), z.argmax(-1)[sorted(written)].tolist()))
    return calls, x


def drive(spec: str, block: int, lead: int, regime: str, seed: int, sub: int | None = None, first_call: int = 0):
    """``decide`` call after call on one block (or on the sub-block ``sub`` of a block), lead ``lead``: per call,
    the offsets revealed and their tokens (offsets within the whole block)."""
    planner, lo = parse_planner(spec), 0
    if sub is not None:
        lo, block_len = sub, 8
    else:
        block_len = block
    masked = (torch.arange(block_len) >= lead).unsqueeze(0)
    noise, positions, out, call = Noise.from_seeds([0]), torch.arange(block_len).unsqueeze(0), [], 0
    while masked.any():
        z = script_logits(seed, first_call + call, block, regime)[lo : lo + block_len].unsqueeze(0).float()
        d = decide(z, masked.clone(), planner, SamplingParams(), noise.at(call, positions), call, 1, MASK, lead=lead)
        offsets = torch.nonzero(d.reveal[0])[:, 0]
        out.append(((offsets + lo).tolist(), d.proposal.tokens[0, offsets].tolist()))
        masked &= ~d.reveal
        call += 1
    return out


SDAR_LEADS = [0, 1, 3, 7, 11, 15]


@pytest.mark.parametrize("regime", REGIMES)
@pytest.mark.parametrize(("strategy", "steps", "tau"), [("static", 4, None), ("static", 5, None), ("sequential", 4, None),
                                                        ("sequential", 16, None), ("dynamic", 4, 0.85),
                                                        ("dynamic", 5, NEAR), ("llada2", 4, 0.95),
                                                        ("llada2", 16, NEAR)])
def test_sdar_with_a_prompt_tail_in_the_block(strategy, steps, tau, regime):
    """SDAR's (and LLaDA2 generate's) counts for the whole block, given as ``counts``: the same masked offsets and tokens at every call;
    where SDAR's count exceeds the masks left it also re-draws filled offsets, which unmask leaves alone."""
    counts = sdar_counts(16, steps)
    spec = {"static": f"topk(counts={tuple(counts)})", "sequential": f"topk(score='position', counts={tuple(counts)})",
            "dynamic": f"dynamic(tau={tau}, counts={tuple(counts)})",
            "llada2": f"dynamic(tau={tau}, counts={tuple(counts)})"}[strategy]
    for seed, lead in enumerate(SDAR_LEADS):
        ref, _ = ref_block(ref_sdar(strategy, counts, tau or 0.0), 16, lead, regime, seed, steps + 1)
        ours = drive(spec, 16, lead, regime, seed)
        assert len(ours) == len(ref), f"lead {lead}: {len(ours)} calls, reference {len(ref)}"
        masked = torch.arange(16) >= lead
        for call, ((offsets, tokens), (written, ref_tokens)) in enumerate(zip(ours, ref)):
            kept = [(o, t) for o, t in zip(written, ref_tokens) if masked[o]]
            assert list(zip(offsets, tokens)) == kept, f"lead {lead} call {call}"
            # filled offsets SDAR re-drew: none in order, else what its count asks beyond the masks left
            extra = 0 if strategy in ("sequential", "llada2") else max(0, counts[call] - int(masked.sum()))
            assert len(written) - len(kept) == extra, f"lead {lead} call {call}"
            masked[offsets] = False


def test_sdar_static_redraws_the_prompt_tail_when_its_count_exceeds_the_masks_left():
    """Lead 11 in a block of 16 with 4 steps (counts 4, 4, 4, 4): 5 masks, so the second call's count of 4
    finds 1 mask and SDAR re-draws 3 filled offsets (its top-k takes -inf ones); unmask reveals the 1 mask."""
    counts = sdar_counts(16, 4)
    ref, _ = ref_block(ref_sdar("static", counts), 16, 11, "moderate", 0, 5)
    ours = drive(f"topk(counts={tuple(counts)})", 16, 11, "moderate", 0)
    assert [len(w) for w, _ in ref] == [4, 4] and [len(o) for o, _ in ours] == [4, 1]
    redrawn = [o for o in ref[1][0] if o < 11]
    assert len(redrawn) == 3 and set(ref[1][0]) - set(redrawn) == set(ours[1][0])


@pytest.mark.parametrize("regime", REGIMES)
@pytest.mark.parametrize("tau", [0.95, NEAR])
def test_sglang_low_confidence_with_a_prompt_tail_in_the_block(tau, regime):
    """SGLang's LowConfidence on LLaDA2's blocks of 32 from position 0: ``threshold(tau)`` with ``lead``."""
    for seed, lead in enumerate([0, 1, 5, 13, 31]):
        ref, _ = ref_block(ref_low_confidence(tau), 32, lead, regime, seed, 32)
        assert drive(f"threshold(tau={tau})", 32, lead, regime, seed) == ref, f"lead {lead}"


def ref_fast_dllm_v2(tau: float, lead: int, regime: str, seed: int):
    """Fast-dLLM v2 over one block of 32 whose first ``lead`` offsets are filled: sub-blocks of 8 in turn."""
    x = torch.full((32,), MASK)
    x[:lead] = 1
    calls, call = [], 0
    for lo in range(0, 32, 8):
        while (x[lo : lo + 8] == MASK).any():
            z = script_logits(seed, call, 32, regime).double()[lo : lo + 8]
            written = [lo + i for i in ref_low_confidence(tau)(z, x[lo : lo + 8] == MASK, call)]
            x[written] = z.argmax(-1)[[w - lo for w in written]]
            calls.append((written, x[written].tolist()))
            call += 1
    return calls


@pytest.mark.parametrize("regime", REGIMES)
@pytest.mark.parametrize("tau", [0.9, NEAR])
def test_fast_dllm_v2_sub_blocks_are_unmask_blocks_of_8(tau, regime):
    """Fast-dLLM v2 (block 32, sub-block 8): ``threshold(tau)`` with ``block_length=8``; a sub-block holding the
    prompt's tail runs with that lead, a full one costs no call. (Lead 1 is the block after a finished one: its
    first token comes from the call that commits the finished block, see docs/reference.md.)"""
    for seed, lead in enumerate([1, 3, 8, 13, 30]):
        ours, call = [], 0
        for lo in range(0, 32, 8):
            sub_lead = min(8, max(0, lead - lo))
            if sub_lead == 8:
                continue
            got = drive(f"threshold(tau={tau})", 32, sub_lead, regime, seed, sub=lo, first_call=call)
            ours += got
            call += len(got)
        assert ours == ref_fast_dllm_v2(tau, lead, regime, seed), f"lead {lead}"


def test_a_confidence_equal_to_the_threshold_counts_as_confident_in_unmask_only():
    """SGLang, Fast-dLLM v2 and SDAR's dynamic compare confidence > tau; unmask's threshold and dynamic >= tau.
    They differ only where a confidence equals tau exactly: here p = 1/2 (two tokens of equal logits) at tau 1/2."""
    z = torch.full((1, 4, V), -math.inf)
    z[0, :, :2] = 0.0  # p = 1/2 exactly at every offset
    z[0, 3, 2] = 5.0  # offset 3: p ~ 0.987
    masked = torch.ones(1, 4, dtype=torch.bool)
    ref = ref_low_confidence(0.5)(z[0].double(), masked[0], 0)
    assert ref == [3]
    positions = torch.arange(4).unsqueeze(0)
    for spec in ("threshold(tau=0.5)", "dynamic(tau=0.5, counts=(1, 3))"):
        d = decide(z.clone(), masked, parse_planner(spec), SamplingParams(), Noise.from_seeds([0]).at(0, positions),
                   0, 1, MASK)
        assert d.reveal[0].tolist() == [True, True, True, True], spec
    assert best_first(confidence(z[0].double()), masked[0])[0] == 3


def test_fast_dllm_v2_block_boundary_token_is_the_commit_calls_argmax_at_temperature_0():
    """Fast-dLLM v2 takes a block's first token greedily from the call that writes the finished block before it
    (its last position's shifted logits). unmask departs (docs/reference.md): the committed cache folds that call
    into the next block's first call and the planner reveals the offset like any other. The relation: the aligned
    logits of a block's first offset are those of the reference's commit call in every call of the block (the
    position before the block sees nothing of it), so greedy unmask writes the reference's token there, whichever
    call reveals it; sampling, unmask draws it where the reference still takes the argmax."""
    import model_fixtures as mf

    from unmask import GenerationConfig, generate
    from unmask.models import load

    den, _ = load(mf.fast_dllm_small(), device="cpu", dtype=torch.float32)  # bd_size 8, shifted logits
    prompt, b = [1, 2, 3, 4, 5, 6, 7, 8], 8  # lead 0: every generated block starts on a model block boundary
    out = generate(den, [prompt], GenerationConfig(gen_length=32, block_length=b, planner="threshold(tau=0.9)",
                                                   early_exit=False, seed=0))
    seq = out.sequences[0][out.attention_mask[0]]
    firsts, late = [], 0
    for start in range(len(prompt), len(seq), b):
        ids = seq[None, :start]
        pos = torch.arange(start)[None]
        allowed = (pos[:, None, :] // b <= pos[:, :, None] // b)
        with torch.no_grad():  # the commit call: transformers' own forward of the finished blocks
            raw = den.model(input_ids=ids, attention_mask=torch.where(allowed, 0.0, -math.inf)[:, None],
                            position_ids=pos).logits
        firsts.append((int(seq[start]), int(raw[0, -1].argmax())))
        g = start - len(prompt)
        first_call = int(out.trace.reveal_call[0, g : g + b].min())
        late += int(out.trace.reveal_call[0, g]) > first_call  # revealed after its block's first call
    assert all(ours == ref for ours, ref in firsts), firsts
    sampled = []
    for seed in range(6):
        o = generate(den, [prompt], GenerationConfig(gen_length=32, block_length=b, planner="threshold(tau=0.9)",
                                                     early_exit=False, seed=seed, sampling={"temperature": 1.0}))
        s = o.sequences[0][o.attention_mask[0]]
        for start in range(len(prompt), len(s), b):
            pos = torch.arange(start)[None]
            allowed = (pos[:, None, :] // b <= pos[:, :, None] // b)
            with torch.no_grad():
                raw = den.model(input_ids=s[None, :start], attention_mask=torch.where(allowed, 0.0, -math.inf)[:, None],
                                position_ids=pos).logits
            sampled.append(int(s[start]) == int(raw[0, -1].argmax()))
    assert late > 0  # the reference fills every one before its block's first diffusion call; unmask did not here
    assert not all(sampled)  # temperature 1: unmask draws the boundary token, the reference takes the argmax
