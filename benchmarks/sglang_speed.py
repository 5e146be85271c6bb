"""SGLang speed: its own LowConfidence algorithm and unmask's DUS adapter on the same prompts, side by side.

    python benchmarks/sglang_speed.py --model-path inclusionAI/LLaDA2.0-mini
    python benchmarks/sglang_speed.py --model-path /models/LLaDA2.0-flash --tp-size 4 --runs 5
    python benchmarks/sglang_speed.py --model-path ... --algorithm LowConfidence --algorithm unmask-eb \\
        --config unmask-eb=integrations/sglang/examples/eb.yaml

Needs a CUDA GPU, SGLang with its CUDA dependencies, the plugin
(``pip install -e integrations/sglang``) and the weights (a hub name or a
local folder). For each algorithm it starts an offline ``sgl.Engine``, sends
the prompts once to warm up (CUDA graphs, caches), then ``--runs`` times as
one batch. Forwards are counted in the scheduler processes by the plugin
(``UNMASK_SGLANG_NFE_DIR``): ``forwards`` are batched model calls while
denoising, ``NFE/request`` the request-forwards of blocks that still had
masks divided by the requests (each block also costs the one forward that
finds it full, which neither count includes). Greedy decoding; the table
gives medians over runs and is written as markdown to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DEFAULT_CONFIGS = {"LowConfidence": {"threshold": 0.95}, "unmask-dus": {"planner": "dilated(base=2)"}}
PROMPTS = [
    "What is 12 * 7? Explain step by step.",
    "Write a short poem about the sea.",
    "Give three reasons why the sky is blue.",
    "Summarise the plot of Romeo and Juliet in four sentences.",
    "Write a Python function that reverses a linked list.",
    "A train leaves at 3 pm at 60 km/h; another at 4 pm at 80 km/h. When does the second catch up?",
    "List five prime numbers greater than 100.",
    "Explain what a hash table is to a ten-year-old.",
]
LLADA2_TEMPLATE = "<role>HUMAN</role>{}<|role_end|><role>ASSISTANT</role>"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-path", required=True, help="hub name or local folder of a LLaDA2.x or SDAR checkpoint")
    p.add_argument("--tp-size", type=int, default=1)
    p.add_argument("--algorithm", action="append", dest="algorithms", metavar="NAME",
                   help="--dllm-algorithm to measure (repeatable; default: LowConfidence and unmask-dus)")
    p.add_argument("--config", action="append", default=[], metavar="NAME=YAML",
                   help="algorithm-config file for NAME (default: LowConfidence threshold 0.95, DUS base 2)")
    p.add_argument("--prompts-file", help="one prompt per line (default: eight built-in prompts)")
    p.add_argument("--template", choices=["llada2", "none"], default="llada2",
                   help="wrap prompts in LLaDA2's chat roles, or send them as they are")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--engine-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="extra sgl.Engine argument, value read as YAML (e.g. disable_cuda_graph=true)")
    p.add_argument("--out", default=str(Path(__file__).with_name("sglang_speed.md")))
    args = p.parse_args(argv)
    args.algorithms = args.algorithms or list(DEFAULT_CONFIGS)
    for name, value in (("--tp-size", args.tp_size), ("--max-new-tokens", args.max_new_tokens), ("--runs", args.runs)):
        if value < 1:
            p.error(f"{name} must be a positive int, got {value}")
    for item in args.config + args.engine_arg:
        if "=" not in item:
            p.error(f"--config and --engine-arg take KEY=VALUE, got {item!r}")
    files = [("--prompts-file", args.prompts_file)] if args.prompts_file else []
    files += [("--config", item.split("=", 1)[1]) for item in args.config]
    for flag, path in files:
        if not Path(path).is_file():
            p.error(f"{flag}: no file {path}")
    return args


def fail(message: str) -> SystemExit:
    """One line on stderr and exit status 2, as for any bad input."""
    print(f"sglang_speed.py: {message}", file=sys.stderr)
    return SystemExit(2)


def check_environment() -> None:
    """Exit with one line when this machine cannot run the benchmark (before anything heavy is loaded)."""
    import torch

    if not torch.cuda.is_available():
        raise fail("needs a CUDA GPU (torch sees none here), SGLang with its CUDA dependencies and the model "
                   "weights; nothing was run")
    for module, hint in (("sglang", "pip install 'sglang>=0.5.21,<0.6'"), ("unmask_sglang", "pip install -e integrations/sglang")):
        try:
            __import__(module)
        except ImportError as err:
            raise fail(f"needs {module} ({hint}): {err}") from None


def load_prompts(args: argparse.Namespace) -> list[str]:
    prompts = PROMPTS
    if args.prompts_file:
        prompts = [line.strip() for line in Path(args.prompts_file).read_text().splitlines() if line.strip()]
        if not prompts:
            raise fail(f"--prompts-file {args.prompts_file} holds no prompt")
    return [LLADA2_TEMPLATE.format(q) for q in prompts] if args.template == "llada2" else list(prompts)


def forward_counts(folder: Path) -> dict[str, int]:
    """The counts of one scheduler process (every tensor-parallel rank counts the same steps)."""
    counts = [json.loads(f.read_text()) for f in folder.glob("nfe-*.json")]
    return {k: max((c[k] for c in counts), default=0) for k in ("steps", "block_steps")}


def measure(name: str, config: Path, prompts: list[str], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Warm up once, then time ``args.runs`` batched runs of ``prompts`` with one engine."""
    import sglang as sgl
    import yaml

    from unmask_sglang.counting import ENV

    folder = Path(tempfile.mkdtemp(prefix=f"nfe-{name}-"))
    os.environ[ENV] = str(folder)  # read by the plugin in the scheduler processes the engine spawns
    extra = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.engine_arg)}
    engine = sgl.Engine(model_path=args.model_path, tp_size=args.tp_size, trust_remote_code=True,
                        dllm_algorithm=name, dllm_algorithm_config=str(config),
                        max_running_requests=len(prompts), **extra)
    params = {"max_new_tokens": args.max_new_tokens, "temperature": 0.0}
    rows = []
    try:
        engine.generate(prompts, params)
        for run in range(args.runs):
            before = forward_counts(folder)
            t0 = time.perf_counter()
            outs = engine.generate(prompts, params)
            seconds = time.perf_counter() - t0
            after = forward_counts(folder)
            tokens = sum(int(o["meta_info"]["completion_tokens"]) for o in outs)
            rows.append({"seconds": seconds, "tokens": tokens, "forwards": after["steps"] - before["steps"],
                         "request_forwards": after["block_steps"] - before["block_steps"]})
            print(f"{name} run {run + 1}/{args.runs}: {tokens} tokens in {seconds:.2f} s, "
                  f"{rows[-1]['forwards']} forwards", flush=True)
    finally:
        engine.shutdown()
        os.environ.pop(ENV, None)
    return rows


