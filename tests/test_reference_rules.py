"""The reference samplers' rules, restated, against unmask's planners: the same reveals at every call.

Each ``ref_*`` function restates a published rule in a few lines, scored on float64
probabilities of the logits (the precision the reference implementations score in):

- LLaDA ``generate`` (Nie et al. 2025): ``steps / num_blocks`` calls per block with
  LLaDA's linear counts, the most confident (``low_confidence``) or the highest
  uniform (``random``) masked positions first; Dream's margin and entropy orders
  (``topk_margin``, ``entropy``) with the same counts;
- DUS ``generate_scheduled`` (arXiv 2506.19037): one dilated level per call; with
  a confidence threshold a revealed position below it is put back (deferred);
- EB-Sampler (Ben-Hamu et al. 2025): the largest prefix of masked positions by
  ascending entropy whose entropy sum minus its maximum is <= gamma bits, at least one;
- CB / Fast-dLLM threshold (Wu et al. 2025): every masked position with confidence
  >= tau, and the most confident one;
- Fast-dLLM factor rule: the n most confident, n the largest with
  ``(n + 1) * (1 - c_(n)) <= factor``, at least one;
- the dilated-spacing filter (arXiv 2506.19037, Sec. 4.4): candidates best first,
  each kept only if at least ``max(2, M * start_stride // B)`` from every kept one;
- SDAR ``block_diffusion_generate`` (JetAstra/SDAR): linear counts ``n_t`` per block;
  ``sequential`` reveals the ``n_t`` offsets from the first masked one on,
  ``low_confidence_dynamic`` every masked position with confidence > tau when there
  are at least ``n_t`` of them, else the ``n_t`` most confident;
- SGLang's dLLM ``LowConfidence`` (LLaDA2): every masked position with confidence
  > threshold, else the most confident one;
- JetEngine's ``entropy_bounded`` (SDAR's engine): the largest prefix of masked positions
  by ascending entropy (nats, probabilities clamped at 1e-12) whose sum is < the bound,
  at least one;
- SGLang's ``JointThreshold`` (LLaDA2.1 token editing): mask-to-token above
  ``threshold``, token-to-token above ``edit_threshold``, at most
  ``max_post_edit_steps`` forwards after the last mask, against
  ``edit(threshold(tau=...), threshold=..., max_edit_calls=...)`` on logits that
  change every call or every other call.

Blocks that begin inside the prompt (SDAR, SGLang and Fast-dLLM v2 lay blocks from
position 0) and Fast-dLLM v2's sub-blocks: ``tests/test_reference_rules_block.py``.

Both loops run on the same scripted logits (a function of the call index: near
ties at p ~ 1 - 1e-6 on logits ~50, bf16-rounded logits, exact ties) over two
blocks, and each test compares the positions revealed at every call, the tokens
and the NFE. Exact ties go to the leftmost position on both sides (the reference
code's ``torch.topk`` / ``torch.sort`` leave their order unspecified). Where
unmask departs from a reference on purpose (docs/reference.md), the restated rule
carries the departure as a named switch and a test checks the relation to the
rule as published.
"""

import math
from functools import lru_cache

import pytest
import torch
from toy import ToyDenoiser

from unmask import Denoiser, GenerationConfig, TokenSpec, generate
from unmask.planners import parse_planner
from unmask.denoiser import select_window
from unmask.noise import ORDER, Noise
from unmask.schedules import binary_levels, dilated_levels

V, GEN, BL = 48, 64, 32
MASK = V - 1
PROMPTS = ([], [5, 9, 2])
SEED = 0  # the row seed of unmask's random orders


