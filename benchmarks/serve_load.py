"""Load test of ``unmask serve`` on the bundled tiny model: concurrent clients against one-at-a-time.

    python benchmarks/serve_load.py                       # 200 equal requests one by one, then from 32 clients
    python benchmarks/serve_load.py --requests 50 --clients 8 --out /tmp/load.md
    python benchmarks/serve_load.py --mixed               # 400 requests with mixed settings, Poisson arrivals

Starts a real server (``python -m unmask serve``, loopback, free port) and
sends held-out problems, first one at a time from one client (the sequential
baseline), then from ``--clients`` concurrent clients (asyncio, one
connection each). The default mode sends greedy completions with the
server's defaults and reports requests/s, p50/p99 latency, rows per generate
call (from /metrics) and the model's time per request (from the responses'
``unmask`` field).

``--mixed`` sends requests with ordinary variety: ``max_tokens`` from
``--max-tokens``, three planners, temperature 0 or 0.8 (sampled ones with a
``seed``), stop strings, a few with ``n=2``, ``block_length`` 8, 16, 32 or
the server's default where the canvas fits the model. In the concurrent phase
they arrive as a Poisson process (exponential gaps at ``--rate`` per second)
and a client sends its next request at its arrival time or when its previous
answer came, whichever is later. It reports requests/s and generated
tokens/s of both phases and their ratio, p50/p99 latency per ``max_tokens``
class, and the mean rows per denoiser call: from the server's counters
``unmask_denoiser_calls_total`` and ``unmask_denoiser_row_calls_total`` when
it exports them, else from the responses' ``unmask`` field (a generate call
of r rows and c denoiser calls counts c calls and r*c row-calls, once).

Both modes assert that every request was answered exactly once, with status
200, and that every answer equals offline :func:`unmask.generate` of that
request alone (for a request with ``seed`` s and ``n`` choices,
``generate(den, [prompt] * n, GenerationConfig(..., seed=s))``, cut at
``max_tokens`` tokens, EOS and the stop strings). Writes a markdown table to
``--out`` and prints it. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import re
import shlex
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import accumulate
from pathlib import Path

import httpx
import torch
from rich.console import Console
from rich.markdown import Markdown

import unmask
from unmask.serve.launch import serve_process
from unmask.text import decode_rows
from unmask.bench.args import output_dir
from unmask.tiny import heldout

SERVER_BLOCK = 32  # the server's --block-length: the block of requests that give none (below max_tokens)
PLANNERS = ("dilated", "threshold(tau=0.9)", "topk(counts='dilated')")
STOPS = (";A:", "=", [";+", "A:"])  # cut answers such as 86*2=160+12=172;+89=261;A:261 at different places
SAMPLED, STOPPED, TWO = 0.5, 0.3, 0.05  # shares of the mix: temperature 0.8 with a seed, stop strings, n=2
SAMPLE = re.compile(r"^(\w+) (\S+)$", re.M)  # an unlabelled sample of the Prometheus text


def counters(url: str) -> dict[str, float]:
    """Every unlabelled sample of the server's /metrics."""
    return {k: float(v) for k, v in SAMPLE.findall(httpx.get(f"{url}/metrics").text)}


@dataclass
class Phase:
    name: str
    clients: int
    bodies: dict[int, dict]  # response body per request index
    latencies: dict[int, float]  # seconds from sending the request to its answer
    seconds: float
    counters: dict[str, float]  # increase of each /metrics sample over the phase

    @property
    def rps(self) -> float:
        return len(self.bodies) / self.seconds

    @property
    def tokens_per_s(self) -> float:
        return sum(b["usage"]["completion_tokens"] for b in self.bodies.values()) / self.seconds

    def pct(self, q: float, only: list[int] | None = None) -> float:
        xs = sorted(self.latencies[i] for i in (self.latencies if only is None else only))
        return 1000 * xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


