"""Every bad input raises ValueError naming the argument and what is allowed, before any compute."""

import pytest
import torch

from toy import ToyDenoiser
from unmask import GenerationConfig, TokenSpec, generate


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(gen_length=30, block_length=8), r"gen_length \(30\) must be divisible by block_length \(8\)"),
        (dict(gen_length=0), "gen_length must be a positive int"),
        (dict(block_length=-4), "block_length must be a positive int"),
        (dict(planner="greedy"), "planner must be one of"),
        (dict(planner="topk(score='loud', steps=4)"), "score must be one of"),
        (dict(planner="threshold(tau=1.2)"), r"tau must be in \(0, 1\]"),
        (dict(planner="eb(gamma=-0.5)"), "gamma must be a finite number >= 0"),
        (dict(planner="dilated(base=1)"), "base must be an int >= 2"),
        (dict(planner="topk(steps=3)", gen_length=64, block_length=32), "steps must be a multiple of the number of blocks"),
        (dict(planner="topk(counts=(4, 4))", block_length=16, gen_length=32), "counts must sum to block_length=16"),
        (dict(sampling=dict(temperature=-1.0)), "temperature must be a finite number >= 0"),
        (dict(sampling=dict(top_p=0.0)), r"top_p must be in \(0, 1\]"),
        (dict(sampling=dict(top_p=1.5)), r"top_p must be in \(0, 1\]"),
        (dict(sampling=dict(top_k=0)), "top_k must be a positive int"),
        (dict(sampling=dict(tempered_scores=1)), "tempered_scores must be True or False"),
        (dict(sampling=dict(temp=1.0)), r"sampling has no field\(s\) \['temp'\]"),
        (dict(sampling=0.5), "sampling must be a SamplingParams or a dict"),
        (dict(early_exit="no"), "early_exit must be True or False"),
        (dict(compile=1), "compile must be True or False"),
        (dict(seed="abc"), r"seed must be an int in \[0, 2\^63\) or None"),
        (dict(seed=-1), r"seed must be an int in \[0, 2\^63\) or None"),
        (dict(seed=2**63), r"seed must be an int in \[0, 2\^63\) or None, got 9223372036854775808"),
        (dict(seed=2**200), r"seed must be an int in \[0, 2\^63\) or None"),
        (dict(cfg_scale=True), "cfg_scale must be"),
        (dict(stop=""), "stop must be a sequence of non-empty strings"),
        (dict(stop=(1,)), "stop must be a sequence of non-empty strings"),
        (dict(cfg_scale=-1.0), "cfg_scale must be"),
        (dict(cache="full"), "cache must be one of"),
        (dict(stop=("",)), "stop must be a sequence of non-empty strings"),
    ],
)
def test_config_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GenerationConfig(**kwargs)


class Exploding(ToyDenoiser):
    def __call__(self, input_ids, attention_mask, position_ids, window=None):
        logits = super().__call__(input_ids, attention_mask, position_ids, window)
        logits[0, -1, 3] = self.bad
        return logits


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_logits_are_an_error(bad):
    den = Exploding()
    den.bad = bad
    with pytest.raises(ValueError, match="NaN or \\+inf"):
        generate(den, [[1, 2]], GenerationConfig(gen_length=8, block_length=8))


def test_minus_inf_logits_mean_probability_zero():
    den = Exploding()
    den.bad = float("-inf")
    out = generate(den, [[1, 2]], GenerationConfig(gen_length=8, block_length=8, early_exit=False))
    assert out.generated[0, -1] != 3


class Counting(ToyDenoiser):
    def __call__(self, *args):
        raise AssertionError("the denoiser must not be called for bad input")


@pytest.mark.parametrize(
    "prompts, match",
    [
        ([], "at least one prompt"),
        ([[1, 2], [1] * 60], r"prompts\[1\] has 60 tokens; with gen_length=8 that is 68, over the model's maximum length 64"),
        ([[1, 23]], r"prompts\[0\] holds token id 23: ids must lie in \[0, 24\) and not be the mask id 23"),
        ([[1, 99]], r"prompts\[0\] holds token id 99"),
        ("hello", "prompts must be a batch of token-id sequences"),
        (torch.zeros(2, 2, 2, dtype=torch.long), "1-D or 2-D"),
    ],
)
def test_prompt_errors_before_compute(prompts, match):
    with pytest.raises(ValueError, match=match):
        generate(Counting(max_length=64), prompts, GenerationConfig(gen_length=8, block_length=8))


