"""Uniform-state oracles: noise-mixed forward-backward against brute force, the exact law of commit rules, sampling."""

import itertools
import math

import pytest
import torch
from test_oracle_exact import ORACLES

from unmask.noise import ORDER, Noise
from unmask.oracles import (
    BIASED,
    BOUND,
    EXACT,
    enumerate_sampler,
    exact_pair_marginals,
    sample_pair_marginals,
)
from unmask.oracles.uniform import UniformOracle
from unmask.oracles.uniform_law import posteriors, uniform_law
from unmask.oracles.uniform_planner import PlannerCommit, uniform_estimators
from unmask.oracles.uniform_rules import (
    EntropyBoundCommit,
    FixedGroups,
    TopKCommit,
    dilated_commit,
    dus_commit,
    interleave_commit,
)
from unmask.oracles.uniform_sample import sample_uniform, sandwich_kl
from unmask.planners import PlanStep, parse_planner
from unmask.sampling import SamplingParams, propose

pytestmark = pytest.mark.usefixtures("one_thread")

CHAINS = ORACLES  # the three small oracles of the masked-process tests, V = 3
V, L = 3, 4
ALL = torch.tensor(list(itertools.product(range(V), repeat=L)))  # every sequence


def brute(chain, y, eps):
    """p(x_i | y) [L, V] and log p(y) by summing p(x) prod_i p(y_i | x_i) over all V^L sequences."""
    joint = chain.log_prob(ALL).exp() * torch.where(ALL == y, 1 - eps + eps / V, eps / V).prod(-1)
    post = torch.stack([torch.stack([joint[ALL[:, i] == v].sum() for v in range(V)]) for i in range(L)])
    return post / joint.sum(), joint.sum().log()


@pytest.mark.parametrize("name", sorted(CHAINS))
def test_posterior_matches_enumeration(name):
    chain = CHAINS[name]()
    g = torch.Generator().manual_seed(5)
    y = torch.randint(0, V, (6, L), generator=g)
    eps = torch.rand(6, L, generator=g, dtype=torch.float64)
    eps[0, 1], eps[1, 2], eps[2] = 0.0, 1.0, 0.3  # clean, re-drawn, one shared level
    post, logz = UniformOracle(chain).posterior(y, eps)
    for r in range(6):
        want, want_z = brute(chain, y[r], eps[r])
        torch.testing.assert_close(post[r], want, rtol=0, atol=1e-14)
        assert abs(float(logz[r] - want_z)) < 1e-13


@pytest.mark.parametrize("name", sorted(CHAINS))
def test_all_noise_gives_prior_marginals_and_no_noise_one_hot(name):
    chain = CHAINS[name]()
    u = UniformOracle(chain)
    y = torch.tensor([[0, 2, 1, 1], [2, 2, 0, 1]])
    masked = torch.full((1, L), chain.spec.mask_id)
    att = torch.ones(1, L, dtype=torch.bool)
    prior = chain(masked, att, att.long().cumsum(-1) - 1)[0, :, :V].exp()  # the masked oracle's marginals
    torch.testing.assert_close(u.posterior(y, 1.0)[0], prior.expand(2, -1, -1), rtol=0, atol=1e-14)
    one_hot = torch.nn.functional.one_hot(y, V).double()
    torch.testing.assert_close(u.posterior(y, 0.0)[0], one_hot, rtol=0, atol=0)
    assert u(y, torch.zeros(2)).isneginf().sum() == 2 * L * (V - 1)  # log 0 off the observed token


def test_blind_is_the_level_mixture():
    chain = CHAINS["hmm"]()
    levels, weights = torch.tensor([0.2, 0.6, 1.0]), torch.tensor([0.5, 0.3, 0.2])
    y = torch.tensor([[1, 0, 2, 2]])
    clean = torch.tensor([[True, False, False, False]])
    num, den = 0, 0
    for lv, w in zip(levels.double(), weights.double()):
        eps = torch.where(clean[0], 0.0, lv).double()
        post, logz = brute(chain, y[0], eps)
        num, den = num + w * logz.exp() * post, den + w * logz.exp()
    got = UniformOracle(chain).blind(y, levels, weights, clean=clean)[0].exp()
    torch.testing.assert_close(got, num / den, rtol=0, atol=1e-14)


