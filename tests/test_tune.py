"""unmask tune: label-free scores, the winner rule, runs on an oracle and on tiny-arith, the CLI."""

import math

import pytest
import torch

from unmask import GenerationConfig, generate, parse_planner
from unmask.cli import main
from unmask.oracles import EXACT, named_oracle
from unmask.tune import Score, TuneConfig, default_candidates, tune, user_candidates
from unmask.tune.candidates import candidate
from unmask.tune.core import pick
from unmask.tune.report import plot_tune, render_markdown
from unmask.tune.scoring import agreement, chain_loglik, self_kl


pytestmark = pytest.mark.usefixtures("one_thread")


def test_chain_loglik_is_the_oracles_exact_likelihood():
    oracle = named_oracle("markov2")
    g = torch.Generator().manual_seed(0)
    prompts = [oracle.sample(1, n, g)[0].tolist() for n in (0, 3, 5, 1)]
    outputs = oracle.sample(4, 6, g)
    ll = chain_loglik(oracle, prompts, outputs, batch_size=3)
    for i, p in enumerate(prompts):
        full = torch.cat([torch.tensor(p, dtype=torch.long), outputs[i]]).unsqueeze(0)
        want = oracle.log_prob(full) - (oracle.log_prob(torch.tensor([p])) if p else 0.0)
        assert abs(float(ll[i] - want)) < 1e-5  # float32 log-softmax per position


def test_self_kl_of_exact_sampling_is_zero_sample_by_sample():
    oracle = named_oracle("hmm")
    cfg = GenerationConfig(gen_length=8, block_length=8, planner="topk(score='random', steps=8)", sampling={"temperature": 1.0},
                           early_exit=False, seed=0)
    out = generate(oracle, [[]] * 16, cfg)
    kl = self_kl(out.trace.token_logq, chain_loglik(oracle, [[]] * 16, out.generated))
    assert kl.abs().max() < 1e-5


def test_agreement_ignores_everything_after_eos():
    eos = (9,)
    ref = torch.tensor([[1, 2, 9, 0], [1, 2, 3, 4], [5, 9, 9, 9]])
    gen = torch.tensor([[1, 2, 9, 7], [1, 2, 3, 5], [5, 4, 9, 9]])
    assert agreement(gen, ref, eos).tolist() == [True, False, False]


def _score(spec, calls, **kw):
    return Score(candidate("x", spec, 32), calls, calls, calls <= 4, **kw)


def test_pick_greedy_prefers_agreement_then_likelihood_then_fewer_calls():
    a = _score("dilated", 5.0, agreement=0.99)  # over budget: never picked
    b = _score("interleave(k=4)", 4.0, agreement=0.90, loglik=-0.02)
    c = _score("threshold(tau=0.9)", 3.0, agreement=0.89, loglik=-0.01)  # within one se of b, likelier
    d = _score("threshold(tau=0.7)", 2.0, agreement=0.50)
    assert pick([a, b, c, d], sampling=False, n=100, js_floor=None) is c
    c.loglik = -0.03
    assert pick([a, b, c, d], sampling=False, n=100, js_floor=None) is b
    with pytest.raises(ValueError, match="budget"):
        pick([a], sampling=False, n=100, js_floor=None)


def test_pick_sampling_trusts_exact_estimates_and_needs_pair_evidence_for_biased_ones():
    exact = _score("interleave(k=4)", 4.0, kl=0.05, kl_status=EXACT, js=0.040)
    worse = _score("dilated(base=2, skip_exp=2)", 4.0, kl=0.30, kl_status=EXACT, js=0.041)
    biased = _score("topk(score='confidence', steps=4)", 4.0, kl=-0.01, kl_status="biased", js=0.035)
    assert pick([exact, worse, biased], sampling=True, n=100, js_floor=0.01) is exact  # low self KL is no evidence
    biased.js = 0.02
    assert pick([exact, worse, biased], sampling=True, n=100, js_floor=0.01) is biased  # beats it by > the floor


