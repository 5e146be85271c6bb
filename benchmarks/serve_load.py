"""Load test of ``unmask serve`` on the bundled tiny model: batched concurrent clients against one-at-a-time.

    python benchmarks/serve_load.py                       # 200 requests one by one, then from 32 clients
    python benchmarks/serve_load.py --requests 50 --clients 8 --out /tmp/load.md

Starts a real server (``python -m unmask serve``, loopback, free port), sends
``--requests`` held-out problems as greedy completions, first one at a time
from one client (the sequential baseline), then from ``--clients``
concurrent clients (asyncio, one connection each), and reports requests/s,
p50/p99 latency, the mean batch size (rows per generate call, from the
server's /metrics) and the model's time per request (from the responses'
``unmask`` field) of each phase, and the throughput ratio. It asserts that
every request was answered exactly once, with status 200, and that every
answer equals offline :func:`unmask.generate` on its prompt alone (so no
answer was swapped between rows of a batch). Writes a markdown table to
``--out``. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import re
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import torch

import unmask
from unmask.serve.launch import serve_process
from unmask.tiny import heldout


@dataclass
class Phase:
    name: str
    clients: int
    answers: dict[int, str]
    latencies: list[float]
    seconds: float
    batch_rows: float  # mean rows per generate call during the phase
    calls: int  # generate calls during the phase
    model_seconds: float  # generate wall time, each request's batch time divided by the batch's rows, summed

    @property
    def model_ms(self) -> float:
        return 1000 * self.model_seconds / len(self.latencies)

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.seconds

    def pct(self, q: float) -> float:
        xs = sorted(self.latencies)
        return 1000 * xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def batch_stats(url: str) -> tuple[float, int]:
    """``(sum, count)`` of the server's batch-rows histogram."""
    text = httpx.get(f"{url}/metrics").text
    total = float(re.search(r"^unmask_batch_rows_sum (\S+)$", text, re.M).group(1))  # type: ignore[union-attr]
    count = int(re.search(r"^unmask_batch_rows_count (\S+)$", text, re.M).group(1))  # type: ignore[union-attr]
    return total, count


async def run_phase(name: str, url: str, prompts: list[str], clients: int) -> Phase:
    """``clients`` workers take request indices from one queue; each index must be answered once."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(prompts)):
        queue.put_nowait(i)
    answers: dict[int, str] = {}
    latencies: list[float] = []
    model = [0.0]
    before = batch_stats(url)

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=120) as http:
            while not queue.empty():
                i = queue.get_nowait()
                t0 = time.perf_counter()
                r = await http.post("/v1/completions", json={"prompt": prompts[i], "max_tokens": 32})
                latencies.append(time.perf_counter() - t0)
                assert r.status_code == 200, f"request {i}: {r.status_code} {r.text}"
                assert i not in answers, f"request {i} answered twice"
                body = r.json()
                answers[i] = body["choices"][0]["text"]
                model[0] += body["unmask"]["seconds"] / body["unmask"]["batch_rows"]

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    seconds = time.perf_counter() - t0
    after = batch_stats(url)
    calls = after[1] - before[1]
    assert sorted(answers) == list(range(len(prompts))), "some requests were not answered"
    return Phase(name, clients, answers, latencies, seconds, (after[0] - before[0]) / max(calls, 1), calls, model[0])


CONFIG = unmask.GenerationConfig(gen_length=32, block_length=32, planner="dilated")  # the server's defaults


def offline_answers(den, tok, prompts: list[str]) -> list[str]:  # type: ignore[no-untyped-def]
    """Each prompt alone through ``generate`` with the server's defaults (greedy, DUS, one block of 32)."""
    ids = unmask.encode_prompts(tok, prompts, chat=False, add_bos=den.add_bos)
    return [unmask.generate(den, [row], CONFIG, tokenizer=tok).texts[0] for row in ids]  # type: ignore[index]


def report(phases: list[Phase], args: argparse.Namespace) -> str:
    seq, conc = phases
    lines = [
        "# Serving load (tiny-arith, CPU)", "",
        f"`{' '.join(shlex.quote(a) for a in ['python', *sys.argv])}`", "",
        f"{args.requests} held-out problems as greedy completions (max_tokens 32, DUS, one block of 32: 5 calls each); "
        f"server `--max-batch {args.max_batch} --batch-wait-ms {args.batch_wait_ms:g}`"
        f"{f' --threads {args.threads}' if args.threads else ''}; torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}. Every request answered exactly once with status 200, and "
        "every answer equal to offline `generate` on its prompt alone.", "",
        "| phase | clients | requests | wall s | requests/s | p50 ms | p99 ms | mean batch rows | generate calls | model ms/request |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in phases:
        lines.append(f"| {p.name} | {p.clients} | {len(p.latencies)} | {p.seconds:.2f} | {p.rps:.1f} | {p.pct(0.5):.0f} | "
                     f"{p.pct(0.99):.0f} | {p.batch_rows:.1f} | {p.calls} | {p.model_ms:.1f} |")
    lines += ["", f"Throughput, concurrent against sequential: **{conc.rps / seq.rps:.2f}x**. Batching cut the model's own "
              f"time per request (each batch's generate seconds shared over its rows, as the server reports them) from "
              f"{seq.model_ms:.1f} ms to {conc.model_ms:.1f} ms ({seq.model_ms / conc.model_ms:.2f}x)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--batch-wait-ms", type=float, default=5.0)
    p.add_argument("--threads", type=int, default=None, help="the server's torch threads (default: torch's choice)")
    p.add_argument("--out", default=str(Path(__file__).with_name("serve_load.md")))
    args = p.parse_args(argv)
    if args.requests < 1 or args.clients < 1:
        p.error("--requests and --clients must be positive")
    if args.threads:
        torch.set_num_threads(args.threads)
    prompts = [item.prompt for item in heldout(args.requests, "test")]
    print(f"offline reference: {len(prompts)} prompts, one generate call each", flush=True)
    den, tok = unmask.load("tiny-arith")
    expected = offline_answers(den, tok, prompts)
    server = ["--max-batch", str(args.max_batch), "--batch-wait-ms", str(args.batch_wait_ms), "--log-level", "warning",
              "--queue-limit", str(max(256, args.requests))] + (["--threads", str(args.threads)] if args.threads else [])
    with serve_process(server) as url:
        asyncio.run(run_phase("warm-up", url, prompts[:8], 1))
        phases = []
        for name, clients in (("sequential", 1), ("concurrent", args.clients)):
            phase = asyncio.run(run_phase(name, url, prompts, clients))
            wrong = [i for i in range(len(prompts)) if phase.answers[i] != expected[i]]
            assert not wrong, f"{name}: {len(wrong)} answers differ from offline generate, e.g. request {wrong[0]}"
            print(f"{name}: {phase.rps:.1f} requests/s, p50 {phase.pct(0.5):.0f} ms, p99 {phase.pct(0.99):.0f} ms, "
                  f"mean batch {phase.batch_rows:.1f} rows", flush=True)
            phases.append(phase)
    text = report(phases, args)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