def rec_law(u, rule, length, view):
    """An independent exact law: recursion over calls, every re-draw and every joint draw of the commits."""
    out, seen = {}, {}

    def look(y, done, call):  # the posterior and the commits of one canvas, computed once
        key = (tuple(y), tuple(done), call)
        if key not in seen:
            d = torch.tensor([done])
            probs = posteriors(u, torch.tensor([y]), d, view, 0)
            seen[key] = probs, rule(probs, d, call)[0].nonzero().squeeze(-1).tolist()
        return seen[key]

    def go(tokens, done, call, w):
        if all(done):
            out[tuple(tokens)] = out.get(tuple(tokens), 0.0) + w
            return
        free = [i for i in range(length) if not done[i]]
        for redraw in itertools.product(range(V), repeat=len(free)):
            y = list(tokens)
            for i, t in zip(free, redraw):
                y[i] = t
            probs, commit = look(y, done, call)
            for draw in itertools.product(range(V), repeat=len(commit)):
                t2, d2, p = list(tokens), list(done), 1.0
                for i, t in zip(commit, draw):
                    t2[i], d2[i], p = t, True, p * float(probs[0, i, t])
                go(t2, d2, call + 1, w * p / V ** len(free))

    go([0] * length, [False] * length, 0, 1.0)
    return out


@pytest.mark.parametrize("view", ["matched", "blind"])
def test_law_matches_direct_recursion(view):
    u = UniformOracle(CHAINS["markov1"]())
    for rule in (EntropyBoundCommit(0.6), TopKCommit([1, 2], "confidence")):
        law = uniform_law(u, rule, 3, view)
        want = rec_law(u, rule, 3, view)
        got = {tuple(s.tolist()): float(p) for s, p in zip(law.sequences, law.prob)}
        assert set(got) == set(want)
        assert max(abs(got[k] - want[k]) for k in want) < 1e-14
        assert abs(float(law.prob.sum()) - 1) < 1e-13
        one_redraw = uniform_law(u, rule, 3, view, sum_redraws=False)  # the posterior depends on the re-draws
        assert abs(one_redraw.kl - law.kl) > 1e-3


@pytest.mark.parametrize("name", sorted(CHAINS))
def test_told_view_is_the_masked_law(name):
    """Re-drawn tokens carry no information when the denoiser is told the commits: the law is the masked one."""
    chain = CHAINS[name]()
    u = UniformOracle(chain)
    cases = [(FixedGroups([[0, 2], [1], [3]]), "schedule(groups=((0, 2), (1,), (3,)))"),
             (TopKCommit([1, 2, 1], "entropy"), "topk(score='entropy', counts=(1, 2, 1))")]
    for rule, spec in cases:
        law = uniform_law(u, rule, L, "told")
        summed = uniform_law(u, rule, L, "told", sum_redraws=True)
        masked = enumerate_sampler(chain, spec, L, L, prompt=(1,))
        with_prompt = uniform_law(u, rule, L, "told", prompt=(1,))
        torch.testing.assert_close(law.prob, summed.prob, rtol=0, atol=1e-14)
        assert torch.equal(with_prompt.sequences, masked.sequences)
        torch.testing.assert_close(with_prompt.prob, masked.prob, rtol=0, atol=1e-13)
        assert abs(with_prompt.kl - masked.kl) < 1e-13 and with_prompt.expected_calls == 3


