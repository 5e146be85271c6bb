"""CPU speed benchmark: planners x cache modes x batch sizes on a LLaDA-shaped random model.

    python benchmarks/speed.py                 # hidden 512, 8 layers, vocab 32k; prompt 128, gen 256, block 32
    python benchmarks/speed.py --quick         # tiny shapes (a smoke run)
    python benchmarks/speed.py --planners dilated "threshold(tau=0.9)" --batches 1 8 --runs 3
    python benchmarks/speed.py --planners "topk(steps={gen})" --batches 1 --append   # add cells to speed.md

The model is transformers' LlamaForCausalLM in unmask's native adapter (the
LLaDA path), random weights, built in memory. A random model's confidence is
not a trained one's, so the call counts of adaptive planners (threshold) say
little; the time per call does not depend on the planner. Each cell is the
median of up to ``--runs`` generations (greedy, no early exit). The denoiser is
wrapped to time its calls, so "loop overhead" = (wall - time inside the
denoiser) / time inside the denoiser: everything the loop does per call
(scores, planner, bookkeeping) relative to the forward it pays for.

Writes a markdown table to ``--out`` (default benchmarks/speed.md). Not a test.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from unmask import CachingDenoiser, GenerationConfig, generate
from unmask.models.synthetic import random_llada


class Timed(CachingDenoiser):
    """A denoiser wrapper that adds up the seconds spent inside the wrapped model's calls."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.spec = inner.spec
        self.lookbehind = inner.lookbehind
        self.seconds = 0.0
        self._cuda = inner.device.type == "cuda"

    @property
    def device(self) -> torch.device:
        return self.inner.device

    def _timed(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        if self._cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        if self._cuda:
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - t0
        return out

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._timed(self.inner, *args, **kwargs)

    def new_cache(self, batch: int, length: int) -> Any:
        return self.inner.new_cache(batch, length)

    def forward_cached(self, *args: Any) -> Any:
        return self._timed(self.inner.forward_cached, *args)


@dataclass
class Cell:
    planner: str
    cache: str
    batch: int
    runs: int  # generations the medians are taken over
    calls: float  # denoiser calls per sequence (one batched call serves every row)
    ms_call: float  # wall time per call
    fwd_ms_call: float  # time inside the denoiser per call
    overhead: float  # (wall - forward) / forward
    tokens_s: float  # generated tokens per second over the batch


def measure(den: Any, planner: str, cache: str, batch: int, args: argparse.Namespace) -> Cell:
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(0, den.spec.vocab_size - 2, (batch, args.prompt_length), generator=g)
    cfg = GenerationConfig(gen_length=args.gen_length, block_length=args.block_length, planner=planner, cache=cache,
                           early_exit=False)
    rows: list[tuple[int, float, float, float]] = []
    while len(rows) < args.runs and (not rows or sum(r[1] for r in rows) < args.budget_s):
        timed = Timed(den)
        out = generate(timed, prompts, cfg)
        rows.append((out.nfe, out.seconds, timed.seconds, out.generated.numel() / out.seconds))
    nfe, wall, fwd, tps = (statistics.median(col) for col in zip(*rows))
    return Cell(planner, cache, batch, len(rows), nfe, 1000 * wall / nfe, 1000 * fwd / nfe, (wall - fwd) / fwd, tps)


def ratio(cells: list[Cell], key: Any, num: dict, den: dict) -> list[float]:
    index = {(c.planner, c.cache, c.batch): c for c in cells}
    out = []
    for c in cells:
        a, b = index.get((c.planner, num.get("cache", c.cache), num.get("batch", c.batch))), index.get(
            (c.planner, den.get("cache", c.cache), den.get("batch", c.batch)))
        if a is c and b is not None:
            out.append(key(a, b))
    return out


def report(cells: list[Cell], args: argparse.Namespace, shape: str, seconds: float) -> str:
    lines = [
        "# Speed (CPU)", "",
        f"`{' '.join(shlex.quote(a) for a in ['python', *sys.argv])}`", "",
        f"{shape}; prompt {args.prompt_length}, gen {args.gen_length}, block {args.block_length}; "
        f"float32, torch {torch.__version__}, {torch.get_num_threads()} thread(s), {platform.processor() or platform.machine()}; "
        f"medians over the runs shown; total {seconds / 60:.1f} min.", "",
        "| planner | cache | batch | runs | calls/seq | ms/call | forward ms/call | loop overhead | tokens/s | per-call speedup vs none |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    index = {(c.planner, c.cache, c.batch): c for c in cells}
    for c in cells:
        base = index.get((c.planner, "none", c.batch))
        speed = f"{base.ms_call / c.ms_call:.2f}x" if base else "-"
        lines.append(f"| {c.planner} | {c.cache} | {c.batch} | {c.runs} | {c.calls:.0f} | {c.ms_call:.1f} | {c.fwd_ms_call:.1f} | "
                     f"{100 * c.overhead:.1f}% | {c.tokens_s:.1f} | {speed} |")
    lines += ["", "Summary:", ""]
    lines.append(f"- loop overhead: max {100 * max(c.overhead for c in cells):.1f}%, "
                 f"median {100 * statistics.median(c.overhead for c in cells):.1f}% of forward time per call")
    for mode in ("prefix", "dual"):
        r = ratio(cells, lambda a, b: b.ms_call / a.ms_call, {"cache": mode}, {"cache": "none"})
        if r:
            lines.append(f"- {mode} vs none, per call: {min(r):.2f}x to {max(r):.2f}x faster")
    batches = sorted({c.batch for c in cells})
    if len(batches) > 1:
        lo, hi = batches[0], batches[-1]
        r = ratio(cells, lambda a, b: a.tokens_s / b.tokens_s, {"batch": hi}, {"batch": lo})
        if r:
            lines.append(f"- batch {hi} vs batch {lo} throughput (tokens/s): {min(r):.2f}x to {max(r):.2f}x")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny shapes (hidden 64, 2 layers, vocab 4k; prompt 16, gen 64, block 16)")
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--intermediate", type=int, default=1536, help="MLP width (LLaDA-8B: 3 x hidden)")
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--logit-std", type=float, default=None,
                   help="logit scale of the random model (default: plain init, logits ~0.45 std, so threshold(0.9) "
                        "reveals one token per call; larger values make it confident, like a trained model)")
    p.add_argument("--prompt-length", type=int, default=128)
    p.add_argument("--gen-length", type=int, default=256)
    p.add_argument("--block-length", type=int, default=32)
    p.add_argument("--planners", nargs="+", default=["dilated", "topk(steps={gen})", "threshold(tau=0.9)"])
    p.add_argument("--caches", nargs="+", default=["none", "prefix", "dual"])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    p.add_argument("--runs", type=int, default=3, help="generations per cell (medians are reported)")
    p.add_argument("--budget-s", type=float, default=float("inf"),
                   help="stop repeating a cell once its runs took this long (at least one run)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--out", default=str(Path(__file__).with_name("speed.md")))
    p.add_argument("--append", action="store_true", help="add this run's section to --out instead of replacing it")
    args = p.parse_args(argv)
    if args.quick:
        args.hidden, args.layers, args.heads, args.intermediate, args.vocab = 64, 2, 4, 192, 4096
        args.prompt_length, args.gen_length, args.block_length, args.runs = 16, 64, 16, min(args.runs, 2)
    torch.set_num_threads(args.threads)
    den = random_llada(hidden=args.hidden, layers=args.layers, heads=args.heads, intermediate=args.intermediate,
                       vocab=args.vocab, max_length=args.prompt_length + args.gen_length, device="cpu",
                       dtype=torch.float32, logit_std=args.logit_std)
    shape = (f"LLaDA-shaped random model: hidden {args.hidden}, {args.layers} layers, {args.heads} heads, "
             f"MLP {args.intermediate}, vocab {args.vocab}")
    warm = argparse.Namespace(**{**vars(args), "gen_length": args.block_length, "runs": 1})
    for cache in args.caches:
        measure(den, "dilated", cache, 1, warm)
    t0 = time.perf_counter()
    cells = []
    for batch in args.batches:
        for planner in args.planners:
            for cache in args.caches:
                cell = measure(den, planner.format(gen=args.gen_length), cache, batch, args)
                cells.append(cell)
                print(f"{cell.planner:>22} {cell.cache:>6} b{cell.batch}: {cell.calls:4.0f} calls, {cell.ms_call:8.1f} ms/call, "
                      f"overhead {100 * cell.overhead:5.1f}%, {cell.tokens_s:8.1f} tok/s", flush=True)
    text = report(cells, args, shape, time.perf_counter() - t0)
    out = Path(args.out)
    if args.append and out.exists():
        text = out.read_text() + "\n" + text.replace("# Speed (CPU)", "## More cells", 1)
    out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
