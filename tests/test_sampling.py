"""The sampling primitive: exact scores from the clean distribution, correct draws."""

import math

import pytest
import torch

from toy import ToyDenoiser

from unmask import GenerationConfig, generate
from unmask.noise import Noise
from unmask.sampling import TEMPERATURE_MAX, TEMPERATURE_MIN, SamplingParams, _draw_candidates, _draw_full, propose

LOGITS = torch.log(torch.tensor([0.5, 0.25, 0.15, 0.1]))


def noise(n: int, seed: int):
    """Uniforms for one row of ``n`` positions (each position an independent draw)."""
    return Noise.from_seeds([seed]).at(0, torch.arange(n).unsqueeze(0))


def test_greedy_scores():
    p = propose(LOGITS.expand(1, 3, 4), SamplingParams(), need=frozenset({"margin", "entropy"}))
    assert (p.tokens == 0).all() and (p.logq == 0).all()
    assert torch.allclose(p.confidence, torch.tensor(0.5))
    assert torch.allclose(p.margin, torch.tensor(0.25))
    h = -sum(q * math.log(q) for q in (0.5, 0.25, 0.15, 0.1))
    assert torch.allclose(p.entropy, torch.tensor(h, dtype=torch.float32))


def test_optional_scores_only_when_needed():
    p = propose(LOGITS.expand(1, 2, 4), SamplingParams())
    assert p.margin is None and p.entropy is None


def test_temperature_one_draws_from_the_model():
    n = 40000
    p = propose(LOGITS.expand(1, n, 4), SamplingParams(temperature=1.0), noise=noise(n, 0))
    freq = torch.bincount(p.tokens.flatten(), minlength=4).double() / n
    probs = LOGITS.exp().double()
    se = (probs * (1 - probs) / n).sqrt()
    assert ((freq - probs).abs() < 5 * se).all()
    # confidence is the model probability of the drawn token; logq equals it at T=1
    assert torch.allclose(p.confidence, probs[p.tokens].float())
    assert torch.allclose(p.logq.exp(), p.confidence)


def test_top_p_and_top_k_truncate_and_renormalise():
    n = 5000
    p = propose(LOGITS.expand(1, n, 4), SamplingParams(temperature=1.0, top_p=0.7), noise=noise(n, 1))
    assert set(p.tokens.unique().tolist()) == {0, 1}  # 0.5 + 0.25 covers 0.7
    assert torch.allclose(p.logq.exp()[p.tokens == 0], torch.tensor(0.5 / 0.75))
    assert torch.allclose(p.confidence[p.tokens == 1], torch.tensor(0.25))  # scores stay clean
    k = propose(LOGITS.expand(1, n, 4), SamplingParams(temperature=1.0, top_k=1), noise=noise(n, 2))
    assert (k.tokens == 0).all() and torch.allclose(k.logq, torch.tensor(0.0))


def test_low_temperature_sharpens():
    p = propose(LOGITS.expand(1, 4000, 4), SamplingParams(temperature=0.25), noise=noise(4000, 3))
    share = (p.tokens == 0).double().mean()
    expected = 0.5**4 / sum(q**4 for q in (0.5, 0.25, 0.15, 0.1))
    assert abs(share - expected) < 0.03


def test_minus_inf_is_never_drawn():
    logits = torch.tensor([0.0, float("-inf"), 0.0]).expand(1, 2000, 3)
    p = propose(logits, SamplingParams(temperature=1.0), noise=noise(2000, 4))
    assert not (p.tokens == 1).any()


def test_sampling_without_noise_is_refused():
    with pytest.raises(ValueError, match="needs noise"):
        propose(LOGITS.expand(1, 2, 4), SamplingParams(temperature=1.0))


def confident_logits(n: int, vocab: int = 64, seed: int = 0) -> torch.Tensor:
    """``[1, n, vocab]`` float32 logits ~50 whose top token has p ~ 1 - 1e-6, all nearly tied."""
    g = torch.Generator().manual_seed(seed)
    top = 50 + 2 * torch.randn(n, 1, generator=g, dtype=torch.float64)
    z = top - 20 - 10 * torch.rand(n, vocab, generator=g, dtype=torch.float64)  # a far tail
    z[:, 0] = top[:, 0]
    z[:, 1] = top[:, 0] - 13.8 - 0.05 * torch.rand(n, generator=g, dtype=torch.float64)  # the runner-up
    z[:, 2] = float("-inf")  # an excluded token, as the mask id is
    return z.float().unsqueeze(0)