@lru_cache(maxsize=4096)  # both loops ask for the same calls; callers copy
def script_logits(seed: int, call: int, length: int, regime: str) -> torch.Tensor:
    """``[length, V]`` logits of call ``call``: 60% of positions at p ~ 1 - 1e-6, the rest spread out."""
    g = torch.Generator().manual_seed(seed * 7919 + call)
    n = V - 1  # every token but the mask, whose logit is -inf (unmask excludes it; see docs/reference.md)
    if regime == "moderate":
        z = 3.0 * torch.randn(length, n, generator=g, dtype=torch.float64)
    else:
        gaps = 20 + 10 * torch.rand(length, n, generator=g, dtype=torch.float64)  # a far tail
        kind = torch.rand(length, generator=g)
        gaps[:, 0] = 0.0
        gaps[kind < 0.6, 1] = 13.8 + 0.05 * torch.rand(length, generator=g, dtype=torch.float64)[kind < 0.6]
        mid = (kind >= 0.6) & (kind < 0.8)
        gaps[mid, 1:3] = 0.3 + 4 * torch.rand(length, 2, generator=g, dtype=torch.float64)[mid]
        gaps[kind >= 0.8, 1:6] = torch.rand(length, 5, generator=g, dtype=torch.float64)[kind >= 0.8]
        top = 50 + 2 * torch.randn(length, 1, generator=g, dtype=torch.float64)
        order = torch.rand(length, n, generator=g).argsort(-1)
        z = torch.empty(length, n, dtype=torch.float64).scatter_(1, order, top - gaps)
    dup = torch.rand(length, generator=g) < 0.15  # exact ties: a copy of the row to the left
    z[1:][dup[1:]] = z[:-1][dup[1:]].clone()
    z = torch.cat([z, torch.full((length, 1), -math.inf, dtype=torch.float64)], -1)
    return z.to(torch.bfloat16 if regime == "bf16" else torch.float32)


class Scripted(Denoiser):
    """A denoiser whose logits are scripted per call, the same for every loop that calls it."""

    def __init__(self, regime: str, seed: int) -> None:
        self.spec = TokenSpec(mask_id=MASK, eos_ids=(V - 2,), pad_id=0, vocab_size=V)
        self.regime, self.seed, self.calls = regime, seed, 0

    def __call__(self, input_ids, attention_mask=None, position_ids=None, window=None):
        z = script_logits(self.seed, self.calls, input_ids.shape[1], self.regime)
        self.calls += 1
        return select_window(z.unsqueeze(0).expand(input_ids.shape[0], -1, -1).clone(), window)


# ---- the reference rules, on float64 logits z [B, V] of the block and its masked positions ----


def confidence(z):
    return z.softmax(-1).max(-1).values  # the argmax token's probability


def best_first(key, masked):
    """Masked positions by descending key; exact ties leftmost."""
    idx = torch.nonzero(masked)[:, 0]
    return idx[torch.argsort(-key[idx], stable=True)].tolist()


def pick(positions):
    out = torch.zeros(BL, dtype=torch.bool)
    out[list(positions)] = True
    return out


