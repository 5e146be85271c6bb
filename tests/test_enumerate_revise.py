"""Exact enumeration of revising and history-aware planners: the law follows edits, re-masks, pending calls and
per-row planner state, and matches the loop's outputs."""

import math

import pytest
import torch

from unmask import GenerationConfig, generate, parse_planner
from unmask.oracles import HMMOracle, MarkovOracle, enumerate_sampler, path_kl

pytestmark = pytest.mark.usefixtures("one_thread")

G, B = 6, 3  # two blocks of 3 on V=3: 729 sequences


def index(seqs: torch.Tensor, v: int) -> torch.Tensor:
    return (seqs * v ** torch.arange(seqs.shape[1])).sum(-1)


REVISING = [
    "edit(threshold(tau=0.5), threshold=0.9, max_edit_calls=2)",  # post-fill edit calls
    "wino(wide=0.6, narrow=0.9, max_calls=2)",  # the call cap: the second call reveals every mask left
    "remask(threshold(tau=0.5), eta=0.5, max_calls=4)",  # real re-masks by the reveal-time confidence
    "stable(threshold(tau=0.5), window=2, tau=0.3)",  # per-row history
]


@pytest.mark.parametrize("spec", REVISING)
def test_law_is_the_loops_output_distribution(spec):
    """Monte-Carlo frequencies of ``generate`` against the enumerated law: every sequence within 5 standard
    errors (sqrt(q (1 - q) / n), plus 5/n for the rare ones), a pooled chi-square, and the mean NFE and path-KL
    estimate within 4 standard errors of their exact expectations."""
    oracle, n = MarkovOracle(3, order=2, concentration=0.5, seed=2), 6000
    law = enumerate_sampler(oracle, parse_planner(spec), G, B)
    assert abs(float(law.prob.sum()) - 1.0) < 1e-12 and law.kl >= -1e-12
    cfg = GenerationConfig(gen_length=G, block_length=B, planner=spec, sampling={"temperature": 1.0}, early_exit=False,
                           seed=11)
    out = generate(oracle, [[]] * n, cfg)
    q = torch.zeros(3**G, dtype=torch.float64).index_add_(0, index(law.sequences, 3), law.prob)
    counts = torch.bincount(index(out.generated, 3), minlength=3**G).double()
    se = (q * (1 - q) / n).sqrt()
    assert bool(((counts / n - q).abs() <= 5 * se + 5 / n).all())
    big = q * n >= 5
    obs = torch.cat([counts[big], counts[~big].sum().unsqueeze(0)])
    exp = torch.cat([q[big] * n, (q[~big] * n).sum().unsqueeze(0)])
    df = int(big.sum())
    assert float(((obs - exp) ** 2 / exp).sum()) < df + 6 * math.sqrt(2 * df)
    nfe = out.nfe_per_row.double()
    assert abs(float(nfe.mean()) - law.expected_nfe) < 4 * float(nfe.std()) / math.sqrt(n) + 1e-9
    mc = path_kl(oracle, out, [[]] * n)
    assert abs(float(mc.mean()) - law.expected_path_kl) < 4 * float(mc.std()) / math.sqrt(n) + 1e-9


def test_remask_and_stable_change_the_law():
    """The two that act on an exact oracle really differ from their inner planner (the enumeration follows them)."""
    oracle = MarkovOracle(3, order=2, concentration=0.5, seed=2)
    inner = enumerate_sampler(oracle, parse_planner("threshold(tau=0.5)"), G, B)
    for spec in REVISING[2:]:
        law = enumerate_sampler(oracle, parse_planner(spec), G, B)
        assert abs(law.kl - inner.kl) > 1e-3 and law.expected_nfe > inner.expected_nfe + 0.1, spec


@pytest.mark.parametrize("oracle", [MarkovOracle(3, order=1, concentration=0.5, seed=1),
                                    HMMOracle(3, 3, persistence=0.8, concentration=0.5, seed=3)])
@pytest.mark.parametrize("inner", ["threshold(tau=0.5)", "dilated", "topk(score='random', counts='dilated')"])
def test_a_planner_that_cannot_revise_has_its_inner_law(oracle, inner):
    """edit with threshold 1 and no edit calls, remask with eta 0, wino and stable at their neutral settings: the
    inner planner's law exactly (the stateless enumeration gives it); edit's post-fill calls add one per block."""
    base = enumerate_sampler(oracle, parse_planner(inner), G, B)
    same = {f"edit({inner}, threshold=1.0, max_edit_calls=0)": 0, f"edit({inner}, threshold=0.9)": 2,
            f"remask({inner}, eta=0.0)": 0, f"stable({inner}, window=1, tau=0.0)": 0}
    if inner == "threshold(tau=0.5)":
        same["wino(wide=0.5, narrow=1.0)"] = 0  # current tokens have probability 1 on an exact oracle
    for spec, extra in same.items():
        law = enumerate_sampler(oracle, parse_planner(spec), G, B)
        assert torch.equal(law.sequences, base.sequences), spec
        assert torch.allclose(law.prob, base.prob, rtol=0, atol=1e-12), spec
        assert abs(law.expected_nfe - base.expected_nfe - extra) < 1e-9, spec
        assert abs(law.expected_path_kl - base.expected_path_kl) < 1e-12, spec


def test_stateful_enumeration_with_a_prompt_and_a_bound():
    oracle = MarkovOracle(3, order=1, concentration=0.5, seed=6)
    laws = [enumerate_sampler(oracle, parse_planner("stable(threshold(tau=0.5), window=2)"), 3, 3, prompt=[a])
            for a in range(3)]
    assert all(abs(float(law.prob.sum()) - 1.0) < 1e-12 for law in laws)
    assert len({round(law.kl, 9) for law in laws}) > 1  # the prompt matters
    with pytest.raises(ValueError, match="max_rows"):
        enumerate_sampler(oracle, parse_planner("remask(dilated, eta=0.5)"), 8, 8, max_rows=100)


def test_branches_that_do_not_merge_are_bounded_by_max_rows():
    """stable's history differs with every draw, so its branches do not merge: the enumeration stops with a clear
    error once they pass max_rows, before memory runs out."""
    from unmask.oracles import enumerate_sampler, named_oracle
    from unmask.planners import parse_planner

    with pytest.raises(ValueError, match="branches .* over max_rows=200000"):
        enumerate_sampler(named_oracle("markov1"), parse_planner("stable(eb, window=2)"), 4, 4, max_rows=200_000)