def exact(z: torch.Tensor):
    """float64 scores of the argmax: 1 - p, 1 - margin and the entropy."""
    p = z.double().softmax(-1)
    top2 = p.topk(2, -1).values
    return 1 - top2[..., 0], 1 - top2[..., 0] + top2[..., 1], -torch.xlogy(p, p).sum(-1)


def test_scores_rank_exactly_near_one():
    z = confident_logits(32)
    p = propose(z, SamplingParams(), need=frozenset({"margin", "entropy"}))
    doubt, margin_doubt, entropy = exact(z)
    # the float32 probability cannot separate these positions; its complement and the entropy can
    assert len(p.confidence.unique()) <= 3 and len(doubt.unique()) == 32
    for ours, ref in ((p.doubt, doubt), (p.margin_doubt, margin_doubt), (p.entropy, entropy)):
        assert torch.equal(ours.argsort(stable=True), ref.argsort(stable=True))
        assert torch.allclose(ours.double(), ref, rtol=1e-5, atol=0)  # float32 sums: relative error ~log2(V) 2^-24


def test_scores_of_a_drawn_token_that_is_not_the_argmax():
    logits = torch.tensor([[[3.0, 1.0, 0.5, float("-inf")]]]).expand(1, 400, 4)
    p = propose(logits, SamplingParams(temperature=1.0), noise=noise(400, 5))
    probs = logits[0, 0].double().softmax(-1)
    assert (p.tokens != 0).any()
    assert torch.allclose(p.confidence.double(), probs[p.tokens], rtol=1e-6)
    assert torch.allclose(p.doubt.double(), 1 - probs[p.tokens], rtol=1e-6)


def test_hand_built_proposal_gets_complements():
    from unmask.sampling import Proposal

    conf = torch.tensor([[0.25, 0.75]])
    prop = Proposal(tokens=torch.zeros(1, 2, dtype=torch.long), confidence=conf, logq=torch.zeros(1, 2),
                    margin=conf / 2)
    assert torch.equal(prop.doubt, 1 - conf) and torch.equal(prop.margin_doubt, 1 - conf / 2)


def test_tempered_scores_scores_the_tempered_truncated_distribution():
    """Dream's maskgit_plus: scores from softmax(truncate(logits / T)); the default scores the clean softmax."""
    logits = LOGITS.expand(1, 3, 4)
    clean = propose(logits, SamplingParams(temperature=0.5), noise=noise(3, 6))
    tempered = propose(logits, SamplingParams(temperature=0.5, tempered_scores=True), noise=noise(3, 6))
    assert torch.equal(clean.tokens, tempered.tokens)  # the draw does not change
    q = (LOGITS.double() / 0.5).softmax(-1)
    assert torch.allclose(tempered.confidence.double(), q[tempered.tokens], rtol=1e-6)
    assert torch.allclose(clean.confidence.double(), LOGITS.double().exp()[clean.tokens], rtol=1e-6)
    # greedy with top-p: the scores follow the nucleus {0.5, 0.25} renormalised, as Dream's do at temperature 0
    g = propose(logits, SamplingParams(top_p=0.7, tempered_scores=True), need=frozenset({"margin", "entropy"}))
    assert torch.allclose(g.confidence, torch.tensor(2 / 3)) and torch.allclose(g.margin, torch.tensor(1 / 3))
    h = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))
    assert torch.allclose(g.entropy, torch.tensor(h, dtype=torch.float32))
    assert torch.allclose(propose(logits, SamplingParams(top_p=0.7)).confidence, torch.tensor(0.5))


# ---- the inverse-CDF draw: the exact law, any uniform, any batch ----

INF = float("-inf")