def ref_topk(score, steps_per_block):
    counts = [BL // steps_per_block + (i < BL % steps_per_block) for i in range(steps_per_block)]

    def rule(z, masked, call, lo):
        p = z.softmax(-1)
        if score == "random":  # the same uniforms unmask draws (the random source is not the reference's)
            key = Noise.from_seeds([SEED]).at(call, torch.arange(lo, lo + BL)[None]).uniform(ORDER)[0].double()
        elif score == "margin":
            key = p.topk(2, -1).values @ torch.tensor([1.0, -1.0], dtype=torch.float64)
        elif score == "entropy":
            key = torch.xlogy(p, p).sum(-1)  # negative entropy
        else:
            key = p.max(-1).values
        return pick(best_first(key, masked)[: counts[call]])

    return rule, steps_per_block


def ref_levels(b, base=2, skip=1):
    levels, done, stride = [], set(), b // base**skip
    while stride >= 1:
        level = [i for i in range(0, b, stride) if i not in done]
        levels, done, stride = levels + [level] * bool(level), done | set(level), stride // base
    rest = [i for i in range(b) if i not in done]
    return merge_smaller_last(levels + [rest] * bool(rest))


def ref_binary_levels(b):
    levels = []

    def visit(lo, hi, depth):  # midpoint first, then each half one level deeper
        if lo <= hi:
            levels.extend([] for _ in range(depth + 1 - len(levels)))
            levels[depth].append((lo + hi) // 2)
            visit(lo, (lo + hi) // 2 - 1, depth + 1)
            visit((lo + hi) // 2 + 1, hi, depth + 1)

    visit(0, b - 1, 0)
    return levels


def merge_smaller_last(levels):
    if len(levels) >= 2 and len(levels[-1]) < len(levels[-2]):
        last = levels.pop()
        levels[-1] = levels[-1] + last
    return [sorted(level) for level in levels]


def ref_dus(threshold=None, carry=False):
    """``carry``: unmask's amendment, a deferred position joins the next level and a call reveals at least one."""
    levels = ref_levels(BL)

    def rule(z, masked, call, lo):
        cand = pick(sum(levels[: call + 1], []) if carry else levels[call]) & masked
        if threshold is None or call == len(levels) - 1:
            return cand
        keep = cand & (confidence(z) >= threshold)
        return keep if keep.any() or not carry else pick(best_first(confidence(z), cand)[:1])

    return rule, len(levels)


def eb_order(gamma):
    def order(z, masked):
        p = z.softmax(-1)
        bits = -torch.xlogy(p, p).sum(-1) / math.log(2)
        ranked = best_first(-bits, masked)
        h = bits[ranked]
        return ranked[: max(1, int(((h.cumsum(0) - h.cummax(0).values) <= gamma).sum()))]

    return order


def cb_order(tau, strict=False):
    """``strict``: confidence > tau, as SGLang's LowConfidence compares (>= tau in CB and unmask)."""
    def order(z, masked):
        c = confidence(z)
        ranked = best_first(c, masked)
        return [i for i in ranked if (c[i] > tau if strict else c[i] >= tau) or i == ranked[0]]

    return order


def factor_order(factor):
    def order(z, masked):
        c = confidence(z)
        ranked = best_first(c, masked)
        n = 1
        while n < len(ranked) and (n + 2) * (1 - c[ranked[n]]) <= factor:  # the (n+1)-th, 1-based
            n += 1
        return ranked[:n]

    return order


def ref_sdar(strategy, steps, tau=0.85):
    """SDAR's per-call rule on a block that starts after the prompt (a block with a prompt tail:
    ``test_reference_rules_block.py``)."""
    counts = [BL // steps + (i < BL % steps) for i in range(steps)]

    def rule(z, masked, call, lo):
        n = counts[call]
        if strategy == "sequential":
            first = int(torch.nonzero(masked)[0, 0])
            return pick(range(first, min(first + n, BL)))
        c = confidence(z)
        high = masked & (c > tau)
        if strategy == "dynamic" and int(high.sum()) >= n:
            return high
        return pick(best_first(c, masked)[:n])

    return rule, steps


def jetengine_order(bound):
    def order(z, masked):
        p = z.softmax(-1).clamp_min(1e-12)
        nats = -(p * p.log()).sum(-1)
        ranked = best_first(-nats, masked)
        return ranked[: max(1, int((nats[ranked].cumsum(0) < bound).sum()))]

    return order


def plain(order):
    return (lambda z, masked, call, lo: pick(order(z, masked))), None


def spaced(order, start_stride):
    def rule(z, masked, call, lo):
        gap, kept = max(2, int(masked.sum()) * start_stride // BL), []
        for pos in order(z, masked):
            if all(abs(pos - k) >= gap for k in kept):
                kept.append(pos)
        return pick(kept)

    return rule, None


def reference_run(den, prompt, rule, calls_per_block):
    """The restated reference loop for one prompt: blocks left to right, ``rule`` picks each call's reveals."""
    x, start, reveals = torch.tensor(prompt + [MASK] * GEN), len(prompt), []
    for lo in range(start, start + GEN, BL):
        call = 0
        while (x[lo : lo + BL] == MASK).any() and (calls_per_block is None or call < calls_per_block):
            z = den(x[None])[0, lo : lo + BL].double()
            reveal = rule(z, x[lo : lo + BL] == MASK, call, lo)
            x[lo : lo + BL] = torch.where(reveal, z.argmax(-1), x[lo : lo + BL])
            reveals.append(set((torch.nonzero(reveal)[:, 0] + lo - start).tolist()))
            call += 1
    return x[start:], reveals


def unmask_run(den, prompt, spec):
    cfg = GenerationConfig(gen_length=GEN, block_length=BL, planner=spec, early_exit=False)
    out = generate(den, [prompt], cfg, seeds=[SEED])
    rc = out.trace.reveal_call[0]
    return out.generated[0], [set(torch.nonzero(rc == c)[:, 0].tolist()) for c in range(out.nfe)]


NEAR = 1 - 1e-6  # a threshold inside the band of near-tied confidences
CASES = {
    "llada low_confidence, one per call": ("topk(steps=64)", ref_topk("confidence", 32)),
    "llada low_confidence, 4 per call": ("topk(steps=16)", ref_topk("confidence", 8)),
    "llada random": ("topk(score='random', steps=16)", ref_topk("random", 8)),
    "dream margin": ("topk(score='margin', steps=16)", ref_topk("margin", 8)),
    "dream entropy": ("topk(score='entropy', steps=16)", ref_topk("entropy", 8)),
    "dus": ("dilated", ref_dus()),
    "dus deferral 0.3": ("dilated(confidence_threshold=0.3)", ref_dus(0.3, carry=True)),
    "dus deferral near 1": (f"dilated(confidence_threshold={NEAR})", ref_dus(NEAR, carry=True)),
    "eb": ("eb(gamma=1.0)", plain(eb_order(1.0))),
    "eb tight": ("eb(gamma=0.0001)", plain(eb_order(1e-4))),
    "cb": ("threshold(tau=0.9)", plain(cb_order(0.9))),
    "cb near 1": (f"threshold(tau={NEAR})", plain(cb_order(NEAR))),
    "factor": ("factor(factor=1.0)", plain(factor_order(1.0))),
    "factor tight": ("factor(factor=1e-05)", plain(factor_order(1e-5))),
    "spaced eb": ("spaced(eb(gamma=2.0), start_stride=8)", spaced(eb_order(2.0), 8)),
    "spaced cb": ("spaced(threshold(tau=0.5), start_stride=8)", spaced(cb_order(0.5), 8)),
    "spaced cb near 1": (f"spaced(threshold(tau={NEAR}), start_stride=4)", spaced(cb_order(NEAR), 4)),
    "sdar static": ("topk(steps=10)", ref_sdar("static", 5)),
    "sdar sequential": ("topk(score='position', steps=10)", ref_sdar("sequential", 5)),
    "sdar dynamic": ("dynamic(tau=0.85, steps=10)", ref_sdar("dynamic", 5)),
    "sdar dynamic near 1": (f"dynamic(tau={NEAR}, steps=16)", ref_sdar("dynamic", 8, NEAR)),
    "sglang low_confidence": ("threshold(tau=0.95)", plain(cb_order(0.95, strict=True))),
    "jetengine entropy_bounded": ("entropy_sum(bound=0.35)", plain(jetengine_order(0.35))),
    "jetengine entropy_bounded tight": ("entropy_sum(bound=0.0001)", plain(jetengine_order(1e-4))),
    "sglang low_confidence near 1": (f"threshold(tau={NEAR})", plain(cb_order(NEAR, strict=True))),
}


def first_difference(a, b):
    for c, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"call {c}: unmask {sorted(x)}, reference {sorted(y)}"
    return f"NFE unmask {len(a)}, reference {len(b)}"


@pytest.mark.parametrize("regime", ["near-tie", "bf16", "moderate"])
@pytest.mark.parametrize("case", list(CASES))
def test_same_reveals_as_the_reference_at_every_call(case, regime):
    spec, (rule, calls_per_block) = CASES[case]
    for seed, prompt in enumerate(PROMPTS):
        den = Scripted(regime, seed)
        tokens, reveals = unmask_run(den, prompt, spec)
        den.calls = 0
        ref_tokens, ref_reveals = reference_run(den, prompt, rule, calls_per_block)
        assert reveals == ref_reveals, f"prompt {prompt}: {first_difference(reveals, ref_reveals)}"
        assert torch.equal(tokens, ref_tokens)


@pytest.mark.parametrize("threshold", [0.3, NEAR])
def test_dus_deferral_as_published_leaves_masks_where_unmask_carries_them(threshold):
    """The published rule never revisits a deferred position: same NFE, a subset of unmask's reveals, masks left."""
    rule, calls = ref_dus(threshold, carry=False)
    for seed, prompt in enumerate(PROMPTS):
        den = Scripted("near-tie", seed)
        tokens, reveals = unmask_run(den, prompt, f"dilated(confidence_threshold={threshold})")
        den.calls = 0
        ref_tokens, ref_reveals = reference_run(den, prompt, rule, calls)
        assert len(reveals) == len(ref_reveals) == calls * GEN // BL
        assert all(r <= u for r, u in zip(ref_reveals, reveals))
        left = ref_tokens == MASK
        assert left.any() and not (tokens == MASK).any()
        assert torch.equal(tokens[~left], ref_tokens[~left])



def test_jetengine_caps_a_block_at_its_steps_where_unmask_runs_it_to_the_end():
    """JetEngine ends a block after ``denoising_steps`` calls even with masks left; unmask's first calls of each
    block are the same, and it goes on until the block is full."""
    rule, _ = plain(jetengine_order(1e-4))
    for seed, prompt in enumerate(PROMPTS):
        den = Scripted("near-tie", seed)
        tokens, reveals = unmask_run(den, prompt, "entropy_sum(bound=0.0001)")
        calls_first_block = sum(1 for r in reveals if max(r) < BL)
        den.calls = 0
        ref_tokens, ref_reveals = reference_run(den, prompt, rule, 4)
        assert ref_reveals[:4] == reveals[:4] and calls_first_block > 4
        assert (ref_tokens == MASK).any() and not (tokens == MASK).any()


def test_dilated_levels_are_the_reference_levels():
    for b in range(1, 129):
        for base in range(2, 6):
            for skip in range(1, 4):
                assert dilated_levels(b, base, skip) == ref_levels(b, base, skip), (b, base, skip)


def test_binary_levels_equal_the_references():
    """The reference merges a smaller last binary level into the one before, and so does unmask."""
    for b in range(1, 129):
        assert binary_levels(b) == merge_smaller_last(ref_binary_levels(b)), b
    assert binary_levels(8) == [[3], [1, 5], [0, 2, 4, 6, 7]]


# ---- EB's reference entropy on a large vocabulary with a flat tail ----

BIG_V = 126464  # LLaDA's vocabulary


class FlatTail(Denoiser):
    """Each position: one top token and a flat tail of ``BIG_V - 2`` tokens at p ~ 2e-12 (the gap varies by position
    and call), so the entropy is ~1e-5 bits, most of it in the tail, where the reference's +1e-10 counts less."""

    def __init__(self) -> None:
        self.spec = TokenSpec(mask_id=BIG_V - 1, eos_ids=(BIG_V - 2,), pad_id=0, vocab_size=BIG_V)
        self.calls = 0

    def logits(self, call: int, length: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(call)
        gap = 26.9 + torch.rand(length, generator=g, dtype=torch.float64)  # tail logit = top - gap
        z = (-gap).unsqueeze(-1).expand(length, BIG_V).clone()
        z[torch.arange(length), (torch.arange(length) * 7 + call) % 100] = 0.0
        z[:, BIG_V - 1] = -math.inf
        return z.float()

    def __call__(self, input_ids, attention_mask=None, position_ids=None, window=None):
        z = self.logits(self.calls, input_ids.shape[1])
        self.calls += 1
        return select_window(z.unsqueeze(0).expand(input_ids.shape[0], -1, -1), window)


def eb_reference_counts(den: FlatTail, prompt_length: int, gamma: float, reference: bool) -> list[int]:
    """The EB rule restated on float64 probabilities, with the reference's ``-sum p log2(p + 1e-10)`` or the exact
    entropy, over one block of ``BL`` tokens; the counts per call."""
    masked, counts, call = torch.ones(BL, dtype=torch.bool), [], 0
    while masked.any():
        p = den.logits(call, prompt_length + BL)[prompt_length:].double().softmax(-1)
        bits = -(p * (p + 1e-10).log2()).sum(-1) if reference else -torch.xlogy(p, p).sum(-1) / math.log(2)
        ranked = best_first(-bits, masked)
        h = bits[ranked]
        n = max(1, int(((h.cumsum(0) - h.cummax(0).values) <= gamma).sum()))
        masked[ranked[:n]] = False
        counts.append(n)
        call += 1
    return counts


def test_eb_reference_entropy_gives_the_reference_counts_on_a_flat_tail():
    """issue 22: with a 126,464 vocabulary and a flat tail the reference reveals more per call than the exact
    entropy allows; eb(entropy='reference') reproduces the reference's counts, eb() keeps the exact rule."""
    prompt, gamma = [5, 9], 1e-4
    counts = {}
    for entropy in ("reference", "exact"):
        den = FlatTail()
        cfg = GenerationConfig(gen_length=BL, block_length=BL, planner=f"eb(gamma={gamma}, entropy='{entropy}')",
                               early_exit=False)
        out = generate(den, [prompt], cfg)
        rc = out.trace.reveal_call[0]
        counts[entropy] = [int((rc == c).sum()) for c in range(out.nfe)]
        assert counts[entropy] == eb_reference_counts(FlatTail(), len(prompt), gamma, entropy == "reference")
    assert counts["reference"] != counts["exact"]  # the two rules differ on this model
    assert counts["reference"][0] > counts["exact"][0]


# ---- Dream's schedule with steps == gen_length: a first count of 0 ----


def dream_counts(length: int, steps: int, eps: float = 1e-3) -> list[int]:
    """Dream's per-step reveal counts: ``int(masked * (1 - s / t))`` on ``linspace(1, eps, steps + 1)``, the
    rest at the last step."""
    t = torch.linspace(1, eps, steps + 1)
    masked, out = length, []
    for i in range(steps):
        n = int(masked * (1 - t[i + 1] / t[i])) if i < steps - 1 else masked
        out.append(n)
        masked -= n
    return out


def test_dream_schedule_with_steps_equal_to_gen_length_starts_with_a_call_that_reveals_nothing():
    """Dream spends a call that reveals nothing; unmask refuses a count of 0 and, given the same schedule without
    it, reveals the same tokens in the same order with one call fewer (the skipped call saw the same canvas)."""
    counts = dream_counts(BL, BL)
    assert counts[0] == 0 and sum(counts) == BL and counts.count(0) == 1
    with pytest.raises(ValueError, match="leave the 0s out"):
        GenerationConfig(gen_length=BL, block_length=BL, planner=f"topk(counts={tuple(counts)})")
    den, prompt = ToyDenoiser(seed=2), [3, 4, 5]
    mask = den.spec.mask_id
    x, order = torch.tensor(prompt + [mask] * BL), []
    for n in counts:  # Dream's loop, maskgit_plus at temperature 0 (confidence = the clean probability)
        z = den(x[None], torch.ones(1, x.numel(), dtype=torch.bool), torch.arange(x.numel())[None])[0].double()
        z[:, mask] = -math.inf
        z = z[len(prompt):]
        masked = x[len(prompt):] == mask
        reveal = pick(best_first(z.softmax(-1).max(-1).values, masked)[:n])
        x[len(prompt):] = torch.where(reveal, z.argmax(-1), x[len(prompt):])
        order.append(set(torch.nonzero(reveal)[:, 0].tolist()))
    nonzero = tuple(c for c in counts if c)
    cfg = GenerationConfig(gen_length=BL, block_length=BL, planner=f"topk(counts={nonzero})", early_exit=False)
    out = generate(den, [prompt], cfg)
    rc = out.trace.reveal_call[0]
    assert out.nfe == len(counts) - 1
    assert [set(torch.nonzero(rc == c)[:, 0].tolist()) for c in range(out.nfe)] == [o for o in order if o]
    assert torch.equal(out.generated[0], x[len(prompt):])


# ---- SGLang's JointThreshold (LLaDA2.1 editing), restated, against edit(threshold(...)) ----


class Held(Scripted):
    """Scripted logits that change every ``period`` calls, so edits stop when they hold."""

    def __init__(self, regime: str, seed: int, period: int) -> None:
        super().__init__(regime, seed)
        self.period = period

    def __call__(self, input_ids, attention_mask=None, position_ids=None, window=None):
        z = script_logits(self.seed, self.calls // self.period, input_ids.shape[1], self.regime)
        self.calls += 1
        return select_window(z.unsqueeze(0).expand(input_ids.shape[0], -1, -1).clone(), window)


def ref_joint_threshold(den, prompt, threshold, edit_threshold, max_post_edit_steps):
    """SGLang's ``JointThreshold`` step, restated, one block after another.

    Each forward: every masked position whose argmax probability is above ``threshold`` takes its argmax (the
    most confident one if none is); every revealed position whose argmax differs from its token and whose
    argmax probability is above ``edit_threshold`` takes its argmax (token to token). A forward that finds no
    mask counts one post-edit step; the block is finished when a step changes nothing, or, without a look at
    the logits, when the post-edit steps exceed ``max_post_edit_steps`` (a forward SGLang spends and unmask
    does not make: ``spent``). Returns the tokens, per forward made (reveals, edits) and the spent forwards.
    """
    x, start, calls, spent = torch.tensor(prompt + [MASK] * GEN), len(prompt), [], 0
    for lo in range(start, start + GEN, BL):
        post = 0
        while True:
            block = x[lo : lo + BL]
            masked = block == MASK
            if not masked.any():
                post += 1
                if post > max_post_edit_steps:
                    spent += 1
                    break
            z = den(x[None])[0, lo : lo + BL].double()
            p, a = z.softmax(-1).max(-1)
            m2t = masked & (p > threshold)
            if masked.any() and not m2t.any():
                m2t = pick(best_first(p, masked)[:1])
            t2t = ~masked & (p > edit_threshold) & (block != a)
            calls.append((set((torch.nonzero(m2t)[:, 0] + lo - start).tolist()),
                          set((torch.nonzero(t2t)[:, 0] + lo - start).tolist())))
            if not (m2t | t2t).any():
                break
            x[lo : lo + BL] = torch.where(m2t | t2t, a, block)
    return x[start:], calls, spent


@pytest.mark.parametrize("regime", ["near-tie", "moderate"])
@pytest.mark.parametrize("period", [1, 2])
@pytest.mark.parametrize("threshold, edit_threshold, max_post", [(0.9, 0.5, 16), (0.9, 0.95, 3), (0.5, 0.3, 0)])
def test_edit_matches_sglang_joint_threshold_at_every_call(regime, period, threshold, edit_threshold, max_post):
    spec = f"edit(threshold(tau={threshold}), threshold={edit_threshold}, max_edit_calls={max_post})"
    for seed, prompt in enumerate(PROMPTS):
        den = Held(regime, seed, period)
        out = generate(den, [prompt], GenerationConfig(gen_length=GEN, block_length=BL, planner=spec,
                                                       early_exit=False), seeds=[SEED])
        rc, edits = out.trace.reveal_call[0], {}
        for call, _, pos, _, _ in out.trace.revisions.tolist():
            edits.setdefault(call, set()).add(pos)
        revealed = [set(torch.nonzero(rc == c)[:, 0].tolist()) for c in range(out.nfe)]
        ours = [(revealed[c], edits.get(c, set())) for c in range(out.nfe)]
        den.calls = 0
        ref_tokens, ref_calls, spent = ref_joint_threshold(den, prompt, threshold, edit_threshold, max_post)
        assert ours == ref_calls, f"prompt {prompt}: {first_difference(ours, ref_calls)}"
        assert torch.equal(out.generated[0], ref_tokens)
        assert out.nfe == len(ref_calls)  # SGLang spends ``spent`` more forwards, on blocks whose edit budget ran out
        assert out.nfe <= (GEN // BL) * parse_planner(spec).max_calls_per_block(BL)


@pytest.mark.parametrize("bound, confidence", [(0.5, 1.5), (3.0, 0.5), (1e-6, 2.0)])
def test_entropy_bound_planner_is_diffusion_gemmas_sampler_at_every_call(bound, confidence):
    """DiffusionGemma's sampler (``diffusion_gemma_sampler.step``, itself checked against transformers' ``generate``)
    against ``decide`` with the ``entropy_bound`` planner on a uniform canvas: the processed logits, the committed
    positions and their tokens, the stopping rows, and the canvas entering the next call, at every call. Rows get
    a growing logit on a target token at their own rate, so they stop at different calls."""
    from unmask.decide import decide
    from unmask.models.diffusion_gemma_sampler import EntropyBoundSpec, canvas_tokens, sample_uniforms, start, step
    from unmask.sampling import SamplingParams
    from unmask.noise import Noise
    from unmask.planners.redraw import EntropyBound

    n, c, v, calls = 4, 12, 40, 8
    spec = EntropyBoundSpec(entropy_bound=bound, max_calls=calls, stability=1, confidence=confidence)
    planner = EntropyBound(entropy_bound=bound, max_calls=calls, stability=1, confidence=confidence)
    g = torch.Generator().manual_seed(5)
    noise, pos = Noise.from_seeds([3, 1, 4, 1 << 40]), torch.arange(7, 7 + c).expand(n, -1)
    rates, target = torch.tensor([0.0, 0.7, 1.5, 4.0]), torch.randint(0, v, (n, c), generator=g)
    marker = v  # the engine's id of an uncommitted position
    ref = start(canvas_tokens(noise, 0, pos, v), 1)
    tokens, state, live = torch.full((n, c), marker), None, torch.ones(n, dtype=torch.bool)
    stops = []
    for k in range(calls):
        logits = 2.0 * torch.randn(n, c, v, generator=g)
        logits.scatter_add_(-1, target[..., None], (rates * k)[:, None, None].expand(-1, c, 1))
        assert torch.equal(torch.where(tokens == marker, canvas_tokens(noise, k, pos, v), tokens)[live],
                           ref.canvas[live]), k  # the canvas entering call k
        d = decide(logits.clone(), tokens == marker, planner, SamplingParams(), noise.at(k, pos), k, 1, marker,
                   tokens=tokens, state=state)
        result, ref_next = step(spec, k, logits, ref, sample_uniforms(noise, k, pos), canvas_tokens(noise, k + 1, pos, v))
        assert torch.equal(d.logits, result.processed)
        done = ~d.pending  # rows that commit their argmax everywhere and stop
        assert torch.equal(done[live], (result.stop | (k == calls - 1))[live]), k
        committed = d.reveal | d.edit
        assert not (d.remask & committed).any() and torch.equal(d.remask, ~committed & (tokens != marker))
        going = live & ~done
        assert torch.equal(committed[going], result.accepted[going]), k
        assert torch.equal(d.proposal.tokens[going][committed[going]], result.drawn[going][committed[going]]), k
        logp = torch.log_softmax(result.processed, -1).gather(-1, d.proposal.tokens[..., None]).squeeze(-1)
        torch.testing.assert_close(d.proposal.logq, logp, rtol=0, atol=1e-5)  # the trace's log q of the drawn token
        stopping = live & done
        assert committed[stopping].all() and torch.equal(d.proposal.tokens[stopping], ref_next.argmax[stopping]), k
        stops += [k] * int(stopping.sum())
        tokens = torch.where(committed, d.proposal.tokens, marker)
        state, ref, live = d.state, ref_next, going
    assert len(stops) == n and (len(set(stops)) > 1 or bound == 1e-6)
