"""Exact oracles: posteriors against brute-force enumeration, sampling, path KL, schedule KL, frontier smoke."""

import itertools
import math

import pytest
import torch

from unmask import EB, Dilated, GenerationConfig, TopK, dilated_levels, generate
from unmask.bench.oracle import run_oracle_frontier
from unmask.oracles import HMMOracle, MarkovOracle, named_oracle, ordered_partitions, path_kl, schedule_kl
from unmask.oracles.metrics import _stationary


pytestmark = pytest.mark.usefixtures("one_thread")


ORACLES = {
    "markov1": lambda v=3: MarkovOracle(v, order=1, concentration=0.5, seed=1),
    "markov2": lambda v=3: MarkovOracle(v, order=2, concentration=0.5, seed=2),
    "hmm": lambda v=3: HMMOracle(3, v, persistence=0.8, concentration=0.5, seed=3),
}


def brute_log_joint(oracle, xs: torch.Tensor) -> torch.Tensor:
    """log p(x) ``[M]`` for every row of ``xs [M, L]``, straight from the parameters (no forward pass)."""
    m, length = xs.shape
    if isinstance(oracle, HMMOracle):
        k = oracle.num_states
        zs = torch.tensor(list(itertools.product(range(k), repeat=length)))  # [K^L, L] hidden paths
        lz = oracle.initial.log()[zs[:, 0]] + oracle.transition.log()[zs[:, :-1], zs[:, 1:]].sum(-1)
        emit = oracle.emission.log()[zs[:, None, :], xs[None, :, :]].sum(-1)  # [K^L, M]
        return torch.logsumexp(lz[:, None] + emit, 0)
    out = torch.zeros(m, dtype=torch.float64)
    for i, x in enumerate(xs.tolist()):
        lp = math.log(oracle.pi[x[0]])
        for t in range(1, length):
            if oracle.order == 1 or t == 1:
                lp += math.log(oracle.first[x[t - 1], x[t]])
            else:
                lp += math.log(oracle.second[x[t - 2], x[t - 1], x[t]])
        out[i] = lp
    return out


@pytest.mark.parametrize("kind", sorted(ORACLES))
def test_marginals_match_enumeration(kind):
    oracle, v, t_len = ORACLES[kind](), 3, 6
    g = torch.Generator().manual_seed(0)
    joints = {length: brute_log_joint(oracle, torch.tensor(list(itertools.product(range(v), repeat=length))))
              for length in range(1, t_len + 1)}
    for trial in range(4):  # same batch size every time: exercises the forward-message cache too
        pads = [0, 1, 2, 5, trial % 3]
        ids = torch.zeros(len(pads), t_len, dtype=torch.long)
        am = torch.ones(len(pads), t_len, dtype=torch.bool)
        for r, pad in enumerate(pads):
            length = t_len - pad
            x = oracle.sample(1, length, g)[0]
            masked = torch.rand(length, generator=g) < 0.6
            ids[r, :pad], am[r, :pad] = 7, False  # any id on padding
            ids[r, pad:] = torch.where(masked, oracle.spec.mask_id, x)
        logits = oracle(ids, am, torch.zeros_like(ids))
        assert logits.shape == (len(pads), t_len, v + 2) and logits.dtype == torch.float64
        assert torch.isneginf(logits[..., v:]).all()  # mask and EOS columns
        for r, pad in enumerate(pads):
            length = t_len - pad
            xs = torch.tensor(list(itertools.product(range(v), repeat=length)))
            row = ids[r, pad:]
            obs = row != oracle.spec.mask_id
            consistent = ((xs == row) | ~obs).all(-1)
            w = torch.where(consistent, joints[length], -math.inf)
            w = (w - torch.logsumexp(w, 0)).exp()  # p(x | observed)  [V^L]
            expect = torch.stack([torch.stack([w[xs[:, i] == c].sum() for c in range(v)]) for i in range(length)])
            got = logits[r, pad:, :v].exp()
            assert torch.allclose(got, expect, atol=1e-9, rtol=0), (kind, trial, r)
            assert (logits[r, :pad, :v] == 0).all()  # padding: uniform


@pytest.mark.parametrize("kind", sorted(ORACLES))
def test_log_prob_sums_to_one_and_matches_parameters(kind):
    oracle = ORACLES[kind]()
    xs = torch.tensor(list(itertools.product(range(3), repeat=5)))
    lp = oracle.log_prob(xs)
    assert lp.dtype == torch.float64 and lp.shape == (243,)
    assert abs(float(lp.exp().sum()) - 1.0) < 1e-12
    assert torch.allclose(lp, brute_log_joint(oracle, xs), atol=1e-10)


@pytest.mark.parametrize("kind", sorted(ORACLES))
def test_sample_frequencies_match_log_prob(kind):
    oracle, n = ORACLES[kind](), 30000
    xs = oracle.sample(n, 3, torch.Generator().manual_seed(5))
    counts = torch.bincount(xs[:, 0] * 9 + xs[:, 1] * 3 + xs[:, 2], minlength=27).double()
    grid = torch.tensor(list(itertools.product(range(3), repeat=3)))
    expected = n * oracle.log_prob(grid).exp()
    chi2, df = float(((counts - expected) ** 2 / expected).sum()), 26
    assert chi2 < df + 6 * math.sqrt(2 * df), chi2  # chi-square(26): mean 26, sd 7.2