async def run_phase(name: str, url: str, bodies: list[dict], clients: int, arrivals: list[float] | None = None) -> Phase:
    """``clients`` workers take request indices in order from one queue; each index must be answered once."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(bodies)):
        queue.put_nowait(i)
    answers: dict[int, dict] = {}
    latencies: dict[int, float] = {}
    before = counters(url)

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=600) as http:
            while not queue.empty():
                i = queue.get_nowait()
                if arrivals is not None:
                    await asyncio.sleep(max(0.0, t0 + arrivals[i] - time.perf_counter()))
                sent = time.perf_counter()
                r = await http.post("/v1/completions", json=bodies[i])
                latencies[i] = time.perf_counter() - sent
                assert r.status_code == 200, f"request {i} ({bodies[i]}): {r.status_code} {r.text}"
                assert i not in answers, f"request {i} answered twice"
                answers[i] = r.json()
                assert len(answers[i]["choices"]) == bodies[i].get("n", 1), f"request {i}: wrong number of choices"

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    seconds = time.perf_counter() - t0
    after = counters(url)
    assert sorted(answers) == list(range(len(bodies))), "some requests were not answered"
    return Phase(name, clients, answers, latencies, seconds, {k: v - before.get(k, 0.0) for k, v in after.items()})


def texts(phase: Phase) -> list[list[str]]:
    return [[c["text"] for c in sorted(phase.bodies[i]["choices"], key=lambda c: c["index"])] for i in sorted(phase.bodies)]


def canvas(max_tokens: int, block: int) -> int:
    return -(-max_tokens // block) * block


def block_of(body: dict) -> int:
    return body.get("block_length", min(SERVER_BLOCK, body["max_tokens"]))


def mixed_requests(prompts: list[str], lengths: list[int], classes: list[int], room: int, seed: int,
                   cache: str = "none") -> list[dict]:
    """One request body per prompt; ``lengths`` are the prompts' token counts, ``room`` the model's length."""
    rng = random.Random(seed)
    bodies = []
    for prompt, length in zip(prompts, lengths, strict=True):
        body: dict = {"prompt": prompt, "max_tokens": rng.choice(classes), "planner": rng.choice(PLANNERS)}
        blocks = [b for b in (None, 8, 16, 32)
                  if canvas(body["max_tokens"], b or min(SERVER_BLOCK, body["max_tokens"])) + length <= room]
        if not blocks:
            raise ValueError(f"--max-tokens {body['max_tokens']} does not fit the model's {room} tokens "
                             f"after a prompt of {length}")
        if (block := rng.choice(blocks)) is not None:
            body["block_length"] = block
        sampled = rng.random() < SAMPLED
        body["temperature"] = 0.8 if sampled else 0.0
        if sampled:
            body["seed"] = rng.randrange(2**31)
        if rng.random() < STOPPED:
            body["stop"] = rng.choice(STOPS)
        if rng.random() < TWO:
            body["n"] = 2
        if cache != "none":
            body["cache"] = cache
        bodies.append(body)
    return bodies


def offline(den, tok, bodies: list[dict], ids: list[list[int]]) -> list[list[str]]:  # type: ignore[no-untyped-def]
    """Each request alone through ``generate``: its canvas (whole blocks), planner, sampling, seed, n; cut as served."""
    out = []
    for body, row in zip(bodies, ids, strict=True):
        block, max_tokens = block_of(body), body["max_tokens"]
        config = unmask.GenerationConfig(gen_length=canvas(max_tokens, block), block_length=block,
                                         planner=body.get("planner", "dilated"),
                                         sampling={"temperature": body.get("temperature", 0.0)}, seed=body.get("seed", 0),
                                         cache=body.get("cache", "none"))
        gen = unmask.generate(den, [row] * body.get("n", 1), config)
        stop = body.get("stop", [])
        stop = [stop] if isinstance(stop, str) else stop
        out.append(decode_rows(tok, gen.generated[:, :max_tokens], den.spec.eos_ids, stop))
    return out


def row_calls(phase: Phase) -> tuple[float, float, str]:
    """``(row-calls, denoiser calls, source)`` of a phase: the server's counters, else its responses."""
    c = phase.counters
    if "unmask_denoiser_calls_total" in c and "unmask_denoiser_row_calls_total" in c:
        return c["unmask_denoiser_row_calls_total"], c["unmask_denoiser_calls_total"], "the server's counters"
    batches: dict[tuple, int] = Counter()
    for body in phase.bodies.values():  # the requests of one generate call share its rows, calls and seconds
        u = body["unmask"]
        batches[(u["batch_rows"], u["batched_calls"], u["seconds"])] += len(body["choices"])
    assert all(rows == n for (rows, _, _), n in batches.items()), "requests of one batch do not add up to its rows"
    calls = sum(k[1] for k in batches)
    if "unmask_nfe_total" in c:
        assert calls == c["unmask_nfe_total"], f"{calls} calls in the responses, {c['unmask_nfe_total']:g} in /metrics"
    return sum(k[0] * k[1] for k in batches), calls, "the responses' `unmask` field (rows x calls per generate call)"


def server_note(server: list[str]) -> str:
    return f"server `{shlex.join(server)}`; torch {torch.__version__}, {platform.processor() or platform.machine()}"


def command() -> str:
    return f"`{' '.join(shlex.quote(a) for a in ['python', *sys.argv])}`"


