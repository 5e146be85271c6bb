"""Start-up time of the command line: ``unmask --help`` and sub-commands' ``--help``, cold and warm.

    python benchmarks/cli_startup.py                 # unmask --help, generate --help, bench tiny --help; 5 runs each
    python benchmarks/cli_startup.py --runs 9 --commands "serve --help" "tune --help"
    python benchmarks/cli_startup.py --commands " --help" "serve --help"   # a leading space keeps --help a value

Each command runs as ``python -m unmask ARGS`` in a fresh interpreter.
*Cold*: every file the command reads when it starts (each imported module's
source, bytecode and shared library) is first evicted from the OS page cache
with ``posix_fadvise(POSIX_FADV_DONTNEED)``, as after a reboot or when other
work has pushed them out; *warm*: run again right after. Prints the median and
the range of each, and whether torch was imported (it must not be for
``--help``). Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time

DEFAULT = ("--help", "generate --help", "bench tiny --help")
PROBE = """import json, runpy, sys
sys.argv = ['unmask', *sys.argv[1:]]
try:
    runpy.run_module('unmask', run_name='__main__')
except SystemExit:
    pass
files = set()
for m in list(sys.modules.values()):
    f = getattr(m, '__file__', None)
    if f:
        files.add(f)
        c = getattr(getattr(m, '__spec__', None), 'cached', None)
        if c:
            files.add(c)
print(json.dumps({'torch': 'torch' in sys.modules, 'files': sorted(files)}), file=sys.stderr)
"""


def once(args: list[str]) -> tuple[float, dict[str, object]]:
    """Seconds for one ``python -m unmask ARGS``, and what it imported."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"unmask {shlex.join(args)} failed:\n{done.stderr}")
    return seconds, json.loads(done.stderr.strip().splitlines()[-1])


def evict(files: list[str]) -> None:
    """Drop the page cache of ``files`` (clean pages only; nothing is written), where the OS allows it."""
    for name in [sys.executable, *files]:
        try:
            fd = os.open(name, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def measure(command: str, runs: int) -> dict[str, object]:
    args = shlex.split(command)
    _, seen = once(args)
    cold, warm = [], []
    for _ in range(runs):
        evict(seen["files"])  # type: ignore[arg-type]
        cold.append(once(args)[0])
        warm.append(once(args)[0])
    return {"command": f"unmask {command.strip()}", "cold": cold, "warm": warm, "torch": seen["torch"],
            "files": len(seen["files"])}  # type: ignore[arg-type]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--commands", nargs="+", default=list(DEFAULT), help="argument strings after 'unmask'")
    p.add_argument("--runs", type=int, default=5, help="cold + warm pairs per command (default 5)")
    a = p.parse_args()
    if a.runs < 1:
        raise SystemExit(f"--runs must be a positive int, got {a.runs}")
    print("| command | cold: median [min, max] (s) | warm: median [min, max] (s) | imports torch | files read |")
    print("|---|---:|---:|---|---:|")
    for command in a.commands:
        r = measure(command, a.runs)
        cells = [f"{statistics.median(v):.2f} [{min(v):.2f}, {max(v):.2f}]" for v in (r["cold"], r["warm"])]  # type: ignore[arg-type]
        print(f"| `{r['command']}` | {cells[0]} | {cells[1]} | {'yes' if r['torch'] else 'no'} | {r['files']} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