@pytest.mark.parametrize("kind", sorted(ORACLES))
def test_one_token_per_call_has_zero_path_kl(kind):
    oracle = ORACLES[kind](v=5)
    g = torch.Generator().manual_seed(1)
    prompts = [oracle.sample(1, length, g)[0].tolist() for length in (0, 3, 1, 3, 0, 2)] * 8
    cfg = GenerationConfig(gen_length=16, block_length=8, planner=TopK(score="random", steps=16),
                           sampling=dict(temperature=1.0), early_exit=False, seed=0)
    kl = path_kl(oracle, generate(oracle, prompts, cfg), prompts)
    se = float(kl.std()) / math.sqrt(kl.numel())
    assert kl.shape == (48,) and abs(float(kl.mean())) < 4 * se + 1e-6
    assert kl.abs().max() < 1e-5  # the chain rule holds sample by sample


def test_dus_beats_confidence_topk_on_markov_chain():
    """The headline: on a first-order chain, DUS's path KL is far below confidence top-k at equal NFE."""
    oracle = MarkovOracle(16, order=1, concentration=0.3, seed=0)
    prompts = [[] for _ in range(256)]
    means = {}
    for name, planner in [("dus", Dilated()), ("conf", TopK(score="confidence", counts="dilated"))]:
        cfg = GenerationConfig(gen_length=64, block_length=32, planner=planner, sampling=dict(temperature=1.0),
                               early_exit=False, seed=0)
        out = generate(oracle, prompts, cfg)
        assert out.nfe == 10  # log2(32) calls per block, two blocks
        means[name] = float(path_kl(oracle, out, prompts).mean())
    assert means["conf"] > 0.3
    assert means["dus"] < means["conf"] / 5, means


@pytest.mark.parametrize("planner", [Dilated(), EB(gamma=1.0), TopK(score="confidence", counts="dilated")])
@pytest.mark.parametrize("kind", ["markov2", "hmm"])
def test_batch_equals_single(kind, planner):
    oracle = ORACLES[kind](v=6)
    g = torch.Generator().manual_seed(2)
    prompts = [oracle.sample(1, length, g)[0].tolist() for length in (4, 0, 2, 5)]
    cfg = GenerationConfig(gen_length=16, block_length=8, planner=planner, early_exit=False)
    batch = generate(oracle, prompts, cfg).generated
    for i, p in enumerate(prompts):
        assert torch.equal(generate(oracle, [p], cfg).generated[0], batch[i]), (i, p)


def test_forward_cache_is_exact():
    oracle = MarkovOracle(4, order=2, concentration=0.5, seed=4)
    g = torch.Generator().manual_seed(3)
    am = torch.ones(3, 9, dtype=torch.bool)
    x = oracle.sample(3, 9, g)
    for _ in range(10):
        ids = torch.where(torch.rand(3, 9, generator=g) < 0.5, oracle.spec.mask_id, x)
        fresh = MarkovOracle(4, order=2, concentration=0.5, seed=4)
        assert torch.equal(oracle(ids, am, am.long()), fresh(ids, am, am.long()))


def _schedule_kl_enumerated(oracle, levels, context):
    """KL(q || p) by enumerating every block, q built from the oracle's own marginals."""
    v, b = oracle.num_tokens, sum(map(len, levels))
    xs = torch.tensor(list(itertools.product(range(v), repeat=b)))
    m = xs.shape[0]
    ctxs = [(None, 1.0)] if context == "start" else list(enumerate(_stationary(oracle.first).tolist()))
    total = 0.0
    for a, weight in ctxs:
        off = 0 if a is None else 1
        seq = xs if a is None else torch.cat([torch.full((m, 1), a), xs], 1)
        logq, revealed = torch.zeros(m, dtype=torch.float64), torch.zeros(b, dtype=torch.bool)
        for level in levels:
            canvas = seq.clone()
            canvas[:, off:][:, ~revealed] = oracle.spec.mask_id
            logits = oracle(canvas, torch.ones_like(canvas, dtype=torch.bool), torch.zeros_like(canvas))
            for i in level:
                logq += logits[torch.arange(m), off + i, xs[:, i]]
            revealed[list(level)] = True
        logp = oracle.log_prob(seq) - (0.0 if a is None else oracle.pi[a].log())
        total += weight * float((logq.exp() * (logq - logp)).sum())
    return total / b


@pytest.mark.parametrize("context", ["start", "stationary"])
def test_schedule_kl_matches_enumeration(context):
    oracle = MarkovOracle(3, order=1, concentration=0.5, seed=6)
    for levels in ([[0, 4], [2], [1, 3]], [[0, 1, 2, 3, 4]], [[1, 3], [0, 2, 4]], [[4], [0, 1], [2, 3]]):
        got = schedule_kl(oracle, levels, context)
        assert abs(got - _schedule_kl_enumerated(oracle, levels, context)) < 1e-12, levels
    assert abs(schedule_kl(oracle, [[2], [0, 4], [1, 3]], context)) < 1e-12  # conditionally independent


