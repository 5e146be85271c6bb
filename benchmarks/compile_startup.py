"""Start-up cost of the compiled path, first start against a second start with torch's on-disk cache.

    python benchmarks/compile_startup.py                 # the bundled model on this machine's CPU
    python benchmarks/compile_startup.py --model /path/to/checkpoint --device cuda

Each start is a fresh Python process that loads the model and compiles every kind of call the
server runs (``unmask serve --compile``'s warm-up: whole canvases, and cached calls against the
engine's arena, for one row and for two) and prints the seconds spent in compilation. The first
start gets an empty compile cache (a new ``TORCHINDUCTOR_CACHE_DIR``), the second the same folder,
now filled: what a server's restart costs. Writes a markdown table to ``--out`` (default: a fresh folder
under ``runs/bench/``). Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from unmask.bench.args import output_dir

CHILD = """
import json, sys, time, torch
torch.set_num_threads(1)
t0 = time.perf_counter()
import unmask
from unmask.cli.serve import warm_up
from unmask.engine import Engine, EngineConfig
from rich.console import Console
den, _ = unmask.load(sys.argv[1], device=sys.argv[2] or None)
class S: block_length, max_tokens, planner = 32, 32, "dilated"
class W: engine = Engine(den, EngineConfig(compile=True, kv_slots=4))
t1 = time.perf_counter()
warm_up(W, S, Console(stderr=True))
print(json.dumps({"load_s": t1 - t0, "warmup_s": time.perf_counter() - t1,
                  "shapes": len(W.engine.model.warmup_seconds)}))
"""


def start(model: str, device: str, cache: str) -> dict:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD, model, device], env=env, check=True, capture_output=True,
                         text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - t0
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="tiny-arith")
    p.add_argument("--device", default="")
    p.add_argument("--out", default=None, help="the report's file (default: a fresh runs/bench/compile_startup-TIME/ "
                   "folder; --out benchmarks/compile_startup.md replaces the committed one)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="unmask-inductor-") as cache:
        rows = [("first start (empty cache)", start(args.model, args.device, cache)),
                ("second start (cache kept)", start(args.model, args.device, cache))]
    lines = [f"# Compiled-path start-up: `python benchmarks/compile_startup.py --model {args.model}"
             f"{' --device ' + args.device if args.device else ''}`", "",
             "| start | compile warm-up s | shapes | model load s | whole process s |", "|---|---:|---:|---:|---:|"]
    for name, r in rows:
        lines.append(f"| {name} | {r['warmup_s']:.1f} | {r['shapes']} | {r['load_s']:.1f} | {r['process_s']:.1f} |")
    ratio = rows[0][1]["warmup_s"] / rows[1][1]["warmup_s"]
    lines += ["", f"The second start's warm-up took 1/{ratio:.1f} of the first's."]
    text = "\n".join(lines) + "\n"
    out = Path(args.out) if args.out else output_dir(None, "compile_startup") / "compile_startup.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