def test_cache_needs_a_caching_denoiser():
    with pytest.raises(ValueError, match="supports only cache='none'"):
        generate(Counting(), [[1]], GenerationConfig(gen_length=8, block_length=8, cache="dual"))


def test_token_spec_errors():
    with pytest.raises(ValueError, match="mask_id must lie in"):
        TokenSpec(mask_id=10, eos_ids=(1,), pad_id=0, vocab_size=10)
    with pytest.raises(ValueError, match="must not be one of eos_ids"):
        TokenSpec(mask_id=1, eos_ids=(1,), pad_id=0, vocab_size=10)


@pytest.mark.parametrize(
    "prompts, match",
    [
        ([[1, 2.0]], r"prompts\[0\] holds 2.0 of type float: token ids must be ints"),
        ([[1, True]], r"prompts\[0\] holds True of type bool"),
        ([torch.tensor([1.0, 2.0])], r"prompts\[0\] must be a 1-D integer tensor"),
        (torch.tensor([[1.0, 2.0]]), r"prompts\[0\] must be a 1-D integer tensor"),
    ],
)
def test_token_ids_are_never_truncated_silently(prompts, match):
    with pytest.raises(ValueError, match=match):
        generate(Counting(), prompts, GenerationConfig(gen_length=8, block_length=8))


def test_config_may_be_a_dict_of_its_fields_and_nothing_else():
    out = generate(ToyDenoiser(), [[1, 2]], {"gen_length": 8, "block_length": 4, "planner": "dilated"})
    assert out.nfe == 2 * 2
    with pytest.raises(ValueError, match=r"config has no field\(s\) \['gen_len'\]"):
        generate(Counting(), [[1]], {"gen_len": 8})
    with pytest.raises(ValueError, match="config must be a GenerationConfig, a dict of its fields or None"):
        generate(Counting(), [[1]], "dilated")


def test_denoiser_must_implement_the_contract():
    class Plain:  # a callable with a spec, but not a Denoiser
        spec = ToyDenoiser().spec

        def __call__(self, ids, am, pos):
            raise AssertionError("never called")

    with pytest.raises(ValueError, match="denoiser must be an unmask.Denoiser"):
        generate(Plain(), [[1]], GenerationConfig(gen_length=8, block_length=8))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(eos_ids=()), "eos_ids must be a non-empty tuple"),
        (dict(eos_ids=[5]), "eos_ids must be a non-empty tuple"),
        (dict(eos_ids=(12,)), r"eos_ids must be ints in \[0, vocab_size=10\)"),
        (dict(mask_id=1.0), "mask_id must be an int"),
        (dict(max_length=0), "max_length must be a positive int or None"),
    ],
)
def test_token_spec_fields(kwargs, match):
    fields = dict(mask_id=9, eos_ids=(8,), pad_id=0, vocab_size=10) | kwargs
    with pytest.raises(ValueError, match=match):
        TokenSpec(**fields)


def test_guidance_on_an_exact_oracle_keeps_impossible_tokens_impossible():
    """-inf logits (probability zero) under guidance: u + (s+1)(c - u) would be NaN; it must stay -inf."""
    from unmask.oracles import MarkovOracle

    oracle = MarkovOracle(vocab_size=6, order=1, concentration=0.3, seed=0)
    out = generate(oracle, [[1, 2, 3]], GenerationConfig(gen_length=8, block_length=8, cfg_scale=1.5))
    assert not (out.generated == oracle.spec.mask_id).any()
    assert ((out.generated >= 0) & (out.generated < 6)).all()  # never the dedicated EOS, which has probability zero


# ---------------------------------------------------------------- a new user's pass (issue 19), API side


def test_seed_rule_is_one_bound_for_the_config_the_seeds_and_the_server():
    from unmask.names import SEED_LIMIT
    from unmask.serve import plan

    assert SEED_LIMIT == 2**63 and plan.SEED_LIMIT is SEED_LIMIT
    GenerationConfig(seed=2**63 - 1)  # the largest seed is accepted
    with pytest.raises(ValueError, match=r"seeds\[1\] must be an int in \[0, 2\^63\), got 9223372036854775808"):
        generate(Counting(), [[1], [2]], GenerationConfig(gen_length=8, block_length=8), seeds=[0, 2**63])
    out = generate(ToyDenoiser(), [[1]], GenerationConfig(gen_length=8, block_length=8), seeds=[2**63 - 1])
    assert out.generated.shape == (1, 8)


