"""Start-up time of the command line: ``unmask --help`` and sub-commands' ``--help``, cold and warm.

    python benchmarks/cli_startup.py                 # unmask --help, generate --help, bench tiny --help; 5 runs each
    python benchmarks/cli_startup.py --runs 9 --commands "--help" "serve --help"

Each command runs as ``python -m unmask ARGS`` in a fresh interpreter.
*Cold*: with an empty bytecode cache (``PYTHONPYCACHEPREFIX`` set to a new
folder), so every imported module is compiled from source, as on the first
run after an install; *warm*: again with that now-filled cache. The OS file
cache is not dropped (that needs root); the cold run is the first one to
read the files. Prints the median and the range of each, and whether torch
was imported (it must not be for ``--help``). Not a test.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

DEFAULT = ("--help", "generate --help", "bench tiny --help")
PROBE = "import runpy, sys; sys.argv = ['unmask', *sys.argv[1:]]\ntry:\n    runpy.run_module('unmask', run_name='__main__')\nexcept SystemExit:\n    pass\nprint('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)"


def once(args: list[str], env: dict[str, str]) -> tuple[float, bool]:
    """Seconds for one ``python -m unmask ARGS`` and whether it imported torch."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PROBE, *args], env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"unmask {shlex.join(args)} failed:\n{done.stderr}")
    return seconds, "NO-TORCH" not in done.stderr


def measure(command: str, runs: int) -> dict[str, object]:
    args = shlex.split(command)
    cold, warm, torch_loaded = [], [], False
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "PYTHONPYCACHEPREFIX": cache}
            s, t = once(args, env)
            cold.append(s)
            s, t2 = once(args, env)
            warm.append(s)
            torch_loaded |= t or t2
    return {"command": f"unmask {command}", "cold": cold, "warm": warm, "torch": torch_loaded}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--commands", nargs="+", default=list(DEFAULT), help="argument strings after 'unmask'")
    p.add_argument("--runs", type=int, default=5, help="cold + warm pairs per command (default 5)")
    a = p.parse_args()
    if a.runs < 1:
        raise SystemExit(f"--runs must be a positive int, got {a.runs}")
    print("| command | cold: median [min, max] (s) | warm: median [min, max] (s) | imports torch |")
    print("|---|---:|---:|---|")
    for command in a.commands:
        r = measure(command, a.runs)
        cells = [f"{statistics.median(v):.2f} [{min(v):.2f}, {max(v):.2f}]" for v in (r["cold"], r["warm"])]  # type: ignore[arg-type]
        print(f"| `{r['command']}` | {cells[0]} | {cells[1]} | {'yes' if r['torch'] else 'no'} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
