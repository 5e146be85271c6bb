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
    "--gen-length 0": Bad(["generate", "--model", "tiny-arith", "--gen-length", "0", "Q:1+2;"],
                          "--gen-length must be a positive int, got 0", before_load=True),
    "--seed 2^63": Bad(["generate", "--model", "tiny-arith", "--seed", str(2**63), "Q:1+2;"],
                       "seed must be an int in [0, 2^63) or None, got 9223372036854775808", before_load=True),
    "planner value a bare name": Bad(["generate", "--model", "tiny-arith", "--planner", "topk(score=margin)", "Q:1+2;"],
                                     "score=margin is not a literal; settings are numbers, quoted strings, tuples, "
                                     "None/True/False or planners; quote a string: score='margin'", before_load=True),
    "planner value a call": Bad(["generate", "--model", "tiny-arith", "--planner", "threshold(tau=float('nan'))", "Q"],
                                "tau=float('nan') is not a literal", before_load=True),
    "interleave k over the block": Bad(["generate", "--model", "tiny-arith", "--planner", "interleave(k=64)", "Q:1+2;"],
                                       "k must be <= block_length=32 (one call per position at most), got 64"),
    "--model a file": Bad(["generate", "--model", "{a_file}", "Q:1+2;"],
                          "is a file; give the checkpoint directory that holds config.json"),
    "--device meta": Bad(["generate", "--model", "tiny-arith", "--device", "meta", "Q:1+2;"],
                         "device 'meta' holds no data (shapes only) and cannot run a model; use 'cpu' or 'cuda'"),
    "no tokenizer.json": Bad(["generate", "--model", "{no_tokenizer}", "Q:1+2;"],
                             "has no tokenizer file: expected tokenizer.json (or one of tokenizer.model, vocab.json"),
    "tokenizer.json not JSON": Bad(["generate", "--model", "{bad_tokenizer}", "Q:1+2;"],
                                   "tokenizer.json' is not valid JSON (Expecting"),
    # unmask demo
    "demo --html with another suffix": Bad(["demo", "--html", "demo.txt"],
                                           "--html 'demo.txt': the file name must end in .html or .htm", before_load=True),
    "demo --gen-length without --oracle": Bad(["demo", "--gen-length", "64"],
                                              "--gen-length cannot be used without --oracle", before_load=True),
    "demo --oracle --show": Bad(["demo", "--oracle", "--show", "2", "--problems", "5"],
                                "--problems, --show cannot be used with --oracle (options of the tiny-arith demo)", before_load=True),
    # unmask bench
    "bench oracle --quick --budgets 0": Bad(["bench", "oracle", "--quick", "--budgets", "0"],
                                            "budgets must be ints in [2, 32], got (0,)", before_load=True),
    "bench tiny --quick --n 0": Bad(["bench", "tiny", "--quick", "--n", "0"], "n must be a positive int, got 0",
                                    before_load=True),
    # unmask serve (checked before the banner; uvicorn never starts)
    "serve --served-model-name ''": Bad(["serve", "--served-model-name", ""],
                                        "--served-model-name must be a non-empty name, got ''", before_load=True),
    "serve --max-tokens over the model": Bad(["serve", "--max-tokens", "1000", "--port", "0"],
                                             "--max-tokens: the default 1000 needs a canvas of 1024 (whole blocks of "
                                             "32), which leaves no room for a prompt of 1 token(s) within the model's "
                                             "maximum length 64; the most that fits is 32"),
    "serve broken --chat-template": Bad(["serve", "--chat-template", "{bad_template}", "--port", "0"],
                                        "does not compile: unexpected '}' (line 1)", before_load=True),
    "serve template failing on a chat": Bad(["serve", "--chat-template", "{failing_template}", "--port", "0"],
                                            "fails on a one-message chat: No filter named 'nofilter'"),
    "serve default planner over the block": Bad(["serve", "--planner", "interleave(k=64)"],
                                                "--planner: planner 'interleave(k=64)' cannot run the default request",
                                                before_load=True),
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
    for name in ("bad_json", "corrupt", "unknown_type", "no_tokenizer", "bad_tokenizer"):
        paths[name] = root / name
        shutil.copytree(BUNDLED["tiny-arith"], paths[name])
    (paths["no_tokenizer"] / "tokenizer.json").unlink()
    tokenizer = paths["bad_tokenizer"] / "tokenizer.json"
    tokenizer.write_text(tokenizer.read_text()[:200])
    paths["a_file"] = paths["bad_json"] / "config.json"
    paths["bad_template"] = root / "bad.jinja"
    paths["bad_template"].write_text("{% for m in messages %}{{ m.content }\n")
    paths["failing_template"] = root / "failing.jinja"
    paths["failing_template"].write_text("{{ messages[0].content | nofilter }}")
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
    import uvicorn

    import unmask.bench.oracle
    import unmask.bench.tiny
    import unmask.engine.engine
    import unmask.models

    # on the class, so every caller of the loop is covered, however and whenever it imported generate
    _forbid(monkeypatch, unmask.engine.engine.Engine, "step", "generation must not start")
    _forbid(monkeypatch, unmask.bench.oracle, "run_calls", "a benchmark must not start")
    _forbid(monkeypatch, unmask.bench.tiny, "measure", "a benchmark must not start")
    _forbid(monkeypatch, uvicorn, "run", "the server must not start")
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