def test_one_call_is_the_product_of_first_marginals():
    chain = CHAINS["markov1"]()
    u = UniformOracle(chain)
    law = uniform_law(u, EntropyBoundCommit(100.0), L, "told")
    marg = u.posterior(torch.zeros(1, L, dtype=torch.long), 1.0)[0][0]  # [L, V] prior marginals
    q = marg[torch.arange(L), ALL].prod(-1)
    want = float((q * (q.log() - chain.log_prob(ALL))).sum()) / L
    assert law.expected_calls == 1 and abs(law.kl - want) < 1e-14
    assert uniform_law(u, EntropyBoundCommit(0.0), L, "told").kl < 1e-14  # one position per call (no ties at 0)


def test_entropy_bound_rule_by_hand():
    u3, u2, hot = [1 / 3] * 3, [0.5, 0.5, 0.0], [0.0, 1.0, 0.0]
    probs = torch.tensor([[u3, hot, u2, hot]], dtype=torch.float64)  # entropies ln 3, 0, ln 2, 0
    none = torch.zeros(1, 4, dtype=torch.bool)
    assert EntropyBoundCommit(0.5)(probs, none, 0).tolist() == [[False, True, True, True]]
    assert EntropyBoundCommit(0.7)(probs, none, 0).tolist() == [[True, True, True, True]]
    assert EntropyBoundCommit(0.0)(probs, none, 0).tolist() == [[False, True, True, True]]
    some = torch.tensor([[False, True, False, False]])
    assert EntropyBoundCommit(0.5)(probs, some, 0).tolist() == [[False, False, True, True]]
    assert EntropyBoundCommit(0.0, max_calls=2)(probs, some, 1).tolist() == [[True, False, True, True]]
    assert TopKCommit([1, 3])(probs, none, 0).tolist() == [[False, True, False, False]]  # tie: lower position
    assert TopKCommit([2, 2], "entropy")(probs, some, 0).tolist() == [[False, False, True, True]]


def test_dilated_orders():
    assert dus_commit(8).groups == [[0, 4], [2, 6], [1, 3, 5, 7]]
    assert dilated_commit(6, 3).groups == [[5], [0, 2], [1, 3, 4]]
    assert interleave_commit(6, 3).groups == [[0, 3], [1, 4], [2, 5]]
    with pytest.raises(ValueError, match="groups partition 8 positions"):
        uniform_law(UniformOracle(CHAINS["markov1"]()), dus_commit(8), 4)


@pytest.mark.parametrize("view", ["told", "blind"])
def test_sampled_runs_match_the_exact_law(view):
    chain = CHAINS["hmm"]()
    u = UniformOracle(chain)
    rule = TopKCommit([1, 2, 1], "confidence")
    law = uniform_law(u, rule, L, view)
    n = 20000
    runs = sample_uniform(u, rule, L, n, view, generator=torch.Generator().manual_seed(0))
    code = (runs.sequences * V ** torch.arange(L - 1, -1, -1)).sum(-1)
    freq = torch.bincount(code, minlength=V**L).double() / n
    q = torch.zeros(V**L, dtype=torch.float64)
    q[(law.sequences * V ** torch.arange(L - 1, -1, -1)).sum(-1)] = law.prob
    z = (freq - q).abs() / (q * (1 - q) / n).clamp_min(1e-300).sqrt()
    assert float(z[q > 0].max()) < 4.5 and float(freq[q == 0].sum()) == 0  # 81 cells: Bonferroni at about 5e-4
    pairs_q = sample_pair_marginals(law.sequences, V, 3, weights=law.prob)
    se = (pairs_q * (1 - pairs_q) / n).sqrt()
    assert float(((sample_pair_marginals(runs.sequences, V, 3) - pairs_q).abs() / se.clamp_min(1e-300)).max()) < 4.5
    assert float((exact_pair_marginals(chain, L, 3) - pairs_q).abs().max()) > 1e-3  # the sampler's error is visible
    mean, se_kl = runs.path_kl()
    if view == "told":  # exact in expectation: the commits do not depend on the re-draws
        assert abs(mean - law.kl) < 4 * se_kl
    else:  # an upper bound
        assert mean > law.kl - 4 * se_kl
    assert bool((runs.calls == 3).all())


