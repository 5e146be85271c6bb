"""Exact enumeration of every planner's output law, the path-KL status claims, and the pairwise measure."""

import math

import pytest
import torch

from unmask import GenerationConfig, generate, parse_planner
from unmask.oracles import (
    BIASED,
    BOUND,
    EXACT,
    HMMOracle,
    MarkovOracle,
    enumerate_sampler,
    exact_pair_marginals,
    pair_divergence,
    pair_kl,
    path_kl,
    path_kl_status,
    sample_pair_marginals,
    schedule_kl,
)


pytestmark = pytest.mark.usefixtures("one_thread")


ORACLES = {
    "markov1": lambda: MarkovOracle(3, order=1, concentration=0.5, seed=1),
    "markov2": lambda: MarkovOracle(3, order=2, concentration=0.5, seed=2),
    "hmm": lambda: HMMOracle(3, 3, persistence=0.8, concentration=0.5, seed=3),
}
G = 6  # generated tokens: 3**6 = 729 sequences
GS = 5  # the status claims: every planner on every oracle, 3**5 = 243 sequences

# every planner class and setting whose path-KL status differs, with its status
PLANNERS = {
    "dilated(skip_exp=0)": EXACT,
    "binary(confidence_threshold=0.5)": BIASED,
    "interleave(k=2, confidence_threshold=0.5)": BIASED,
    "binary": EXACT,
    "interleave(k=3)": EXACT,
    "farthest(calls=3)": EXACT,
    "schedule(groups=((0, 4), (2,), (1, 3)))": EXACT,
    "topk(score='margin', counts=(1, 2, 2))": EXACT,
    "topk(score='entropy', counts=(1, 2, 2))": EXACT,
    "topk(score='confidence', counts=(1, 2, 2))": BIASED,
    "topk(score='random', counts=(1, 2, 2))": BOUND,
    "eb(gamma=1.0)": EXACT,
    "threshold(tau=0.5)": BIASED,
    "factor(factor=1.0)": BIASED,
    "spaced(eb(gamma=4.0), start_stride=8)": EXACT,
    "spaced(topk(score='random', counts=(1, 2, 2)), start_stride=8)": BOUND,
    "spaced(threshold(tau=0.5), start_stride=8)": BIASED,
    "spaced(dilated(skip_exp=0), start_stride=8)": BIASED,  # spaced ranks the picks by the drawn confidence
    # revising and history-aware planners (followed exactly by the enumeration: edits, re-masks, pending calls, state)
    "edit(dilated(skip_exp=0), threshold=0.9)": EXACT,  # an exact oracle never edits: the inner planner's status
    "edit(threshold(tau=0.5))": BIASED,
    "wino(wide=0.5, narrow=0.9)": BIASED,
    "remask(dilated(skip_exp=0), eta=0.5, max_calls=4)": BIASED,
    "remask(dilated(skip_exp=0), eta=0.5, max_calls=4, score='current')": BIASED,  # state-determined, still off
    "remask(dilated(skip_exp=0), eta=0.0, max_calls=4)": EXACT,
    "stable(dilated(skip_exp=0), window=2)": BIASED,
    "stable(eb(gamma=1.0), window=1, tau=0.0)": EXACT,
}


def index(seqs: torch.Tensor, v: int) -> torch.Tensor:
    return (seqs * v ** torch.arange(seqs.shape[1])).sum(-1)


@pytest.mark.parametrize("spec", sorted(PLANNERS))
def test_status_claims_hold_by_enumeration(spec):
    planner = parse_planner(spec)
    assert path_kl_status(planner) == PLANNERS[spec]
    gaps = []
    for kind, make in ORACLES.items():
        law = enumerate_sampler(make(), planner, GS, GS)
        assert abs(float(law.prob.sum()) - 1.0) < 1e-12 and law.kl >= -1e-12
        gap = law.expected_path_kl - law.kl
        if PLANNERS[spec] == EXACT:
            assert abs(gap) < 1e-10, (kind, law.expected_path_kl, law.kl)
        elif PLANNERS[spec] == BOUND:
            assert gap > -1e-12, (kind, law.expected_path_kl, law.kl)
        gaps.append(abs(gap))
    if PLANNERS[spec] != EXACT:  # and the others are really off somewhere
        assert max(gaps) > 1e-4, gaps


@pytest.mark.parametrize("spec", ["dilated", "topk(score='confidence', counts='dilated')", "threshold(tau=0.5)",
                                  "topk(score='random', counts='dilated')", "spaced(eb(gamma=4.0), start_stride=8)"])
@pytest.mark.parametrize("kind", ["markov2", "hmm"])
def test_law_is_the_loops_output_distribution(kind, spec):
    """The enumeration asks the planner what the loop asks it: the loop's outputs follow the law (chi-square)."""
    oracle, n = ORACLES[kind](), 6000
    law = enumerate_sampler(oracle, parse_planner(spec), G, 3)  # two blocks of 3
    cfg = GenerationConfig(gen_length=G, block_length=3, planner=spec, sampling={"temperature": 1.0}, early_exit=False, seed=7)
    out = generate(oracle, [[]] * n, cfg)
    q = torch.zeros(3**G, dtype=torch.float64).index_add_(0, index(law.sequences, 3), law.prob)
    counts = torch.bincount(index(out.generated, 3), minlength=3**G).double()
    big = q * n >= 5  # pool the rare cells into one
    obs = torch.cat([counts[big], counts[~big].sum().unsqueeze(0)])
    exp = torch.cat([q[big] * n, (q[~big] * n).sum().unsqueeze(0)])
    df = int(big.sum())
    chi2 = float(((obs - exp) ** 2 / exp).sum())
    assert chi2 < df + 6 * math.sqrt(2 * df), (chi2, df)
    mc = path_kl(oracle, out, [[]] * n)
    assert abs(float(mc.mean()) - law.expected_path_kl) < 4 * float(mc.std()) / math.sqrt(n) + 1e-9
    assert abs(float(out.nfe_per_row.double().mean()) - law.expected_nfe) < 0.1 + 4 * float(out.nfe_per_row.double().std()) / math.sqrt(n)