def report(results: dict[str, list[dict[str, Any]]], configs: dict[str, Path], n: int, args: argparse.Namespace) -> str:
    import torch

    lines = [
        "# SGLang: LowConfidence against unmask's adapters", "",
        f"`{' '.join(shlex.quote(a) for a in ['python', *sys.argv])}`", "",
        f"{torch.cuda.get_device_name()} x {args.tp_size} (tensor parallel), {args.model_path}; {n} prompts as one "
        f"batch, {args.max_new_tokens} new tokens at most, greedy; medians over {args.runs} runs.", "",
        "| algorithm | config | forwards/run | NFE/request | tokens/request | tokens/NFE | s/run | tokens/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, rows in results.items():
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
        nfe = med["request_forwards"] / n
        config = " ".join(f"{k}={v}" for k, v in (_load_yaml(configs[name]) or {}).items())
        lines.append(f"| {name} | `{config}` | {med['forwards']:.0f} | {nfe:.1f} | {med['tokens'] / n:.1f} | "
                     f"{med['tokens'] / max(med['request_forwards'], 1):.2f} | {med['seconds']:.2f} | "
                     f"{med['tokens'] / med['seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def _load_yaml(path: Path) -> Any:
    import yaml

    return yaml.safe_load(path.read_text())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_environment()
    prompts = load_prompts(args)
    folder = Path(tempfile.mkdtemp(prefix="sglang-speed-"))
    configs = dict((k, Path(v)) for k, v in (item.split("=", 1) for item in args.config))
    for name in args.algorithms:
        if name not in configs:
            configs[name] = folder / f"{name}.yaml"
            configs[name].write_text(json.dumps(DEFAULT_CONFIGS.get(name, {})))  # JSON is YAML
    results = {name: measure(name, configs[name], prompts, args) for name in args.algorithms}
    text = report(results, configs, len(prompts), args)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
