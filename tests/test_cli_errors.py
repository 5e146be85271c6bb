"""Bad input at the command line: one clear line on stderr, exit 2, and nothing computed first.

``BAD_INPUTS`` is the table: one row per mistake, with the words the error
must contain and whether it must be caught before the model is read. Paths
written ``{name}`` are the broken checkpoints of the ``broken`` fixture.
Extend it for every new command-line input.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import torch

from unmask.cli import main
from unmask.models.loading import BUNDLED

HAS_LM_EVAL = importlib.util.find_spec("lm_eval") is not None
HAS_CUDA = torch.cuda.is_available()
SCRIPTED = "factory=eval_tasks.scripted:factory"


class Bad(NamedTuple):
    argv: list[str]
    message: str  # must appear in the one line on stderr
    before_load: bool = False  # refused before the model (or its tokenizer) is read
    needs: str = ""  # "lm_eval": the row needs the eval extra; "no_cuda": a machine without CUDA; "hide_lm_eval"


BAD_INPUTS: dict[str, Bad] = {
    # unmask generate
    "unknown character": Bad(["generate", "--model", "tiny-arith", "Q:1+x;"],
                             "prompts[0] 'Q:1+x;' holds 'x', which the tokenizer does not know (it would read '<pad>'); "
                             "it knows only the characters ' *+-0123456789:;=AQ'"),
    "config.json not JSON": Bad(["generate", "--model", "{bad_json}", "Q:1+2;"], "config.json' is not valid JSON: "),
    "corrupt safetensors": Bad(["generate", "--model", "{corrupt}", "Q:1+2;"],
                               "model.safetensors' is not a readable safetensors file: "),
    "cuda without a GPU": Bad(["generate", "--model", "tiny-arith", "--device", "cuda", "Q:1+2;"],
                              "device 'cuda' was asked for, but CUDA is not available here", needs="no_cuda"),
    "unknown model_type": Bad(["generate", "--model", "{unknown_type}", "Q:1+2;"],
                              "has model_type 'bert', which is not a family unmask runs natively (llada: model_type "
                              "'llada' or architectures LLaDAModelLM; dream: model_type 'dream'"),
    "remote code without code": Bad(["generate", "--model", "tiny-arith", "--remote-code", "Q:1+2;"],
                                    "native=False (--remote-code) runs a checkpoint's own code, and"),
    "--file /dev/null": Bad(["generate", "--model", "tiny-arith", "--file", "/dev/null"],
                            "--file '/dev/null' holds no prompt", before_load=True),
    "--file a directory": Bad(["generate", "--model", "tiny-arith", "--file", "/"], "--file '/' is a directory",
                              before_load=True),
    "--png with another suffix": Bad(["generate", "--model", "tiny-arith", "--png", "out.xyz", "Q:1+2;"],
                                     "--png 'out.xyz': the file name must end in .png or .svg or .pdf", before_load=True),
    "--html with another suffix": Bad(["generate", "--model", "tiny-arith", "--html", "out.txt", "Q:1+2;"],
                                      "--html 'out.txt': the file name must end in .html or .htm", before_load=True),
    "--seed not an int": Bad(["generate", "--model", "tiny-arith", "--seed", "abc", "Q:1+2;"],
                             "argument --seed: invalid int value: 'abc'", before_load=True),
    "--temperature not a number": Bad(["generate", "--model", "tiny-arith", "--temperature", "hot", "Q:1+2;"],
                                      "argument --temperature: invalid float value: 'hot'", before_load=True),
    # unmask demo
    "demo --html with another suffix": Bad(["demo", "--html", "demo.txt"],
                                           "--html 'demo.txt': the file name must end in .html or .htm", before_load=True),
    # unmask eval
    "eval without lm-eval": Bad(["eval", "--tasks", "gsm8k"], 'not installed: pip install -e ".[eval]"',
                                before_load=True, needs="hide_lm_eval"),
    "eval seed not an int": Bad(["eval", "--model_args", f"{SCRIPTED},seed=abc", "--tasks", "x"],
                                "seed must be an int, got 'abc'", before_load=True, needs="lm_eval"),
    "eval early_exit='no'": Bad(["eval", "--model_args", f"{SCRIPTED},early_exit=no", "--tasks", "x"],
                                "early_exit must be true or false, got 'no'", before_load=True, needs="lm_eval"),
    "eval float gen_length": Bad(["eval", "--model_args", f"{SCRIPTED},gen_length=12.5", "--tasks", "x"],
                                 "gen_length must be an int, got 12.5", before_load=True, needs="lm_eval"),
    "eval cuda without a GPU": Bad(["eval", "--device", "cuda", "--model_args", SCRIPTED, "--tasks", "x"],
                                   "device 'cuda' was asked for, but CUDA is not available here", before_load=True,
                                   needs="lm_eval no_cuda"),
}


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Copies of the bundled checkpoint, each broken in one way."""
    root = tmp_path_factory.mktemp("broken")
    paths = {}
    for name in ("bad_json", "corrupt", "unknown_type"):
        paths[name] = root / name
        shutil.copytree(BUNDLED["tiny-arith"], paths[name])
    (paths["bad_json"] / "config.json").write_text('{"model_type": "llama",\n  "vocab_size": 22,,\n}')
    weights = paths["corrupt"] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: 1000])
    config = json.loads((paths["unknown_type"] / "config.json").read_text())
    config.pop("unmask_family")
    config.update(model_type="bert", architectures=["BertModel"])
    (paths["unknown_type"] / "config.json").write_text(json.dumps(config))
    return {k: str(v) for k, v in paths.items()}


def _forbid(monkeypatch: pytest.MonkeyPatch, target: Any, name: str, what: str) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"{what} for bad input")

    monkeypatch.setattr(target, name, refuse)


def _guard(monkeypatch: pytest.MonkeyPatch, row: Bad) -> None:
    """Make any compute (and, for ``before_load`` rows, any model reading) fail the test."""
    import unmask.cli.demo
    import unmask.cli.generate
    import unmask.models
    import unmask.tiny

    _forbid(monkeypatch, unmask.cli.generate, "generate", "generation must not start")
    _forbid(monkeypatch, unmask.cli.demo, "generate", "generation must not start")
    _forbid(monkeypatch, unmask.tiny, "solve", "generation must not start")
    if HAS_LM_EVAL:
        import lm_eval.__main__

        _forbid(monkeypatch, lm_eval.__main__, "cli_evaluate", "lm-eval must not start")
    if row.before_load:
        _forbid(monkeypatch, unmask.models, "load", "the model must not be read")
    if "hide_lm_eval" in row.needs:
        monkeypatch.setitem(sys.modules, "lm_eval", None)  # as if the eval extra were not installed


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_is_one_line_and_exit_2(name: str, broken: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    row = BAD_INPUTS[name]
    if "lm_eval" in row.needs.split() and not HAS_LM_EVAL:
        pytest.skip("needs the eval extra")
    if "no_cuda" in row.needs and HAS_CUDA:
        pytest.skip("needs a machine without CUDA")
    monkeypatch.chdir(tmp_path)  # relative output names land here
    _guard(monkeypatch, row)
    argv = [arg.format(**broken) if arg.startswith("{") else arg for arg in row.argv]
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse's own mistakes
        code = stop.code
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert row.message in lines[0]
    assert "Traceback" not in err and not out.strip()