@pytest.mark.parametrize("view", ["told", "blind"])
def test_sandwich_brackets_the_exact_kl(view):
    u = UniformOracle(CHAINS["markov1"]())
    rule = EntropyBoundCommit(1.0)
    exact = uniform_law(u, rule, L, view).kl
    wide, tight = (sandwich_kl(u, rule, L, 1000, m, view, generator=torch.Generator().manual_seed(1)) for m in (2, 32))
    for est in (wide, tight):
        assert est.lower - 4 * est.lower_se < exact < est.upper + 4 * est.upper_se
    if view == "told":  # every path to x has the same weight: both ends are the path KL, exact in expectation
        assert abs(tight.upper - tight.lower) < 1e-12 and abs(tight.lower - exact) < 4 * tight.lower_se
    else:  # the bracket tightens with more re-draws
        assert tight.upper - tight.lower < (wide.upper - wide.lower) / 4
        assert wide.upper - wide.lower > 0.05


def test_bad_inputs():
    u = UniformOracle(CHAINS["markov1"]())
    y = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="eps must hold noise levels"):
        u.posterior(y, 1.5)
    with pytest.raises(ValueError, match="eps of shape"):
        u.posterior(y, torch.zeros(3))
    with pytest.raises(ValueError, match="tokens must hold token ids"):
        u.posterior(y + 3, 0.5)
    with pytest.raises(ValueError, match="levels must be"):
        u.blind(y, torch.tensor([0.5, 2.0]))
    with pytest.raises(ValueError, match="view must be one of"):
        uniform_law(u, TopKCommit([3]), 3, "masked")
    with pytest.raises(ValueError, match="counts sum to"):
        uniform_law(u, TopKCommit([1, 1]), 3)
    with pytest.raises(ValueError, match="bound must be"):
        EntropyBoundCommit(-1.0)
    with pytest.raises(ValueError, match="chain must be a ChainOracle"):
        UniformOracle("markov1")  # type: ignore[arg-type]
    assert math.isfinite(uniform_law(u, TopKCommit([3]), 3).kl)


# --- any unmask planner as a commit rule --------------------------------------------------------------------

SPECS = ["dilated", "binary", "topk(score='confidence', steps=2)", "topk(score='margin', steps=3)",
         "topk(score='entropy', counts=(1, 3))", "topk(score='random', steps=2)", "eb(gamma=1.0)",
         "threshold(tau=0.6)", "factor(factor=1.0)", "spaced(eb(gamma=2.0), start_stride=8)",
         "spaced(threshold(tau=0.5), start_stride=8)", "interleave(k=2)", "farthest(calls=3)", "entropy_sum(bound=0.5)",
         "dynamic(counts=(1, 1, 2), tau=0.6)"]


@pytest.mark.parametrize("spec", SPECS)
def test_commit_set_is_the_planners_reveal_on_the_engines_step(spec):
    """The adapter's commit set is the planner's reveal on the PlanStep the engine builds with propose()."""
    u = UniformOracle(CHAINS["hmm"]())
    g = torch.Generator().manual_seed(7)
    y = torch.randint(0, V, (8, L), generator=g)
    committed = torch.rand(8, L, generator=g) < 0.4
    committed[:, 0] = False  # something left to commit in every row
    probs = posteriors(u, y, committed, "blind", 0)
    planner = parse_planner(spec)
    rule = PlannerCommit(planner, L)
    for call in range(2):
        noise = Noise.from_seeds(list(range(8))).at(call, torch.arange(L).expand(8, L))
        proposal = propose(probs.log(), SamplingParams(temperature=1.0), noise, planner.needs)
        want = planner.select(PlanStep(~committed, proposal, call, L, 1, noise)).reveal
        got = rule.commit(probs, committed, call, proposal.tokens, noise.uniform(ORDER))
        assert torch.equal(got, want) and bool(got.any(-1).all()) and not (got & committed).any()


