"""GPU speed benchmark: eager and compiled side by side on a LLaDA-8B-shaped model, against the weight floor.

    python benchmarks/gpu_speed.py --compile                 # d 4096, 32 layers, vocab 126464, bf16, batch 1 and 8
    python benchmarks/gpu_speed.py --compile --device cpu --small   # the same code path on a small CPU shape
    for q in none int8 int4; do python benchmarks/gpu_speed.py --compile --logit-std 12 --quantize $q \
        --out benchmarks/gpu_speed_$q.md; done     # weight-only int8 / int4 (torchao) against bf16, one machine

A decoding call has to stream every weight from device memory at least once,
so ``bytes of weights / measured copy bandwidth`` is a floor on its time.
Part 1 times single calls of each kind (a cached segment over the block, the
block-start call over the whole canvas, an uncached call) in the eager
adapter and, with ``--compile``, in the compiled runner (static shapes,
torch.compile, CUDA graphs), beside transformers' own forward (eager, and
with ``--baseline-compile`` compiled with ``mode="reduce-overhead"``), with the
warm-up each compiled shape cost. Part 2 runs whole generations for each
planner x cache mode x batch, eager and compiled, and the LLaDA reference
sampler's rule restated (full forward and float64 softmax every call), and
reports calls, ms per call, x floor, tokens/s, and how many tokens the
compiled run shares with the eager one. Part 3 checks the targets. Writes
markdown to ``--out``.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from unmask import GenerationConfig, generate
from unmask.models import weight_bytes as stored_bytes
from unmask.models.loading import parse_dtype
from unmask.models.quantize import QUANTIZE_MODES, check_dtype, check_quantize, quantize_model
from unmask.models.synthetic import random_llada


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def per_call_ms(fn: Callable[[], object], device: torch.device, calls: int, repeats: int = 5) -> float:
    """Median over ``repeats`` of the mean time of ``calls`` back-to-back calls (one sync at each end)."""
    fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        sync(device)
        times.append(1000 * (time.perf_counter() - t0) / calls)
    return statistics.median(times)


def copy_floor_ms(den, device: torch.device) -> tuple[float, float, int]:
    """(floor in ms, copy bandwidth in B/s, weight bytes): a device-to-device copy, read + write counted.

    The bytes are the weights as stored: with ``--quantize`` the packed int8 / int4 data with its scales.
    """
    weight_bytes = stored_bytes(den.model)
    nbytes = min(weight_bytes, 2**30)
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    ms = per_call_ms(lambda: dst.copy_(src), device, 10)
    bandwidth = 2 * nbytes / (ms / 1000)
    return 1000 * weight_bytes / bandwidth, bandwidth, weight_bytes


def canvas(den, batch: int, prompt: int, gen: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, den.spec.vocab_size - 2, (batch, prompt), generator=g)
    x = torch.cat([ids, torch.full((batch, gen), den.spec.mask_id)], 1).to(den.device)
    am = torch.ones_like(x, dtype=torch.bool)
    return x, am, torch.arange(x.shape[1], device=den.device).expand_as(x)


@torch.no_grad()
def agreement(den, args: argparse.Namespace, batch: int) -> list[str]:
    """Compiled against eager logits of one call of each kind: the largest difference, and whether the argmax agrees
    wherever the eager top-2 gap exceeds four times that difference (elsewhere a flip is rounding, not a bug)."""
    total, bl, p = args.prompt_length + args.gen_length, args.block_length, args.prompt_length
    x, am, pos = canvas(den, batch, p, args.gen_length)
    lo, hi = p, p + bl
    comp = den.compiled()
    kinds = {"cache none": lambda d: d(x, am, pos, (lo, hi))}
    if den.can_cache():
        kinds["dual segment"] = lambda d: (d.forward_cached(x, pos, None, kv := d.new_cache(batch, total), 0, (lo, hi)),
                                           d.forward_cached(x[:, lo:hi], pos[:, lo:hi], None, kv, lo, (lo, hi)))[1]
    rows = []
    for kind, fn in kinds.items():
        a, b = fn(den).float(), fn(comp).float()
        diff = float((a - b).abs().max())
        top2 = a.topk(2, -1).values
        clear = (top2[..., 0] - top2[..., 1]) > 4 * diff
        same = a.argmax(-1) == b.argmax(-1)
        rows.append(f"| {kind} | {batch} | {diff:.3g} | {float(a.abs().max()):.3g} | {100 * float(same.float().mean()):.1f}% | "
                    f"{100 * float(clear.float().mean()):.1f}% | "
                    f"{100 * float(same[clear].float().mean()) if bool(clear.any()) else float('nan'):.1f}% |")
    return rows


def call_rows(den, args: argparse.Namespace, batch: int, floor: float) -> list[tuple[str, int, float, float | None]]:
    """Part 1: (what, batch, ms per call, warm-up s) for each call kind."""
    dev, bl, p, total = den.device, args.block_length, args.prompt_length, args.prompt_length + args.gen_length
    x, am, pos = canvas(den, batch, p, args.gen_length)
    lo, hi = p, p + bl
    rows: list[tuple[str, int, float, float | None]] = []
    model = den.model

    def hf(q: int) -> Callable[[], object]:
        return lambda: model(input_ids=x[:, :q], use_cache=False, is_causal=False).logits

    for q in (bl, total):
        rows.append((f"transformers forward, eager, {q} tokens", batch, per_call_ms(hf(q), dev, args.calls), None))
        if args.baseline_compile and batch == args.batches[0] and q == total:  # the block-start target's yardstick
            compiled = torch.compile(hf(q), mode="reduce-overhead", dynamic=False)
            t0 = time.perf_counter()
            for _ in range(3):
                compiled()
            warm = time.perf_counter() - t0
            rows.append((f"transformers forward, compiled (reduce-overhead), {q} tokens", batch,
                         per_call_ms(compiled, dev, args.calls), warm))
    variants = [("eager", den)] + ([("compiled", den.compiled())] if args.compile else [])
    for name, d in variants:
        kv = d.new_cache(batch, total)
        kinds = {
            f"unmask {name}, cache none (all {total} columns, block logits)": lambda d=d: d(x, am, pos, (lo, hi)),
            f"unmask {name}, block start (all {total} columns, keys/values kept)":
                lambda d=d, kv=kv: d.forward_cached(x, pos, None, kv, 0, (lo, hi)),
            f"unmask {name}, dual segment ({bl} queries over {total} keys)":
                lambda d=d, kv=kv: d.forward_cached(x[:, lo:hi], pos[:, lo:hi], None, kv, lo, (lo, hi)),
        }
        for what, fn in kinds.items():
            t0 = time.perf_counter()
            fn()
            sync(dev)
            warm = time.perf_counter() - t0 if name == "compiled" else None
            rows.append((what, batch, per_call_ms(fn, dev, args.calls), warm))
    return rows


@torch.no_grad()
def reference_low_confidence(den, prompts: torch.Tensor, gen: int, block: int, steps: int) -> tuple[torch.Tensor, int]:
    """LLaDA's ``generate(remasking='low_confidence')`` rule, restated: a full forward and a float64 softmax
    over the whole canvas every call, a linear number of reveals per step, greedy."""
    mask_id, model = den.spec.mask_id, den.model
    x = torch.cat([prompts, torch.full((prompts.shape[0], gen), mask_id, device=prompts.device)], 1)
    per_block, calls = steps // (gen // block), 0
    for b in range(gen // block):
        hi = prompts.shape[1] + (b + 1) * block
        counts = [block // per_block + (1 if i < block % per_block else 0) for i in range(per_block)]
        for k in counts:
            masked = x == mask_id
            logits = model(input_ids=x, use_cache=False, is_causal=False).logits
            calls += 1
            probs = torch.softmax(logits.to(torch.float64), dim=-1)
            x0 = logits.argmax(-1)
            conf = torch.gather(probs, -1, x0.unsqueeze(-1)).squeeze(-1)
            conf[:, hi:] = -torch.inf
            conf = torch.where(masked, conf, -torch.inf)
            chosen = torch.topk(conf, k, dim=-1).indices
            x.scatter_(1, chosen, x0.gather(1, chosen))
    return x[:, prompts.shape[1]:], calls


def generation_rows(den, args: argparse.Namespace, batch: int, floor: float) -> list[dict]:
    """Part 2: whole generations."""
    dev, rows = den.device, []
    g = torch.Generator().manual_seed(1)
    prompts = torch.randint(0, den.spec.vocab_size - 2, (batch, args.prompt_length), generator=g).to(dev)
    for planner in args.planners:
        spec = planner.format(gen=args.gen_length)
        for cache in args.caches:
            eager_tokens = None
            for compiled in ([False, True] if args.compile else [False]):
                cfg = GenerationConfig(gen_length=args.gen_length, block_length=args.block_length, planner=spec,
                                       cache=cache, early_exit=False, compile=compiled)
                generate(den, prompts, cfg)  # warm-up (compiles new shapes)
                runs = [generate(den, prompts, cfg) for _ in range(args.runs)]
                seconds = statistics.median(r.seconds for r in runs)
                out = runs[0]
                same = None
                if compiled and eager_tokens is not None:
                    same = float((out.generated == eager_tokens).float().mean())
                if not compiled:
                    eager_tokens = out.generated
                ms = 1000 * seconds / out.nfe
                rows.append(dict(what=spec, cache=cache, compiled=compiled, batch=batch, calls=out.nfe, ms=ms,
                                 floor=ms / floor, tps=out.generated.numel() / seconds, same=same))
                print(f"{spec:>22} {cache:>6} {'compiled' if compiled else 'eager':>8} b{batch}: {out.nfe:4d} calls, "
                      f"{ms:7.2f} ms/call ({ms / floor:4.1f}x floor), {rows[-1]['tps']:9.1f} tok/s", flush=True)
    if args.reference:
        reference_low_confidence(den, prompts, args.block_length, args.block_length, args.block_length)  # warm-up
        times, calls = [], 0
        for _ in range(args.runs):
            sync(dev)
            t0 = time.perf_counter()
            _, calls = reference_low_confidence(den, prompts, args.gen_length, args.block_length, args.gen_length)
            sync(dev)
            times.append(time.perf_counter() - t0)
        seconds = statistics.median(times)
        rows.append(dict(what=f"LLaDA reference rule, low_confidence, steps={args.gen_length}", cache="none",
                         compiled=False, batch=batch, calls=calls, ms=1000 * seconds / calls,
                         floor=1000 * seconds / calls / floor, tps=batch * args.gen_length / seconds, same=None))
    return rows


def checks(calls: list, gens: list[dict], floor: float, args: argparse.Namespace) -> list[str]:
    """Part 3: the targets, each met or not, from the rows measured."""
    out = []
    seg = {b: ms for what, b, ms, _ in calls if what.startswith("unmask compiled, dual segment")}
    if 1 in seg:
        out.append(f"- compiled dual segment at batch 1: {seg[1]:.2f} ms = {seg[1] / floor:.2f}x floor "
                   f"(target <= 1.6x): {'met' if seg[1] <= 1.6 * floor else 'NOT met'}")
    total = args.prompt_length + args.gen_length
    best = {b: ms for what, b, ms, _ in calls if what == f"transformers forward, compiled (reduce-overhead), {total} tokens"}
    start = {b: ms for what, b, ms, _ in calls if what.startswith("unmask compiled, block start")}
    for b in sorted(set(best) & set(start)):
        out.append(f"- compiled block start at batch {b}: {start[b]:.2f} ms vs transformers compiled {best[b]:.2f} ms = "
                   f"{start[b] / best[b]:.2f}x (target <= 1.2x): {'met' if start[b] <= 1.2 * best[b] else 'NOT met'}")
    index = {(r["what"], r["cache"], r["compiled"], r["batch"]): r for r in gens}
    for b, target in ((1, 800), (8, 3000)):
        r = index.get(("dilated", "dual", True, b))
        if r:
            out.append(f"- DUS B={args.block_length}, dual, compiled, batch {b}: {r['tps']:.0f} tokens/s "
                       f"(target >= {target} on an H200): {'met' if r['tps'] >= target else 'NOT met'}")
    for b in sorted({r["batch"] for r in gens}):
        for compiled in (False, True):
            pairs = [(index.get((p, "dual", compiled, b)), index.get((p, "none", compiled, b))) for p in {r["what"] for r in gens}]
            pairs = [(d, n) for d, n in pairs if d and n]
            if pairs:
                faster = all(d["ms"] < n["ms"] for d, n in pairs)
                ratios = ", ".join(f"{n['ms'] / d['ms']:.2f}x" for d, n in pairs)
                out.append(f"- dual faster than none per call, batch {b}, {'compiled' if compiled else 'eager'}: "
                           f"{'yes' if faster else 'NO'} ({ratios})")
        ref = next((r for r in gens if r["what"].startswith("LLaDA reference") and r["batch"] == b), None)
        one = index.get((f"topk(steps={args.gen_length})", "dual", True, b))
        if ref and one:
            ratio = one["tps"] / ref["tps"]
            out.append(f"- one token per call, dual, compiled vs the LLaDA reference rule, batch {b}: {ratio:.2f}x "
                       f"(target >= 3x): {'met' if ratio >= 3 else 'NOT met'}")
    return out


def report(args: argparse.Namespace, head: str, calls: list, gens: list[dict], floor: float, agree: list[str]) -> str:
    lines = ["# Speed against the weight-bandwidth floor: eager and compiled", "",
             f"`{' '.join(shlex.quote(a) for a in ['python', *sys.argv])}`", "", head, ""]
    if agree:
        lines += ["## 0. Compiled against eager logits", "",
                  "| call | batch | max abs difference | max abs logit | argmax agrees | positions with a clear top-1 "
                  "(gap > 4x the difference) | argmax agrees there |", "|---|---:|---:|---:|---:|---:|---:|", *agree, ""]
    lines += ["## 1. Single calls", "",
             "| call | batch | ms/call | x floor | warm-up s |", "|---|---:|---:|---:|---:|"]
    for what, b, ms, warm in calls:
        lines.append(f"| {what} | {b} | {ms:.2f} | {ms / floor:.2f} | {'' if warm is None else f'{warm:.1f}'} |")
    lines += ["", "## 2. Whole generations", "",
              "| planner | cache | path | batch | calls/seq | ms/call | x floor | tokens/s | tokens = eager |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in gens:
        same = "" if r["same"] is None else f"{100 * r['same']:.1f}%"
        lines.append(f"| {r['what']} | {r['cache']} | {'compiled' if r['compiled'] else 'eager'} | {r['batch']} | "
                     f"{r['calls']} | {r['ms']:.2f} | {r['floor']:.2f} | {r['tps']:.1f} | {same} |")
    lines += ["", "## 3. Targets", "", *checks(calls, gens, floor, args)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default=None, help="default: bfloat16 on cuda, float32 on cpu")
    p.add_argument("--small", action="store_true", help="small shape (hidden 256, 4 layers, vocab 8192; prompt 32, gen 64)")
    p.add_argument("--compile", action="store_true", help="also run the compiled path, side by side")
    p.add_argument("--baseline-compile", action="store_true",
                   help="also time transformers' forward under torch.compile(mode='reduce-overhead')")
    p.add_argument("--no-reference", dest="reference", action="store_false", help="skip the LLaDA reference rule")
    p.add_argument("--hidden", type=int, default=4096)
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--intermediate", type=int, default=12288)
    p.add_argument("--vocab", type=int, default=126464)
    p.add_argument("--logit-std", type=float, default=None,
                   help="logit scale of the random model (about 12 makes it as confident as a trained one, so "
                        "eager and compiled tokens can be compared; the default plain init is tie-prone)")
    p.add_argument("--quantize", choices=QUANTIZE_MODES, default="none",
                   help="weight-only int8 / int4 of the decoder layers (torchao); the floor is then the quantized "
                        "bytes over the measured bandwidth")
    p.add_argument("--prompt-length", type=int, default=128)
    p.add_argument("--gen-length", type=int, default=256)
    p.add_argument("--block-length", type=int, default=32)
    p.add_argument("--planners", nargs="+", default=["dilated", "topk(steps={gen})"])
    p.add_argument("--caches", nargs="+", default=["none", "dual"])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    p.add_argument("--runs", type=int, default=3, help="generations per cell (median)")
    p.add_argument("--calls", type=int, default=20, help="back-to-back calls per timing in part 1")
    p.add_argument("--out", default=str(Path(__file__).with_name("gpu_speed.md")))
    args = p.parse_args(argv)
    if args.small:
        args.hidden, args.layers, args.heads, args.intermediate, args.vocab = 256, 4, 4, 768, 8192
        args.prompt_length, args.gen_length, args.block_length, args.runs, args.calls = 32, 64, 16, 1, 3
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("CUDA is not available here; run with --device cpu --small for a smoke test")
    dtype = parse_dtype(args.dtype) if args.dtype else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    quant = check_quantize(args.quantize)
    check_dtype(quant, dtype)
    den = random_llada(hidden=args.hidden, layers=args.layers, heads=args.heads, intermediate=args.intermediate,
                       vocab=args.vocab, max_length=args.prompt_length + args.gen_length, device=device, dtype=dtype,
                       logit_std=args.logit_std)
    if quant is not None:
        quantize_model(den.model, quant, device, dtype)
    floor, bandwidth, weight_bytes = copy_floor_ms(den, device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    head = (f"{name}, {dtype}, weights {args.quantize}, torch {torch.__version__}; LLaDA-shaped random model: hidden {args.hidden}, {args.layers} "
            f"layers, {args.heads} heads, MLP {args.intermediate}, vocab {args.vocab} ({weight_bytes / 2**30:.2f} GiB); "
            f"prompt {args.prompt_length}, gen {args.gen_length}, block {args.block_length}. Copy bandwidth "
            f"{bandwidth / 1e9:.0f} GB/s, so one pass over the weights takes at least {floor:.2f} ms (the floor).")
    print(head, flush=True)
    calls: list = []
    gens: list[dict] = []
    agree = [row for batch in args.batches for row in agreement(den, args, batch)] if args.compile else []
    print("\n".join(agree), flush=True)
    for batch in args.batches:  # the report is rewritten after each part, so a run cut short keeps what it measured
        rows = call_rows(den, args, batch, floor)
        calls += rows
        for what, b, ms, warm in rows:
            print(f"{what:>70} b{b}: {ms:8.2f} ms ({ms / floor:5.2f}x floor){'' if warm is None else f', warm-up {warm:.1f} s'}",
                  flush=True)
        Path(args.out).write_text(report(args, head, calls, gens, floor, agree))
        gens += generation_rows(den, args, batch, floor)
        Path(args.out).write_text(report(args, head, calls, gens, floor, agree))
    print(Path(args.out).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