def law_logits(vocab: int = 1100) -> torch.Tensor:
    """``[vocab]`` float32 logits over three chunks of the draw: heavy tokens, a spread tail, ties, -inf entries."""
    g = torch.Generator().manual_seed(3)
    z = -6.0 + 2.0 * torch.randn(vocab, generator=g)
    z[[5, 511, 512, 1099]] = torch.tensor([2.0, 1.5, 1.5, 0.5])  # heavy tokens at chunk edges, a tie
    z[[0, 513, 1023, 1024, 1098]] = INF  # impossible tokens, also at chunk edges
    return z


def exact_law(z: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """The categorical the draw must follow, restated in float64: softmax(z / T), then top-k (ties kept), then
    the nucleus (a token stays while the mass before it, in descending order, is below top_p)."""
    q = (z.double() / params.temperature).softmax(-1)
    if params.top_k is not None:
        q = torch.where(q >= q.topk(params.top_k).values[-1], q, 0.0)
        q = q / q.sum()
    if params.top_p < 1.0:
        srt, order = q.sort(descending=True)
        keep = (srt.cumsum(0) - srt) < params.top_p
        q = torch.zeros_like(q).scatter(0, order, torch.where(keep, srt, 0.0))
        q = q / q.sum()
    return q


def chi2_critical(df: int, z: float = 4.753) -> float:
    """The chi-square quantile at 1 - 1e-6 (z = 4.753) by the Wilson-Hilferty approximation."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


@pytest.mark.parametrize("params", [
    SamplingParams(temperature=1.0),
    SamplingParams(temperature=0.7),
    SamplingParams(temperature=2.5, top_k=4),
    SamplingParams(temperature=1.0, top_p=0.8),
    SamplingParams(temperature=0.8, top_p=0.95, tempered_scores=True),
    SamplingParams(temperature=3.0, top_p=0.9),  # a nucleus wider than the candidates: the full path
    SamplingParams(temperature=1.0, top_k=3, top_p=0.9),
])
def test_draws_follow_the_exact_categorical(params):
    """Chi-square of 32,768 draws (one uniform each) against the exact law, bins of expectation >= 5 (the rest
    pooled), at the 1e-6 level; a token of probability 0 is never drawn."""
    z = law_logits()
    rows, width = 32, 1024
    src = Noise.from_seeds(list(range(100, 100 + rows))).at(0, torch.arange(width).expand(rows, -1))
    p = propose(z.expand(rows, width, -1), params, src)
    n = rows * width
    counts = torch.bincount(p.tokens.flatten(), minlength=z.numel()).double()
    q = exact_law(z, params)
    assert float(counts[q == 0].sum()) == 0.0
    expected = n * q
    big = expected >= 5
    obs = torch.cat([counts[big], counts[~big].sum().reshape(1)])
    exp = torch.cat([expected[big], expected[~big].sum().reshape(1)])
    keep = exp > 0
    chi2 = float(((obs[keep] - exp[keep]) ** 2 / exp[keep]).sum())
    assert chi2 < chi2_critical(int(keep.sum()) - 1), chi2
    # logq is the log-probability of the drawn token under that law
    assert torch.allclose(p.logq.double(), q.log()[p.tokens], atol=1e-5)


def test_a_row_draws_the_same_alone_in_any_batch_and_row():
    g = torch.Generator().manual_seed(8)
    z = 3 * torch.randn(3, 6, 700, generator=g)
    seeds, pos = [4, 2**50 + 9, 77], torch.tensor([[0, 1, 2, 3, 4, 5], [3, 4, 5, 6, 7, 8], [10, 11, 12, 13, 14, 15]])
    params = SamplingParams(temperature=0.9, top_p=0.97)
    batch = propose(z, params, Noise.from_seeds(seeds).at(2, pos)).tokens
    for i in range(3):
        alone = propose(z[i : i + 1], params, Noise.from_seeds([seeds[i]]).at(2, pos[i : i + 1])).tokens
        assert torch.equal(alone[0], batch[i])
    order = [2, 0, 1]
    moved = propose(z[order], params, Noise.from_seeds([seeds[i] for i in order]).at(2, pos[order])).tokens
    assert torch.equal(moved, batch[order])
    other = propose(z, params, Noise.from_seeds(seeds).at(3, pos)).tokens  # the next call draws afresh
    assert not torch.equal(other, batch)


def test_temperatures_outside_float32_are_refused_and_the_ends_inside_work():
    for bad in (1e39, 1e-39, 1e-300, math.inf, math.nan):
        with pytest.raises(ValueError, match=r"temperature must .*\[1\.18e-38, 3\.4e\+38\]"):
            SamplingParams(temperature=bad)
        with pytest.raises(ValueError, match="temperature must"):
            GenerationConfig(gen_length=8, block_length=8, planner="dilated", sampling={"temperature": bad})
    z = torch.tensor([2.0, 0.0, INF, -5.0, 1.0]).expand(1, 4000, -1)
    src = Noise.from_seeds([1]).at(0, torch.arange(4000)[None])
    hot = propose(z, SamplingParams(temperature=TEMPERATURE_MAX), src)  # the law is uniform over finite tokens
    counts = torch.bincount(hot.tokens.flatten(), minlength=5).double()
    assert counts[2] == 0 and bool(((counts[[0, 1, 3, 4]] - 1000).abs() < 5 * math.sqrt(1000 * 0.75)).all())
    cold = propose(z, SamplingParams(temperature=TEMPERATURE_MIN), src)  # the argmax only
    assert bool((cold.tokens == 0).all()) and bool((cold.logq == 0).all())


def test_a_tiny_top_p_keeps_the_argmax():
    """top_p = 1e-300 once dropped every token (float32 rounds it to 0): it leaves the argmax, and its ties."""
    from unmask import GenerationConfig

    z = torch.tensor([[[0.5, 2.0, 1.0, INF], [3.0, 3.0, 0.0, 1.0]]])
    p = propose(z.expand(1, 2, -1).repeat(1, 200, 1), SamplingParams(temperature=1.0, top_p=1e-300),
                Noise.from_seeds([0]).at(0, torch.arange(400)[None]))
    assert bool((p.tokens[0, 0::2] == 1).all()) and set(p.tokens[0, 1::2].tolist()) == {0, 1}
    den = ToyDenoiser()
    cfg = dict(gen_length=16, block_length=8, planner="topk(steps=4)")
    tiny = generate(den, [[1, 2, 3]], GenerationConfig(**cfg, sampling={"temperature": 1.0, "top_p": 1e-300}))
    greedy = generate(den, [[1, 2, 3]], GenerationConfig(**cfg))
    assert torch.equal(tiny.sequences, greedy.sequences)


@pytest.mark.parametrize("params", [
    SamplingParams(temperature=0.7, top_k=5),
    SamplingParams(temperature=1.0, top_p=0.9),
    SamplingParams(temperature=1.3, top_k=40, top_p=0.95),
])
def test_the_candidate_draw_picks_the_full_draws_token(params):
    """On CPU a truncated draw looks at the top candidates only; for the same uniform it picks the token the draw
    over the whole vocabulary picks. Rows that it cannot decide alone (a tie at the k-th value, a nucleus wider
    than the candidates) take the full path, decided per position, so a row draws the same alone."""
    g = torch.Generator().manual_seed(11)
    z = 4.0 * torch.randn(4, 256, 3000, generator=g)
    z[0, :, :] = torch.randn(256, 3000, generator=g).round()  # flat, ties everywhere: the full path
    z[1, ::3, 7] = INF
    src = Noise.from_seeds([1, 2, 3, 4]).at(0, torch.arange(256).expand(4, -1))
    p = propose(z, params, src)
    m = z.max(-1).values
    ok = _draw_candidates(z, m, params, src.uniform64(1))[2]
    assert not bool(ok[0].all()) and bool(ok[1:].any())  # both paths are taken
    full, logq, _ = _draw_full(z, m, params, src.uniform64(1))
    assert torch.equal(p.tokens, full)
    assert torch.allclose(p.logq, logq, atol=1e-5)
    for i in range(4):
        alone = propose(z[i : i + 1], params, Noise.from_seeds([i + 1]).at(0, torch.arange(256)[None]))
        assert torch.equal(alone.tokens[0], p.tokens[i])

