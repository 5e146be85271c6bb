"""The plugin as SGLang finds it: entry point, registry lookup, server flags, config checks, the CPU environment."""

from __future__ import annotations

import argparse
import json
from importlib.metadata import entry_points
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from sglang.srt.dllm.algorithm import algo_name_to_cls, get_algorithm, get_algorithm_cls
from sglang.srt.dllm.config import DllmConfig
from sglang.srt.plugins import GENERAL_PLUGINS_GROUP, load_plugins

from unmask.planners import PLANNERS
from unmask_sglang.algorithm import ALGORITHMS, ARCHITECTURES, UnmaskAlgorithm
from unmask_sglang.counting import ENV, count_steps
from unmask_sglang.settings import DEFAULT_SPECS, NEEDS_SPEC, NOT_SERVED, Settings, algorithm_name

EXAMPLES = Path(__file__).parents[1] / "examples"
NAMES = ["unmask-dus", "unmask-binary", "unmask-topk", "unmask-eb", "unmask-threshold", "unmask-factor",
         "unmask-spaced", "unmask-interleave", "unmask-farthest", "unmask-schedule", "unmask-dynamic",
         "unmask-entropy_sum", "unmask-edit", "unmask-wino", "unmask-remask", "unmask-stable"]
SCHEDULE = {"planner": "schedule(groups=((0, 16), (8, 24), " + repr(tuple(i for i in range(32) if i % 8)) + "))"}


def config(name: str, algorithm_config: dict, block_size: int = 32) -> DllmConfig:
    return DllmConfig(algorithm=name, algorithm_config=algorithm_config, block_size=block_size, mask_id=156895,
                      max_running_requests=4)


def test_the_entry_point_is_in_sglangs_general_plugin_group() -> None:
    assert GENERAL_PLUGINS_GROUP == "sglang.srt.plugins"
    (ep,) = [ep for ep in entry_points(group=GENERAL_PLUGINS_GROUP) if ep.dist and ep.dist.name == "unmask-sglang"]
    assert (ep.name, ep.value) == ("unmask", "unmask_sglang.plugin:register")


def test_every_planner_resolves_through_sglangs_lookup_after_loading_plugins() -> None:
    assert sorted(ALGORITHMS) == sorted(NAMES) == sorted(algorithm_name(k) for k in PLANNERS if k not in NOT_SERVED)
    assert set(NOT_SERVED) <= set(PLANNERS)  # every exclusion names a planner of the registry
    for kind in NOT_SERVED:
        with pytest.raises(ValueError, match="does not run in SGLang"):
            Settings.parse(kind, None, 32)
    assert not set(NAMES) & set(algo_name_to_cls)  # nothing registered them yet
    load_plugins()  # SGLang's own loader: discovers the entry point and runs register()
    for name in NAMES:
        cls = get_algorithm_cls(name)
        assert cls is ALGORITHMS[name] and issubclass(cls, UnmaskAlgorithm)
        algo = get_algorithm(config(name, SCHEDULE if name == "unmask-schedule" else {}))  # the default planner
        assert algo.settings.planner.name == cls.kind and algo.block_size == 32
        assert cls.supported_architectures == ARCHITECTURES
    assert get_algorithm_cls("LowConfidence") is algo_name_to_cls["LowConfidence"]  # SGLang's own stay


def test_sglangs_server_flags_accept_the_readme_command() -> None:
    from sglang.srt.server_args import ServerArgs

    parser = argparse.ArgumentParser()
    ServerArgs.add_cli_args(parser)
    args = parser.parse_args(["--model-path", "inclusionAI/LLaDA2.0-mini", "--trust-remote-code",
                              "--dllm-algorithm", "unmask-dus", "--dllm-algorithm-config", "dus.yaml",
                              "--tp-size", "2"])
    assert (args.dllm_algorithm, args.dllm_algorithm_config, args.tp_size) == ("unmask-dus", "dus.yaml", 2)


def test_low_confidence_steps_on_cpu_tensors() -> None:
    """The CPU environment runs SGLang's own algorithm, as it runs the adapters."""
    algo = get_algorithm_cls("LowConfidence")(DllmConfig("LowConfidence", {"threshold": 0.9}, 4, 9, 1))
    fb = SimpleNamespace(batch_size=1, input_ids=torch.tensor([1, 9, 9, 9]), dllm_prompt_mask=None)
    logits = torch.zeros(4, 10)
    logits[1, 3] = logits[2, 4] = 10.0  # two confident positions; the third stays masked
    assert algo.step(fb, logits, [None]) == [False]
    assert fb.input_ids.tolist() == [1, 3, 4, 9]


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_example_configs_build_their_algorithm(path: Path) -> None:
    name = algorithm_name("dilated" if path.stem == "dus" else path.stem)
    algo = ALGORITHMS[name](config(name, yaml.safe_load(path.read_text())))
    assert algo.settings.planner.name == ALGORITHMS[name].kind


def test_defaults_parse_for_every_planner() -> None:
    for kind in DEFAULT_SPECS:
        assert Settings.parse(kind, None, 32).planner.name == kind
    assert set(DEFAULT_SPECS) | set(NEEDS_SPEC) == set(PLANNERS) - set(NOT_SERVED)
    assert not set(DEFAULT_SPECS) & set(NEEDS_SPEC)
    with pytest.raises(ValueError, match=r"unmask-schedule needs a planner spec: .*schedule\(groups="):
        Settings.parse("schedule", None, 32)
    assert Settings.parse("schedule", SCHEDULE, 32).planner.calls_per_block(32, 1) == 3


@pytest.mark.parametrize(("name", "values", "message"), [
    ("unmask-dus", {"planner": "eb(gamma=1)"}, "use --dllm-algorithm unmask-eb"),
    ("unmask-dus", {"threshold": 0.9}, r"unknown key\(s\) \['threshold'\]"),
    ("unmask-dus", {"temperature": -1}, "temperature must be"),
    ("unmask-dus", {"top_p": 0}, "top_p must be"),
    ("unmask-dus", {"seed": None}, "seed must be an int >= 0"),
    ("unmask-dus", {"planner": 3}, "planner must be a spec string"),
    ("unmask-dus", {"planner": "dilated(base=1)"}, "base must be"),
    ("unmask-topk", {"planner": "topk(counts=(4, 4))"}, "counts must sum to block_length=32"),
    ("unmask-topk", {"planner": "topk(steps=40)"}, r"steps per block must be in \[1, block_length=32\]"),
])
def test_bad_configs_stop_the_server_at_start_naming_the_key(name: str, values: dict, message: str) -> None:
    with pytest.raises(ValueError, match=f"--dllm-algorithm-config of {name}.*{message}"):
        ALGORITHMS[name](config(name, values))


def test_step_counting_is_opt_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Probe:  # a stand-in algorithm: one forward per step, blocks of 2
        block_size, mask_id = 2, 9

        def step(self, fb, logits, states):
            fb.input_ids.fill_(1)
            return [False] * fb.batch_size

    monkeypatch.delenv(ENV, raising=False)
    count_steps({"probe": Probe})
    assert not list(tmp_path.iterdir())
    monkeypatch.setenv(ENV, str(tmp_path))
    count_steps({"probe": Probe})
    count_steps({"probe": Probe})  # wrapped once only
    fb = SimpleNamespace(batch_size=2, input_ids=torch.tensor([9, 9, 1, 1]), dllm_prompt_mask=None)
    Probe().step(fb, None, None)
    Probe().step(fb, None, None)
    (out,) = tmp_path.iterdir()
    assert json.loads(out.read_text()) == {"steps": 2, "block_steps": 1}  # one block had masks, in the first step