def test_stop_without_a_tokenizer_is_refused_before_compute():
    with pytest.raises(ValueError, match=r"stop=\('\\n',\) needs a tokenizer: stop strings are matched in decoded text"):
        generate(Counting(), [[1]], GenerationConfig(gen_length=8, block_length=8, stop=("\n",)))


@pytest.mark.parametrize("tokenizer", ["x", 3, object()])
def test_a_tokenizer_that_cannot_decode_is_refused_before_compute(tokenizer):
    with pytest.raises(ValueError, match="tokenizer must have a decode"):
        generate(Counting(), [[1]], GenerationConfig(gen_length=8, block_length=8), tokenizer=tokenizer)


@pytest.mark.parametrize("spec, name", [("interleave(k=64)", "k"), ("farthest(calls=100)", "calls")])
def test_fixed_schedules_take_at_most_one_call_per_position(spec, name):
    """interleave's k and farthest's calls follow one rule: at most block_length calls."""
    with pytest.raises(ValueError, match=rf"{name} must be <= block_length=32 \(one call per position at most\)"):
        GenerationConfig(gen_length=32, block_length=32, planner=spec)
    GenerationConfig(gen_length=32, block_length=32, planner=spec.replace("64", "32").replace("100", "32"))


@pytest.mark.parametrize(
    "spec, match",
    [
        ("topk(score=margin)", r"topk\(score=margin\)'?: score=margin is not a literal; .* quote a string: score='margin'"),
        ("threshold(tau=float('nan'))", r"tau=float\('nan'\) is not a literal; settings are numbers, quoted strings"),
        ("dilated(base=2**3)", r"base=2 \*\* 3 is not a literal"),
        ("spaced(inner=greedy)", "inner=greedy is not a literal"),
    ],
)
def test_planner_values_must_be_literals_and_the_argument_is_quoted(spec, match):
    from unmask import parse_planner

    with pytest.raises(ValueError, match=match):
        parse_planner(spec)
    assert parse_planner("spaced(inner=eb)").inner.name == "eb"  # a planner name is a value


def test_planner_spec_must_be_a_string():
    from unmask import parse_planner

    with pytest.raises(ValueError, match="planner spec must be a string such as 'dilated\\(base=2\\)', got None"):
        parse_planner(None)


@pytest.mark.parametrize("bad", [None, 3, ""])
def test_load_names_what_it_takes(bad):
    import unmask

    with pytest.raises(ValueError, match="name_or_path must be a checkpoint directory, a Hugging Face Hub id or a "
                                         "bundled name \\(tiny-arith\\), got"):
        unmask.load(bad)


def test_load_of_a_file_says_it_is_a_file(tmp_path):
    import unmask

    file = tmp_path / "afile.txt"
    file.write_text("x")
    with pytest.raises(ValueError, match="is a file; give the checkpoint directory that holds config.json"):
        unmask.load(file)


def test_device_meta_is_refused():
    from unmask.models.loading import default_device

    with pytest.raises(ValueError, match="device 'meta' holds no data"):
        default_device("meta")


def test_oracle_tables_are_bounded_before_allocation():
    from unmask.oracles import HMMOracle, MarkovOracle
    from unmask.oracles.markov import MAX_TABLE, check_table

    check_table("x", MAX_TABLE, "")  # the bound itself fits
    with pytest.raises(ValueError, match=r"MarkovOracle\(vocab_size=1000000, order=1\): its exact tables need 1e\+12 "
                                         r"float64 entries \(7.45e\+03 GiB\); the exact oracles hold at most 2\^26"):
        MarkovOracle(vocab_size=10**6)
    with pytest.raises(ValueError, match="vocab_size <= 8192 for order 1, <= 406 for order 2"):
        MarkovOracle(vocab_size=8193)
    with pytest.raises(ValueError, match="order=2"):
        MarkovOracle(vocab_size=407, order=2)
    assert 407 * 408 * 407 > MAX_TABLE >= 406 * 407 * 406  # the limits quoted in the message
    with pytest.raises(ValueError, match=r"HMMOracle\(num_states=8, vocab_size=10000000\)"):
        HMMOracle(8, 10**7)