def test_default_candidates_fit_and_parse():
    for budget in (2, 3, 5, 8):
        cands = default_candidates(budget, 32, 64)
        assert len({c.spec for c in cands}) == len(cands)
        for c in cands:
            GenerationConfig(gen_length=64, block_length=32, planner=c.spec)
            assert c.fixed_calls is None or c.fixed_calls <= budget
        assert {"DUS", "interleave", "farthest", "top-k confidence", "threshold", "EB", "spaced eb"} <= {c.family for c in cands}
    with pytest.raises(ValueError, match="budget"):
        default_candidates(0, 32, 32)
    with pytest.raises(ValueError, match="planner"):
        user_candidates(["nope"], 32)


def test_tune_on_markov2_picks_interleave(tmp_path):
    oracle = named_oracle("markov2")
    specs = ["dilated(base=2, skip_exp=2)", "interleave(k=4)", "topk(score='confidence', steps=4)", "threshold(tau=0.9)"]
    cfg = TuneConfig(budget=4, temperature=1.0, batch_size=128, search=0)
    res = tune(oracle, [[]] * 64, [[]] * 32, user_candidates(specs, 32), cfg)
    by = {s.candidate.spec: s for s in res.scores}
    assert res.spec == "interleave(k=4)" and res.winner.kl_status == EXACT
    assert by["threshold(tau=0.9)"].screened == 32 and not by["threshold(tau=0.9)"].eligible  # ~30 calls per block
    assert by["topk(score='confidence', steps=4)"].kl_status == "biased"
    assert by["dilated(base=2, skip_exp=2)"].kl > 3 * by["interleave(k=4)"].kl  # 0.39 against 0.045
    assert res.js_floor is not None and res.report.kl is not None and res.n_report == 32
    assert "**interleave" in render_markdown(res)
    assert plot_tune(res, tmp_path / "t.png").stat().st_size > 10_000


def test_search_finds_a_schedule_at_least_as_good_as_its_start():
    oracle = named_oracle("markov2")
    runs = (tuple(range(0, 4)), tuple(range(4, 12)), tuple(range(12, 32)))  # runs of adjacent tokens: ~2 nats/token
    cfg = TuneConfig(budget=3, temperature=1.0, batch_size=128, search=25)
    res = tune(oracle, [[]] * 48, [[]] * 16, user_candidates([f"schedule(groups={runs})"], 32), cfg)
    start = res.scores[0]
    assert len(res.scores) == 2  # single moves out of the runs gain far more than two standard errors
    found = res.scores[1]
    assert found.candidate.family == "searched" and found.kl < start.kl - 0.1 and found.eligible
    assert parse_planner(found.candidate.spec).calls_per_block(32, 1) == 3 and res.winner is found
    assert TuneConfig(budget=3).search_evals == 0 and TuneConfig(budget=3, temperature=1.0).search_evals == 200
    with pytest.raises(ValueError, match="search"):
        TuneConfig(budget=3, search=-1)


def test_search_does_not_replace_an_optimal_schedule_with_noise():
    """On the first-order chain DUS at 4 calls is the optimum (exact KL 6e-6): no searched schedule may replace it."""
    oracle = named_oracle("markov1")
    cfg = TuneConfig(budget=4, temperature=1.0, batch_size=128, search=40)
    res = tune(oracle, [[]] * 128, [[]] * 16, user_candidates(["dilated(base=2, skip_exp=2)"], 32), cfg)
    assert [s.candidate.spec for s in res.scores] == ["dilated(base=2, skip_exp=2)"]
    assert res.spec == "dilated(base=2, skip_exp=2)"


def _greedy_check(den, ids, specs, budget, n_cal):
    res = tune(den, ids[:n_cal], ids[n_cal:], user_candidates(specs, 32), TuneConfig(budget=budget, screen=8))
    best = max(s.agreement for s in res.scores if s.eligible)
    assert res.winner.eligible and res.winner.agreement >= best - math.sqrt(1 / n_cal)
    assert all(0 <= s.agreement <= 1 for s in res.scores if s.agreement is not None)
    assert res.report.agreement is not None and res.n_calibration == n_cal
    return res