def test_schedule_kl_is_the_mean_path_kl_of_a_fixed_schedule():
    oracle = MarkovOracle(4, order=1, concentration=0.3, seed=7)
    prompts = [[] for _ in range(2000)]
    cfg = GenerationConfig(gen_length=8, block_length=8, planner=Dilated(), sampling=dict(temperature=1.0),
                           early_exit=False, seed=0)
    levels = dilated_levels(8)
    kl = path_kl(oracle, generate(oracle, prompts, cfg), prompts)
    se = float(kl.std()) / math.sqrt(kl.numel())
    assert abs(float(kl.mean()) - schedule_kl(oracle, levels, "start")) < 4 * se + 1e-6


def test_ordered_partitions_count():
    assert len(list(ordered_partitions(8, 3))) == 5796
    assert len(list(ordered_partitions(4, 2))) == 14


@pytest.mark.parametrize(
    "make, word",
    [
        (lambda: MarkovOracle(4, order=3), "order"),
        (lambda: MarkovOracle(1), "vocab_size"),
        (lambda: MarkovOracle(4, concentration=0.0), "concentration"),
        (lambda: MarkovOracle(4, eos_id=4), "eos_id"),
        (lambda: HMMOracle(3, 4, persistence=1.0), "persistence"),
        (lambda: HMMOracle(1, 4), "num_states"),
    ],
)
def test_bad_arguments_raise(make, word):
    with pytest.raises(ValueError, match=word):
        make()


def test_bad_inputs_raise():
    oracle = MarkovOracle(4)
    ids = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="left padding"):
        oracle(ids, torch.tensor([[True, False, True, True]]), ids)
    with pytest.raises(ValueError, match="input_ids"):
        oracle(torch.tensor([[0, 5, 1, 2]]), torch.ones(1, 4, dtype=torch.bool), ids)  # 5 = EOS id
    with pytest.raises(ValueError, match="order=1"):
        schedule_kl(MarkovOracle(4, order=2), [[0, 1]])
    with pytest.raises(ValueError, match="levels"):
        schedule_kl(oracle, [[0, 2]])


def test_path_kl_refuses_early_exit_and_wrong_prompts():
    oracle = MarkovOracle(3, concentration=0.3, seed=0, eos_id=0)  # token 0 doubles as EOS
    prompts = [[1], [2]]
    cfg = GenerationConfig(gen_length=16, block_length=2, planner=Dilated(), sampling=dict(temperature=1.0), seed=0)
    out = generate(oracle, prompts, cfg)
    with pytest.raises(ValueError, match="early_exit"):
        path_kl(oracle, out, prompts)
    out = generate(oracle, prompts, GenerationConfig(gen_length=4, block_length=2, early_exit=False))
    with pytest.raises(ValueError, match="prompt"):
        path_kl(oracle, out, [[1]])


@pytest.mark.slow  # every candidate on two oracles, searches, the report and its plot
def test_frontier_smoke(tmp_path):
    result = run_oracle_frontier(samples=16, budgets=(2,), oracles=("markov1", "hmm"), search_evals=3,
                                 tune_samples=8, out_dir=tmp_path, progress=False)
    assert [o.name.split(" (")[0] for o in result.oracles] == ["Markov order 1", "HMM"]
    for o in result.oracles:
        assert o.picks[2] in o.measures and o.limits[2].levels and 0 < o.floor
        for m in o.measures.values():
            assert (m.kl is None) == (m.kind == "biased") and math.isfinite(m.pair)
            assert m.kind != "exact" or o.name.startswith("Markov order 1")
        one = o.measures["topk(score='random', steps=32)"]
        assert one.calls == 32 and abs(one.kl) < 1e-5  # one token per call is exact sampling
        fixed = [m.kl for m in o.measures.values() if m.calls == 2 and m.kind in ("exact", "sampled")
                 and m.family in ("DUS", "interleave", "farthest")]
        assert o.limits[2].kl <= min(fixed) + 1e-12  # the limit is never above a fixed schedule of the table
    m1 = result.oracles[0]
    assert m1.measures["interleave(k=2)"].kl == schedule_kl(named_oracle("markov1"), [list(range(0, 32, 2)), list(range(1, 32, 2))])
    text = (tmp_path / "oracle_frontier.md").read_text()
    assert "best fixed schedule (limit)" in text and "unmask tune's pick" in text
    assert (tmp_path / "oracle_frontier.png").stat().st_size > 10_000
    from io import StringIO

    from rich.console import Console

    from unmask.bench.oracle_report import print_frontier

    buf = StringIO()
    print_frontier(result, Console(file=buf, width=200))
    shown = buf.getvalue()
    assert "† = not shown" in shown and "≤ = an upper bound" in shown  # every mark of the tables has its legend
