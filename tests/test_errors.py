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
        (dict(sampling=dict(score_temperature=1)), "score_temperature must be True or False"),
        (dict(sampling=dict(temp=1.0)), r"sampling has no field\(s\) \['temp'\]"),
        (dict(sampling=0.5), "sampling must be a SamplingParams or a dict"),
        (dict(early_exit="no"), "early_exit must be True or False"),
        (dict(compile=1), "compile must be True or False"),
        (dict(seed="abc"), "seed must be an int >= 0 or None"),
        (dict(seed=-1), "seed must be an int >= 0 or None"),
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