def test_planner_law_equals_the_hand_written_rule():
    u = UniformOracle(CHAINS["markov2"]())
    pairs = [("dilated", dus_commit(L)), ("farthest(calls=3)", dilated_commit(L, 3)),
             ("interleave(k=2)", interleave_commit(L, 2)), (f"eb(gamma={0.9 / math.log(2)})", EntropyBoundCommit(0.9))]
    for view in ("told", "matched", "blind"):
        for spec, rule in pairs:
            a, b = uniform_law(u, PlannerCommit(spec, L), L, view), uniform_law(u, rule, L, view)
            assert torch.equal(a.sequences, b.sequences), (spec, view)
            torch.testing.assert_close(a.prob, b.prob, rtol=0, atol=1e-14)
            assert a.expected_calls == pytest.approx(b.expected_calls, abs=1e-12)
            assert a.expected_path_kl == pytest.approx(b.expected_path_kl, abs=1e-12)


@pytest.mark.parametrize("spec", ["threshold(tau=0.5)", "topk(score='confidence', steps=2)", "factor(factor=1.0)",
                                  "topk(score='random', steps=2)", "topk(score='margin', steps=3)"])
def test_told_view_planner_law_is_the_masked_law(spec):
    """Told the commits, the law of any planner is its masked law (enumerate_sampler), draws and orders summed.

    Both score in float32 from float64 posteriors computed two ways (noise-mixed vs masked forward-backward),
    so a threshold may fall the other way on a branch of probability about 1e-8: tolerance 1e-7.
    """
    chain = CHAINS["markov1"]()
    law = uniform_law(UniformOracle(chain), PlannerCommit(spec, L), L, "told", prompt=(1,))
    masked = enumerate_sampler(chain, spec, L, L, prompt=(1,))
    assert torch.equal(law.sequences, masked.sequences)
    torch.testing.assert_close(law.prob, masked.prob, rtol=0, atol=1e-7)
    assert law.expected_calls == pytest.approx(masked.expected_nfe, abs=1e-7)
    assert law.expected_path_kl == pytest.approx(masked.expected_path_kl, abs=1e-7)


def rec_law_drawn(u, rule, length, view):
    """An independent exact law for rules that read the draws or an order: call by call over the states
    (committed tokens), every re-draw, every joint draw of the uncommitted positions and every order."""
    states, call = {(tuple([0] * length), tuple([False] * length)): 1.0}, 0
    while not all(all(d) for _, d in states):
        nxt = {}
        for (tokens, done), w in states.items():
            if all(done):
                nxt[(tokens, done)] = nxt.get((tokens, done), 0.0) + w
                continue
            free = [i for i in range(length) if not done[i]]
            perms = list(itertools.permutations(range(len(free)))) if rule.reads_order else [None]
            for redraw in itertools.product(range(V), repeat=len(free)):
                y = list(tokens)
                for i, t in zip(free, redraw):
                    y[i] = t
                d = torch.tensor([done])
                probs = posteriors(u, torch.tensor([y]), d, view, 0)
                for draw in itertools.product(range(V), repeat=len(free)):
                    drawn, p = list(tokens), 1.0
                    for i, t in zip(free, draw):
                        drawn[i], p = t, p * float(probs[0, i, t])
                    for perm in perms:
                        order = torch.zeros(1, length)
                        if perm is not None:
                            order[0, free] = (torch.tensor(perm, dtype=torch.float32) + 1) / (len(free) + 1)
                        commit = rule.commit(probs, d, call, torch.tensor([drawn]), order)[0].tolist()
                        key = (tuple(drawn[i] if commit[i] else tokens[i] for i in range(length)),
                               tuple(done[i] or commit[i] for i in range(length)))
                        nxt[key] = nxt.get(key, 0.0) + w * p / V ** len(free) / len(perms)
        states, call = nxt, call + 1
    return {tokens: w for (tokens, _), w in states.items()}