def report(phases: list[Phase], args: argparse.Namespace, server: list[str]) -> str:
    """The default mode's table: equal greedy requests, rows per generate call and the model's time per request."""
    seq, conc = phases
    model_ms = [1000 * sum(b["unmask"]["seconds"] / b["unmask"]["batch_rows"] for b in p.bodies.values()) / len(p.bodies)
                for p in phases]
    lines = [
        "# Serving load (tiny-arith, CPU)", "", command(), "",
        f"{args.requests} held-out problems as greedy completions (max_tokens 32, DUS, one block of 32: 5 calls each); "
        f"{server_note(server)}. Every request answered exactly once with status 200, and "
        "every answer equal to offline `generate` on its prompt alone.", "",
        "| phase | clients | requests | wall s | requests/s | p50 ms | p99 ms | mean batch rows | generate calls | model ms/request |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p, ms in zip(phases, model_ms):
        calls, rows = p.counters["unmask_batch_rows_count"], p.counters["unmask_batch_rows_sum"]
        lines.append(f"| {p.name} | {p.clients} | {len(p.bodies)} | {p.seconds:.2f} | {p.rps:.1f} | {p.pct(0.5):.0f} | "
                     f"{p.pct(0.99):.0f} | {rows / max(calls, 1):.1f} | {calls:.0f} | {ms:.1f} |")
    lines += ["", f"Throughput, concurrent against sequential: **{conc.rps / seq.rps:.2f}x**. Batching cut the model's own "
              f"time per request (each batch's generate seconds shared over its rows, as the server reports them) from "
              f"{model_ms[0]:.1f} ms to {model_ms[1]:.1f} ms ({model_ms[0] / model_ms[1]:.2f}x)."]
    return "\n".join(lines) + "\n"


def mixed_report(phases: list[Phase], bodies: list[dict], args: argparse.Namespace, server: list[str], started: str) -> str:
    """The mixed mode's tables: throughput and rows per denoiser call per phase, latency per max_tokens class."""
    seq, conc = phases
    settings = {(canvas(b["max_tokens"], block_of(b)), block_of(b), b["planner"], b["temperature"]) for b in bodies}
    classes = sorted(Counter(b["max_tokens"] for b in bodies).items())
    blocks = sorted(Counter(b.get("block_length", 0) for b in bodies).items())
    lines = [
        "# Serving load, mixed requests (tiny-arith, CPU)", "", command(), "",
        f"Run {started}; {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f} at the start; "
        f"{server_note(server)}.", "",
        f"{len(bodies)} held-out problems (seed {args.seed}) as completions with mixed settings: max_tokens "
        + ", ".join(f"{k} ({n})" for k, n in classes) + "; planners "
        + ", ".join(f"`{p}` ({n})" for p, n in sorted(Counter(b['planner'] for b in bodies).items()))
        + f"; temperature 0 ({sum(b['temperature'] == 0 for b in bodies)}) or 0.8 with a seed "
        f"({sum(b['temperature'] > 0 for b in bodies)}); stop strings on {sum('stop' in b for b in bodies)}; n=2 on "
        f"{sum(b.get('n', 1) == 2 for b in bodies)}; block_length "
        + ", ".join(f"{k} ({n})" if k else f"not given ({n}: the server's {SERVER_BLOCK}, or max_tokens when smaller)"
                    for k, n in blocks) + f"; {len(settings)} distinct "
        f"decoding settings (canvas, block, planner, temperature); cache `{args.cache}` on every request. "
        "Sequential: the requests one at a time, in order; "
        f"concurrent: {conc.clients} clients, Poisson arrivals at {args.rate:g}/s, a client sending its next request at "
        "its arrival time or when its previous answer came, whichever is later. Latency: from sending a request to "
        "its answer. Every request answered exactly once with status 200, and every answer (each of its n choices) "
        "equal to offline `generate` of that request alone.", "",
        "| phase | clients | requests | wall s | requests/s | generated tokens/s | denoiser calls | mean rows per denoiser call |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    sources = set()
    for p in phases:
        rc, calls, source = row_calls(p)
        sources.add(source)
        lines.append(f"| {p.name} | {p.clients} | {len(p.bodies)} | {p.seconds:.2f} | {p.rps:.2f} | {p.tokens_per_s:.1f} | "
                     f"{calls:.0f} | {rc / max(calls, 1):.2f} |")
    lines += ["", f"Throughput, concurrent against sequential: **{conc.rps / seq.rps:.2f}x** requests/s, "
              f"**{conc.tokens_per_s / seq.tokens_per_s:.2f}x** generated tokens/s. Rows per denoiser call from "
              f"{' and '.join(sorted(sources))}.", "",
              "| max_tokens | requests | sequential p50 ms | sequential p99 ms | concurrent p50 ms | concurrent p99 ms |",
              "|---:|---:|---:|---:|---:|---:|"]
    for k, n in classes:
        only = [i for i, b in enumerate(bodies) if b["max_tokens"] == k]
        lines.append(f"| {k} | {n} | {seq.pct(0.5, only):.0f} | {seq.pct(0.99, only):.0f} | {conc.pct(0.5, only):.0f} | "
                     f"{conc.pct(0.99, only):.0f} |")
    return "\n".join(lines) + "\n"


def check(name: str, phase: Phase, expected: list[list[str]]) -> None:
    got = texts(phase)
    wrong = [i for i in range(len(expected)) if got[i] != expected[i]]
    assert not wrong, (f"{name}: {len(wrong)} answers differ from offline generate, e.g. request {wrong[0]}: "
                       f"{got[wrong[0]]} != {expected[wrong[0]]}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mixed", action="store_true", help="requests with mixed settings and Poisson arrivals")
    p.add_argument("--requests", type=int, default=None, help="default 200, or 400 with --mixed")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--rate", type=float, default=100.0, help="--mixed: mean arrivals per second (Poisson)")
    p.add_argument("--max-tokens", default="16,24,32,48", help="--mixed: max_tokens classes (comma-separated)")
    p.add_argument("--seed", type=int, default=0, help="--mixed: seed of the mix and of the arrival times")
    p.add_argument("--cache", default="none", choices=("none", "prefix", "dual"), help="--mixed: every request's cache")
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=None, help="the server's torch threads (default: torch's choice)")
    p.add_argument("--out", default=None, help="the report's file (default: a fresh runs/bench/serve_load-TIME/ folder; "
                   "--out benchmarks/serve_load_mixed.md replaces the committed one)")
    args = p.parse_args(argv)
    args.requests = args.requests or (400 if args.mixed else 200)
    if args.requests < 1 or args.clients < 1:
        p.error("--requests and --clients must be positive")
    if not args.rate > 0:
        p.error(f"--rate must be a positive number, got {args.rate:g}")
    try:
        classes = sorted({int(k) for k in args.max_tokens.split(",")})
    except ValueError:
        p.error(f"--max-tokens must be comma-separated ints, got {args.max_tokens!r}")
    if classes[0] < 1:
        p.error(f"--max-tokens must be positive, got {args.max_tokens!r}")
    name = "serve_load_mixed.md" if args.mixed else "serve_load.md"
    out = Path(args.out) if args.out else output_dir(None, "serve_load") / name
    out.parent.mkdir(parents=True, exist_ok=True)
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    torch.set_num_threads(args.threads or 1)  # the offline reference; the server sets its own
    prompts = [item.prompt for item in heldout(args.requests, "test")]
    den, tok = unmask.load("tiny-arith")
    ids = unmask.encode_prompts(tok, prompts, chat=False, add_bos=den.add_bos)
    if args.mixed:
        try:
            bodies = mixed_requests(prompts, [len(r) for r in ids], classes, den.spec.max_length or 2**62, args.seed,
                                    args.cache)
        except ValueError as err:
            p.error(str(err))
    else:
        bodies = [{"prompt": q, "max_tokens": 32} for q in prompts]
    rng = random.Random(args.seed + 1)
    arrivals = list(accumulate(rng.expovariate(args.rate) for _ in bodies)) if args.mixed else None
    print(f"offline reference: {len(bodies)} requests, one generate call each", flush=True)
    expected = offline(den, tok, bodies, ids)
    server = ["--max-batch", str(args.max_batch), "--log-level", "warning",
              "--queue-limit", str(max(256, args.requests))] + (["--threads", str(args.threads)] if args.threads else [])
    if args.mixed:
        server += ["--block-length", str(SERVER_BLOCK), "--timeout-s", "600"]
    with serve_process(server) as url:
        asyncio.run(run_phase("warm-up", url, bodies[:8], 1))
        phases = []
        for name, clients in (("sequential", 1), ("concurrent", args.clients)):
            phase = asyncio.run(run_phase(name, url, bodies, clients, arrivals if clients > 1 else None))
            check(name, phase, expected)
            print(f"{name}: {phase.rps:.2f} requests/s, {phase.tokens_per_s:.1f} tokens/s, p50 {phase.pct(0.5):.0f} ms, "
                  f"p99 {phase.pct(0.99):.0f} ms", flush=True)
            phases.append(phase)
    shown = [a for a in server if a not in ("--log-level", "warning")]
    text = mixed_report(phases, bodies, args, shown, started) if args.mixed else report(phases, args, shown)
    out.write_text(text)
    Console(width=None if sys.stdout.isatty() else 140).print(Markdown(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