@pytest.mark.parametrize("kind", sorted(ORACLES))
def test_one_token_per_call_is_exact(kind):
    law = enumerate_sampler(ORACLES[kind](), parse_planner(f"topk(score='entropy', steps={G})"), G, G)
    assert abs(law.kl) < 1e-10 and abs(law.expected_path_kl) < 1e-10 and abs(law.expected_nfe - G) < 1e-9


def test_enumeration_with_a_prompt_matches_schedule_kl_after_one_token():
    oracle = MarkovOracle(3, order=1, concentration=0.5, seed=6)
    levels = ((0, 4), (2,), (1, 3))
    law = enumerate_sampler(oracle, parse_planner(f"schedule(groups={levels})"), 5, 5)
    assert abs(law.kl - schedule_kl(oracle, levels, "start")) < 1e-12
    kls = [enumerate_sampler(oracle, parse_planner(f"schedule(groups={levels})"), 5, 5, prompt=[a]).kl for a in range(3)]
    from unmask.oracles.metrics import _stationary

    mixed = sum(w * k for w, k in zip(_stationary(oracle.first).tolist(), kls))
    assert abs(mixed - schedule_kl(oracle, levels, "stationary")) < 1e-12


def test_enumeration_refuses_oversized_cases():
    with pytest.raises(ValueError, match="max_rows"):
        enumerate_sampler(ORACLES["markov1"](), parse_planner("dilated"), 8, 8, max_rows=100)
    with pytest.raises(ValueError, match="prompt"):
        enumerate_sampler(ORACLES["markov1"](), parse_planner("dilated"), 4, 4, prompt=[5])


def test_path_kl_refuses_biased_planners():
    oracle = ORACLES["markov1"]()
    cfg = GenerationConfig(gen_length=4, block_length=4, planner="threshold(tau=0.5)", sampling={"temperature": 1.0},
                           early_exit=False, seed=0)
    out = generate(oracle, [[]] * 2, cfg)
    with pytest.raises(ValueError, match="biased"):
        path_kl(oracle, out, [[]] * 2, planner=cfg.planner)
    assert path_kl(oracle, out, [[]] * 2, planner=parse_planner("dilated")).shape == (2,)


@pytest.mark.parametrize("kind", sorted(ORACLES))
def test_exact_pair_marginals_are_the_law_of_exact_sampling(kind):
    oracle = ORACLES[kind]()
    law = enumerate_sampler(oracle, parse_planner(f"topk(score='margin', steps={G})"), G, G)
    exact = exact_pair_marginals(oracle, G, 3)
    assert exact.shape == (12, 3, 3)  # pairs at distance 1, 2, 3: 5 + 4 + 3
    assert torch.allclose(sample_pair_marginals(law.sequences, 3, 3, law.prob), exact, atol=1e-12)
    assert torch.allclose(exact.sum((-1, -2)), torch.ones(12, dtype=torch.float64))


@pytest.mark.parametrize("spec", ["threshold(tau=0.5)", "topk(score='confidence', counts='dilated')"])
def test_pair_divergence_converges_to_the_exact_pairwise_kl(spec):
    oracle, n, d = ORACLES["hmm"](), 20000, 3
    law = enumerate_sampler(oracle, parse_planner(spec), G, G)
    exact = exact_pair_marginals(oracle, G, d)
    q = sample_pair_marginals(law.sequences, 3, d, law.prob)
    truth = pair_kl(q, exact)
    cfg = GenerationConfig(gen_length=G, block_length=G, planner=spec, sampling={"temperature": 1.0}, early_exit=False, seed=3)
    got = pair_divergence(oracle, generate(oracle, [[]] * n, cfg).generated, d)
    assert got.samples == n and 0 < got.floor < 8 / n  # floor ~ (V^2 - 1) / (2 N) per pair
    # first-order fluctuation: sd of log(q/p) under q over sqrt(n), averaged over pairs; plus the plug-in bias
    ratio = torch.where(q > 0, (q / exact).log(), torch.zeros((), dtype=torch.float64))
    sd = ((q * ratio**2).sum((-1, -2)) - (q * ratio).sum((-1, -2)) ** 2).clamp_min(0).sqrt().mean()
    assert abs(got.value - truth) < 5 * float(sd) / math.sqrt(n) + 2 * 8 / n, (got.value, truth)
    assert truth > 20 * got.floor  # these planners are visibly off


def test_pair_divergence_bad_input():
    with pytest.raises(ValueError, match="sequences"):
        pair_divergence(ORACLES["markov1"](), torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="max_distance"):
        exact_pair_marginals(ORACLES["markov1"](), 4, 0)