@pytest.mark.parametrize("spec", ["threshold(tau=0.6)", "topk(score='random', steps=2)"])
def test_planner_law_matches_direct_recursion(spec):
    u = UniformOracle(CHAINS["hmm"]())
    for view in ("matched", "blind"):
        rule = PlannerCommit(spec, 3)
        law = uniform_law(u, rule, 3, view)
        want = rec_law_drawn(u, rule, 3, view)
        got = {tuple(s.tolist()): float(p) for s, p in zip(law.sequences, law.prob)}
        assert set(got) == {k for k, p in want.items() if p > 0}
        assert max(abs(got[k] - want[k]) for k in got) < 1e-14


def test_estimator_labels_by_enumeration():
    """Each path-KL label against the exact law: exact = equal, upper bound = above, biased = off (here below)."""
    u = UniformOracle(CHAINS["markov1"]())
    below = 0
    for spec in ["dilated", "eb(gamma=1.0)", "topk(score='margin', steps=2)", "topk(score='random', steps=2)",
                 "threshold(tau=0.5)", "topk(score='confidence', steps=2)", "factor(factor=1.0)"]:
        rule = PlannerCommit(spec, L)
        for view in ("told", "matched", "blind"):
            law = uniform_law(u, rule, L, view)
            label = uniform_estimators(rule, view)
            assert label["pair"] == "consistent"
            assert label["sandwich"] == ("refused" if rule.reads_draws else "bracket")
            gap = law.expected_path_kl - law.kl
            if label["path_kl"] == EXACT:
                assert abs(gap) < 1e-12, (spec, view)
            elif label["path_kl"] == BOUND:
                assert gap > 1e-4, (spec, view)
            else:
                assert label["path_kl"] == BIASED and abs(gap) > 1e-3, (spec, view)
                below += gap < 0
    assert below >= 2  # a biased estimate does fall under the truth
    assert uniform_estimators(EntropyBoundCommit(1.0), "told")["path_kl"] == EXACT


def test_sampled_planner_runs_match_the_exact_law():
    chain = CHAINS["hmm"]()
    u = UniformOracle(chain)
    rule = PlannerCommit("threshold(tau=0.6)", L)
    law = uniform_law(u, rule, L, "blind")
    n = 20000
    runs = sample_uniform(u, rule, L, n, "blind", generator=torch.Generator().manual_seed(3))
    code = (runs.sequences * V ** torch.arange(L - 1, -1, -1)).sum(-1)
    freq = torch.bincount(code, minlength=V**L).double() / n
    q = torch.zeros(V**L, dtype=torch.float64)
    q[(law.sequences * V ** torch.arange(L - 1, -1, -1)).sum(-1)] = law.prob
    z = (freq - q).abs() / (q * (1 - q) / n).clamp_min(1e-300).sqrt()
    assert float(z[q > 0].max()) < 4.5 and float(freq[q == 0].sum()) == 0
    calls = runs.calls.double()
    assert abs(float(calls.mean()) - law.expected_calls) < 4.5 * float(calls.std()) / math.sqrt(n)


def test_planner_commit_refusals():
    u = UniformOracle(CHAINS["markov1"]())
    for spec in ("edit(threshold(tau=0.9))", "wino", "remask(dilated, max_calls=4)", "stable(threshold)"):
        with pytest.raises(ValueError, match="uniform-state commit stays"):
            PlannerCommit(spec, L)
    with pytest.raises(ValueError, match="length must be"):
        PlannerCommit("dilated", 0)
    with pytest.raises(ValueError, match="built for 4 generated tokens"):
        uniform_law(u, PlannerCommit("dilated", L), 3)
    with pytest.raises(ValueError, match="pass drawn"):
        PlannerCommit("threshold", L)(torch.full((1, L, V), 1 / 3, dtype=torch.float64), torch.zeros(1, L, dtype=torch.bool), 0)
    with pytest.raises(ValueError, match="sandwich"):
        sandwich_kl(u, PlannerCommit("threshold", L), L, 10, 2)
    with pytest.raises(ValueError, match="planner must be one of"):
        PlannerCommit("nope", L)