def test_tune_greedy_on_an_oracle():
    oracle = named_oracle("markov1")
    g = torch.Generator().manual_seed(0)
    ids = [oracle.sample(1, 4, g)[0].tolist() for _ in range(200)]
    ids = [list(p) for p in dict.fromkeys(map(tuple, ids))][:48]  # distinct prompts
    specs = ["dilated(base=2, skip_exp=2)", "topk(score='confidence', steps=4)", "threshold(tau=0.5)", "eb(gamma=0.5)"]
    res = _greedy_check(oracle, ids, specs, 4, 32)
    assert any(s.loglik is not None for s in res.scores)  # the near-best were rescored by likelihood
    with pytest.raises(ValueError, match="disjoint"):
        tune(oracle, ids[:4], ids[3:6], user_candidates(specs, 32), TuneConfig(budget=4))


def test_cli_tune_on_tiny_arith(tmp_path, capsys):
    """As a new user runs it: the bundled model, a prompts file, a budget; a winner spec comes out."""
    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(["Q:26+34-6+33;", "Q:80-30+89;", "Q:27+97*4;", "Q:15*8-3;", "Q:5+7;", "Q:9*9;"]))
    code = main(["tune", "--model", "tiny-arith", "--prompts", str(prompts), "--budget", "2", "--plot",
                 str(tmp_path / "t.png"), "--candidates", "dilated(base=6, skip_exp=1)", "threshold(tau=0.7)"])
    out = capsys.readouterr().out
    assert code == 0 and "3 prompts" in out and "winner: " in out and (tmp_path / "t.png").exists()


def test_cli_tune_on_an_oracle(tmp_path, capsys):
    plot = tmp_path / "f.png"
    md = tmp_path / "f.md"
    code = main(["tune", "--model", "oracle:markov1", "--budget", "4", "--samples", "32", "--search", "0", "--plot", str(plot),
                 "--markdown", str(md), "--candidates", "dilated(base=2, skip_exp=2)", "interleave(k=4)",
                 "topk(score='margin', steps=4)"])
    out = capsys.readouterr().out
    assert code == 0 and "winner: dilated(base=2, skip_exp=2)" in out and plot.exists() and md.exists()
    parse_planner(out.split("--planner \"")[1].split("\"")[0])  # the printed spec is a valid planner


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "oracle:markov1", "--budget", "0"], "budget must be a positive int"),
        (["--model", "oracle:markov1", "--budget", "40"], "budget must be <= block_length"),
        (["--model", "oracle:nope", "--budget", "4"], "oracle must be one of"),
        (["--model", "oracle:markov1", "--budget", "4", "--candidates", "bogus(x=1)"], "planner must be one of"),
        (["--model", "tiny-arith", "--budget", "4"], "--prompts FILE is required"),
        (["--model", "tiny-arith", "--budget", "4", "--prompts", "/nonexistent.txt"], "does not exist"),
        (["--model", "oracle:markov1", "--budget", "4", "--plot", "/nonexistent/dir/p.png"], "folder does not exist"),
        (["--model", "oracle:markov1", "--budget", "4", "--samples", "1"], "--samples"),
    ],
)
def test_cli_tune_bad_input_is_one_line(argv, message, capsys):
    assert main(["tune", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_cli_tune_report_size_is_checked(tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("1 2\n3\n0 1\n2 2\n")
    assert main(["tune", "--model", "oracle:markov1", "--budget", "4", "--prompts", str(prompts), "--report", "3"]) == 2
    assert "--report" in capsys.readouterr().err
    prompts.write_text("1 2\nx y\n0 1\n")
    assert main(["tune", "--model", "oracle:markov1", "--budget", "4", "--prompts", str(prompts)]) == 2
    assert "line 2" in capsys.readouterr().err
