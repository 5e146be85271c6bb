"""model_args parsing: planners and their settings, unknown keys, bad values, model sources."""

from __future__ import annotations

import pytest

from unmask.eval.settings import KNOWN_KEYS, parse_model_args, planner_spec
from unmask.planners import EB, Dilated, Spaced, Threshold, TopK, parse_planner


def test_defaults_are_dus_and_llada_scoring() -> None:
    settings, config = parse_model_args({})
    assert config.planner == Dilated() and config.gen_length == 128 and config.block_length == 32
    assert settings.mc_num == 128 and settings.batch_size == 1 and settings.greedy_check == "reveal"


@pytest.mark.parametrize(
    ("args", "planner"),
    [
        ({"planner": "eb", "gamma": "2"}, EB(gamma=2.0)),
        ({"planner": "threshold", "tau": 0.5}, Threshold(tau=0.5)),
        ({"planner": "dilated", "base": "3", "confidence_threshold": "0.3"}, Dilated(base=3, confidence_threshold=0.3)),
        ({"planner": "topk", "score": "confidence", "counts": "dilated"}, TopK(score="confidence", counts="dilated")),
        ({"planner": "topk", "counts": "16|8|4|2|1|1", "block_length": 32}, TopK(counts=(16, 8, 4, 2, 1, 1))),
        ({"planner": "topk", "counts": [16, 16], "block_length": 32}, TopK(counts=(16, 16))),
        ({"planner": "spaced", "inner": "eb(gamma=2)", "start_stride": "8"}, Spaced(EB(gamma=2.0), start_stride=8)),
        ({"planner": "spaced(threshold(tau=0.5), start_stride=4)"}, Spaced(Threshold(tau=0.5), start_stride=4)),
    ],
)
def test_planner_from_name_and_settings(args: dict, planner: object) -> None:
    assert parse_model_args(args)[1].planner == planner


def test_tempered_scores_reaches_the_sampling_params() -> None:
    assert parse_model_args({})[1].sampling.tempered_scores is False
    config = parse_model_args({"temperature": "0.5", "top_p": "0.9", "tempered_scores": "true"})[1]
    assert config.sampling.tempered_scores is True and config.sampling.temperature == 0.5


def test_unknown_key_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown model_args \['gen_len'\]; the known keys are .*'gen_length'"):
        parse_model_args({"gen_len": 64})
    assert {"pretrained", "planner", "gamma", "mc_num", "batch_size", "inner"} <= set(KNOWN_KEYS)


def test_setting_of_another_planner_is_refused() -> None:
    with pytest.raises(ValueError, match=r"planner 'dilated' does not take \['gamma'\]; its settings are \['base'"):
        parse_model_args({"planner": "dilated", "gamma": 1.0})
    with pytest.raises(ValueError, match="given both as keys and in planner="):
        parse_model_args({"planner": "eb(gamma=1)", "gamma": 2})


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"planner": "nope"}, r"planner must be one of \["),
        ({"batch_size": "auto"}, "batch_size must be a positive int; 'auto'"),
        ({"greedy_check": "maybe"}, r"greedy_check must be one of \('reveal', 'argmax', 'none'\)"),
        ({"gen_length": "many"}, "gen_length must be an int"),
        ({"cache": "disk"}, r"cache must be one of \('auto', 'none', 'prefix', 'dual', 'committed'\)"),
        ({"temperature": "hot"}, "temperature must be a number"),
        ({"gen_length": 100, "block_length": 32}, r"gen_length \(100\) must be divisible by block_length \(32\)"),
        ({"planner": "topk", "steps": 3, "gen_length": 64, "block_length": 32}, "steps must be a multiple"),
        ({"dtype": "int8"}, r"dtype must be one of"),
        ({"mc_num": 0}, "mc_num must be a positive int"),
        ({"tempered_scores": "tempered"}, "tempered_scores must be true or false"),
    ],
)
def test_bad_values_name_the_key(args: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_model_args(args)


@pytest.mark.parametrize(
    "planner",
    [Dilated(), Dilated(base=3, skip_exp=0, confidence_threshold=0.3), TopK(steps=64), TopK(score="margin", counts=(4, 4)),
     EB(gamma=0.5), Spaced(Threshold(tau=0.7), start_stride=4), Spaced(TopK(counts="dilated"))],
)
def test_planner_spec_round_trips(planner: object) -> None:
    assert parse_planner(planner_spec(planner)) == planner  # type: ignore[arg-type]


def test_model_sources_are_checked_before_loading(tmp_path) -> None:  # type: ignore[no-untyped-def]
    UnmaskLM = pytest.importorskip("unmask.eval.lm", reason="needs the eval extra").UnmaskLM
    with pytest.raises(ValueError, match="pretrained=NAME_OR_PATH or factory=module:function"):
        UnmaskLM()
    with pytest.raises(ValueError, match="'module:function' or 'path/file.py:function'"):
        UnmaskLM(factory="no_colon_here")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        UnmaskLM(factory=f"{tmp_path}/missing.py:make")
    with pytest.raises(ValueError, match="no function 'nothing'"):
        UnmaskLM(factory="eval_tasks.scripted:nothing")


def test_factory_builds_the_model() -> None:
    UnmaskLM = pytest.importorskip("unmask.eval.lm", reason="needs the eval extra").UnmaskLM
    lm = UnmaskLM(factory="eval_tasks.scripted:factory", gen_length=32, block_length=16, device="cpu")
    assert lm.spec.mask_id == lm.tokenizer.mask_token_id and lm.world_size == 1 and lm.rank == 0
    assert lm.get_model_info()["unmask"]["planner"] == "dilated"
