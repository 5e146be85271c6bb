"""``unmask eval``: lm-evaluation-harness with the ``unmask`` model, recipes and summaries.

    unmask eval --model_args pretrained=GSAI-ML/LLaDA-8B-Instruct,planner=dilated,block_length=32 \\
        --tasks gsm8k --num_fewshot 4 --apply_chat_template --output_path runs/eval/x
    unmask eval --recipe list | --recipe llada/gsm8k [--variants dus,conf-topk] [--run]
    unmask eval summarize RESULTS_DIR [--out DIR] [--metric NAME]

Everything else is lm-eval's ``run`` command line (``--model unmask`` by
default; ``--include_path`` for local YAML tasks); it needs the ``eval`` extra
(``pip install -e ".[eval]"``). ``--device`` and ``--batch_size`` reach the
model only when given (lm-eval's own defaults, cuda:0 and 1, do not). Tasks
that execute generated code need ``--allow-code-execution``. Data-parallel (one model copy per
process, documents sharded by rank, results gathered on rank 0): ``accelerate
launch --multi_gpu --num_processes N -m unmask.cli.eval <same arguments>`` on
GPUs, ``torchrun --nproc_per_node N -m unmask.cli.eval ...`` on CPUs (gloo).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from typing import Any

USAGE = __doc__ or ""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate with lm-eval (speed in the results), recipes, summaries",
                       add_help=False, prefix_chars="\x00")  # every argument is ours to route, --help included
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=run)


def _own_parser() -> argparse.ArgumentParser:
    from . import OneLineParser

    p = OneLineParser(prog="unmask eval", add_help=False, allow_abbrev=False)
    p.add_argument("--allow-code-execution", action="store_true",
                   help="run tasks that execute generated code (sandboxed: time, CPU, memory, file limits)")
    p.add_argument("--code-timeout", type=float, default=10.0, help="seconds per program (default 10)")
    p.add_argument("--code-memory-mb", type=int, default=1024, help="address space per program (default 1024)")
    p.add_argument("--recipe", help="print the commands of a recipe ('list' lists them)")
    p.add_argument("--variants", help="comma-separated variant name prefixes of the recipe sweep (default: all)")
    p.add_argument("--output-root", default="runs/eval", help="recipe output root (default runs/eval)")
    p.add_argument("--batch-size", type=int, default=8, help="recipe batch size (default 8)")
    p.add_argument("--run", action="store_true", help="run the recipe commands one after the other")
    return p


def run(args: argparse.Namespace) -> int:
    rest: list[str] = list(args.rest)
    if rest[:1] == ["summarize"]:
        return _summarize(rest[1:])
    own, forward = _own_parser().parse_known_args(rest)
    if own.recipe:
        return _recipe(own, forward)
    if not forward or forward[0] in ("-h", "--help"):
        print(USAGE)
        print(_own_parser().format_help())
        if not forward:
            return 0
    return _forward(forward, own)


def _summarize(argv: list[str]) -> int:
    from . import OneLineParser

    p = OneLineParser(prog="unmask eval summarize", description="paper-style table and accuracy-vs-NFE plot")
    p.add_argument("results_dir", help="directory holding lm-eval results JSON files (searched recursively)")
    p.add_argument("--out", help="where to write summary.md/csv and the plot (default: RESULTS_DIR)")
    p.add_argument("--metric", help="metric to report, e.g. exact_match or 'exact_match,strict-match'")
    a = p.parse_args(argv)
    from pathlib import Path

    from ..eval.summarize import summarize

    written = summarize(Path(a.results_dir), Path(a.out) if a.out else None, a.metric)
    for kind, path in written.items():
        print(f"{kind}: {path}")
    return 0


def _recipe(own: argparse.Namespace, forward: list[str]) -> int:
    from ..eval.recipes import RECIPES, commands, describe, select_variants

    if forward:
        raise ValueError(f"--recipe takes no lm-eval arguments, got {forward}")
    if own.recipe == "list":
        for name, r in RECIPES.items():
            print(f"{name:24s} {r.model:32s} {r.task:20s} {r.num_fewshot}-shot gen {r.gen_length}")
        return 0
    variants = select_variants(own.variants)
    print(describe(own.recipe, variants, own.output_root, own.batch_size), end="")
    if not own.run:
        return 0
    for cmd in commands(RECIPES[own.recipe], variants, own.output_root, own.batch_size):
        cmd = [sys.executable, "-m", "unmask.cli.eval", *cmd[2:]]  # this interpreter, not whatever is on PATH
        print(f"$ {shlex.join(cmd)}", flush=True)
        code = subprocess.run(cmd, check=False).returncode
        if code:
            print(f"recipe command failed with exit code {code}; stopping", file=sys.stderr)
            return code
    return 0


EXTRA = 'pip install -e ".[eval]"'
PASSED_ONLY_WHEN_GIVEN = {"batch_size": ("--batch_size", "-b"), "device": ("--device",)}


def _import_lm_eval() -> Any:
    """The ``lm_eval`` package, or a one-line error naming the extra that installs it."""
    try:
        import lm_eval
    except ModuleNotFoundError as err:
        if err.name != "lm_eval":
            raise
        raise ValueError(f"unmask eval runs lm-evaluation-harness, which is not installed: {EXTRA} "
                         "(the eval extra: lm-eval and accelerate)") from err
    return lm_eval


def _forward(forward: list[str], own: argparse.Namespace) -> int:
    """Run lm-eval's ``run`` command with our ``simple_evaluate`` in place of lm-eval's."""
    lm_eval = _import_lm_eval()
    from lm_eval.__main__ import cli_evaluate

    from ..eval.dist import leave_process_group
    from ..eval.runner import simple_evaluate  # importing it registers the unmask model

    if not any(a in ("--model", "-M") or a.startswith("--model=") for a in forward):
        forward = ["--model", "unmask", *forward]
    if _value(forward, ("--model", "-M")) == ["unmask"]:
        model_args = _check_model_args(forward)  # fail in a second, not after lm-eval has indexed its tasks
        if "batch_size" in model_args and not _given(forward, PASSED_ONLY_WHEN_GIVEN["batch_size"]):
            # lm-eval's summary line prints its own --batch_size (default 1): make it the one that runs
            forward = [*forward, "--batch_size", str(model_args["batch_size"])]
    not_given = [key for key, flags in PASSED_ONLY_WHEN_GIVEN.items() if not _given(forward, flags)]

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        for key in not_given:  # lm-eval's command line fills in its own defaults (batch_size 1, device cuda:0)
            kwargs.pop(key, None)
        return simple_evaluate(*args, allow_code_execution=own.allow_code_execution, code_timeout_s=own.code_timeout,
                               code_memory_mb=own.code_memory_mb, print_speed_table=True, **kwargs)

    saved = sys.argv, getattr(lm_eval, "simple_evaluate", None)
    sys.argv = ["lm-eval", "run", *forward]
    lm_eval.simple_evaluate = wrapper  # lm-eval's run command looks it up on the package at call time
    try:
        cli_evaluate()
        leave_process_group()  # no-op in a single process
    except ConnectionError as err:  # datasets' "Couldn't reach 'openai/gsm8k' on the Hub": offline, or a bad name
        raise ValueError(f"a task's data could not be fetched: {err}. Offline, evaluate a local task: a YAML task on "
                         "local files given with --include_path DIR (see examples/eval/tiny_arith, which runs on the "
                         "bundled model)") from None
    finally:
        sys.argv = saved[0]
        if saved[1] is None:
            del lm_eval.simple_evaluate
        else:
            lm_eval.simple_evaluate = saved[1]
    return 0


def _given(argv: list[str], flags: tuple[str, ...]) -> bool:
    """Whether any of ``flags`` appears in ``argv`` (as ``--flag value`` or ``--flag=value``)."""
    return any(arg in flags or any(arg.startswith(f"{f}=") for f in flags if f.startswith("--")) for arg in argv)


def _value(argv: list[str], flags: tuple[str, ...]) -> list[str]:
    """The values following the last occurrence of any of ``flags`` (up to the next option)."""
    values: list[str] = []
    for i, arg in enumerate(argv):
        if arg in flags:
            values = []
            for nxt in argv[i + 1 :]:
                if nxt.startswith("-"):
                    break
                values.append(nxt)
        elif any(arg.startswith(f"{f}=") for f in flags if f.startswith("--")):
            values = [arg.split("=", 1)[1]]
    return values


def _check_model_args(forward: list[str]) -> dict[str, object]:
    """Parse ``--model_args`` as lm-eval will and validate them, and the device, with the unmask model's rules;
    return them as parsed."""
    # lm-eval's command-line parser of model_args (commas inside brackets and quotes kept) has no public home
    from lm_eval._cli.utils import key_val_to_dict, try_parse_json

    from ..eval.settings import parse_model_args
    from ..models.loading import default_device

    args: dict[str, object] = {}
    for value in _value(forward, ("--model_args", "-a")):
        parsed = try_parse_json(value)
        args.update(parsed if isinstance(parsed, dict) else key_val_to_dict(value))
    settings, _ = parse_model_args(args)
    for device in (settings.device, *_value(forward, ("--device",))):
        if device is not None:
            default_device(device)  # a CUDA device on a machine without one: an error now, not a fallback later
    return args


if __name__ == "__main__":  # accelerate launch -m unmask.cli.eval ...
    from . import main

    sys.exit(main(["eval", *sys.argv[1:]]))
