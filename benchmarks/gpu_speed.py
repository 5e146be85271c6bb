"""GPU speed benchmark: a LLaDA-8B-shaped random model against the weight-bandwidth floor.

    python benchmarks/gpu_speed.py                          # d 4096, 32 layers, vocab 126464, bf16, batch 1 and 8
    python benchmarks/gpu_speed.py --device cpu --small     # the same code path on a small CPU shape (smoke test)

A decoding call has to stream every weight from device memory at least once,
so ``bytes of weights / measured copy bandwidth`` is a floor on its time; at
batch 1 a good implementation sits near it, and a cached segment call (dual)
can approach it even though a full-canvas call is compute-bound. For each
planner (dilated, threshold, topk with one token per call) and cache mode,
the table gives ms per call, the time inside the model per call, that time
over the floor, and tokens/s. Writes markdown to ``--out``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from speed import Cell, measure  # noqa: E402  (benchmarks/ is a folder of scripts, not a package)

from unmask.models.loading import parse_dtype  # noqa: E402
from unmask.models.synthetic import random_llada  # noqa: E402


def copy_bandwidth(device: torch.device, nbytes: int, repeats: int = 10) -> float:
    """Bytes per second moved by a device-to-device copy (read + write counted)."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        dst.copy_(src)
    sync()
    return 2 * nbytes * repeats / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default=None, help="default: bfloat16 on cuda, float32 on cpu")
    p.add_argument("--small", action="store_true", help="small shape (hidden 256, 4 layers, vocab 8192; prompt 32, gen 64)")
    p.add_argument("--hidden", type=int, default=4096)
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--intermediate", type=int, default=12288)
    p.add_argument("--vocab", type=int, default=126464)
    p.add_argument("--prompt-length", type=int, default=128)
    p.add_argument("--gen-length", type=int, default=256)
    p.add_argument("--block-length", type=int, default=32)
    p.add_argument("--planners", nargs="+", default=["dilated", "threshold(tau=0.9)", "topk(steps={gen})"])
    p.add_argument("--caches", nargs="+", default=["none", "dual"])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--budget-s", type=float, default=60.0, help="stop repeating a cell after this long (>= 1 run)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (CPU runs)")
    p.add_argument("--out", default=str(Path(__file__).with_name("gpu_speed.md")))
    args = p.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.small:
        args.hidden, args.layers, args.heads, args.intermediate, args.vocab = 256, 4, 4, 768, 8192
        args.prompt_length, args.gen_length, args.block_length, args.runs = 32, 64, 16, 1
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("CUDA is not available here; run with --device cpu --small for a smoke test")
    dtype = parse_dtype(args.dtype) if args.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    den = random_llada(hidden=args.hidden, layers=args.layers, heads=args.heads, intermediate=args.intermediate,
                       vocab=args.vocab, max_length=args.prompt_length + args.gen_length, device=device, dtype=dtype)
    weight_bytes = sum(t.numel() * t.element_size() for t in den.model.parameters())
    bandwidth = copy_bandwidth(device, min(weight_bytes, 2**30))
    floor_ms = 1000 * weight_bytes / bandwidth
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{name}: weights {weight_bytes / 2**30:.2f} GiB, copy bandwidth {bandwidth / 1e9:.0f} GB/s, "
          f"floor {floor_ms:.2f} ms per call", flush=True)

    warm = argparse.Namespace(**{**vars(args), "gen_length": args.block_length, "runs": 1})
    for cache in args.caches:
        measure(den, "dilated", cache, 1, warm)
    cells: list[Cell] = []
    for batch in args.batches:
        for planner in args.planners:
            for cache in args.caches:
                c = measure(den, planner.format(gen=args.gen_length), cache, batch, args)
                cells.append(c)
                print(f"{c.planner:>22} {c.cache:>6} b{c.batch}: {c.calls:4.0f} calls, {c.ms_call:8.2f} ms/call "
                      f"({c.fwd_ms_call / floor_ms:4.1f}x floor), {c.tokens_s:8.1f} tok/s", flush=True)

    lines = [
        "# Speed against the weight-bandwidth floor", "",
        f"`{' '.join(shlex.quote(a) for a in ['python', *sys.argv])}`", "",
        f"{name}, {dtype}; LLaDA-shaped random model: hidden {args.hidden}, {args.layers} layers, {args.heads} heads, "
        f"MLP {args.intermediate}, vocab {args.vocab} ({weight_bytes / 2**30:.2f} GiB of weights); prompt "
        f"{args.prompt_length}, gen {args.gen_length}, block {args.block_length}. Copy bandwidth "
        f"{bandwidth / 1e9:.0f} GB/s, so one pass over the weights takes at least {floor_ms:.2f} ms.", "",
        "| planner | cache | batch | calls/seq | ms/call | model ms/call | x floor | loop overhead | tokens/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cells:
        lines.append(f"| {c.planner} | {c.cache} | {c.batch} | {c.calls:.0f} | {c.ms_call:.2f} | {c.fwd_ms_call:.2f} | "
                     f"{c.fwd_ms_call / floor_ms:.1f} | {100 * c.overhead:.1f}% | {c.tokens_s:.1f} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
