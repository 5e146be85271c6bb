"""CPU speed of DiffusionGemma: unmask's engine against transformers' own ``generate``, same model, same run.

    python benchmarks/diffusion_gemma_speed.py                # hidden 64, 2 layers, vocab 1024, canvas 32, batch 8
    python benchmarks/diffusion_gemma_speed.py --reps 5 --canvases 3

The model is transformers' ``DiffusionGemmaForBlockDiffusion`` with random
weights (std ``--init-std``), built in memory in the layout of the test
fixtures (sliding-window layers then a full-attention one, one routed expert
beside the dense MLP), far smaller than the 26B-A4B checkpoint. Both sides
run DiffusionGemma's sampler with the same settings (``--sampler``: the
entropy bound, temperature schedule, ``max_calls`` and stopping rule; the
defaults' ``confidence`` is raised to 1.0 so that random-weight rows stop on
a stable argmax, at different calls, as trained rows do on confident ones).
transformers decodes the whole batch until its last row stops, every canvas;
unmask's engine takes a row out of the calls once it stops (and once it holds
an EOS), so "calls per canvas" differs: transformers' is its decoder calls
per canvas, unmask's the mean over rows of the calls each row took part in.
Tokens/s counts ``batch x gen`` tokens over the wall time of one generation
(median of ``--reps``, the two sides interleaved). Not a test.

Random weights never settle: the argmax follows the random canvas, so no row
stops before ``max_calls`` on either side. ``--converge`` adds, as the
fidelity tests do, ``rate[n] * k`` to the logit of a fixed target token at
call ``k`` of each canvas (row ``n``'s own rate, spread over
``--rates``), in transformers' forward and in unmask's denoiser alike: rows
then stop at different calls, as rows of a trained model do.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import statistics
import sys
import time

import torch

from unmask import generate
from unmask.models.diffusion_gemma import DiffusionGemmaDenoiser
from unmask.models.diffusion_gemma_engine import DiffusionGemma
from unmask.planners import parse_planner


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--vocab", type=int, default=1024)
    p.add_argument("--canvas", type=int, default=32)
    p.add_argument("--canvases", type=int, default=2, help="canvases generated per row")
    p.add_argument("--prompt", type=int, default=16)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--init-std", type=float, default=0.3)
    p.add_argument("--sampler", default="entropy_bound(entropy_bound=0.1, max_calls=48, confidence=1.0)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--converge", action="store_true", help="rows converge at their own rates (see above)")
    p.add_argument("--rates", type=float, nargs=2, default=[0.3, 3.0], help="lowest and highest rate")
    return p.parse_args()


def bias(args: argparse.Namespace, rows: torch.Tensor, call: torch.Tensor) -> torch.Tensor:
    """``[n, C, V]`` added to the logits of rows ``rows [n]`` at their calls ``call [n]`` within the canvas."""
    rates = torch.linspace(args.rates[0], args.rates[1], args.batch)[rows]
    target = torch.randint(3, args.vocab - 3, (args.batch, args.canvas), generator=torch.Generator().manual_seed(2))
    out = torch.zeros(len(rows), args.canvas, args.vocab)
    return out.scatter_(-1, target[rows, :, None], (rates * call)[:, None, None].expand(-1, args.canvas, 1))


class Converging(DiffusionGemma):
    """The engine denoiser with the per-row bias (a row's slot is its index: one request, slots lowest first)."""

    def __init__(self, ops, args) -> None:  # type: ignore[no-untyped-def]
        super().__init__(ops)
        self.args, self.calls = args, {}

    def forward_canvas(self, arena, io, canvas):  # type: ignore[no-untyped-def]
        logits = super().forward_canvas(arena, io, canvas)
        k = [0 if start else self.calls[s] for s, start in zip(io.slots, io.starts, strict=True)]
        self.calls.update({s: c + 1 for s, c in zip(io.slots, k, strict=True)})
        return logits + bias(self.args, torch.tensor(io.slots), torch.tensor(k, dtype=torch.float32))


def build(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion

    d = args.hidden
    text = dict(vocab_size=args.vocab, hidden_size=d, intermediate_size=2 * d, num_hidden_layers=2,
                layer_types=["sliding_attention", "full_attention"], num_attention_heads=4, num_key_value_heads=2,
                head_dim=d // 4, global_head_dim=d // 2, num_global_key_value_heads=1, sliding_window=16,
                num_experts=1, top_k_experts=1, moe_intermediate_size=d // 2, max_position_embeddings=4096,
                pad_token_id=0, eos_token_id=1, bos_token_id=2, use_bidirectional_attention="vision",
                initializer_range=args.init_std)
    vision = dict(model_type="gemma4_vision", hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                  num_attention_heads=2, num_key_value_heads=2, head_dim=8, position_embedding_size=64)
    config = DiffusionGemmaConfig(text_config=text, vision_config=vision, canvas_length=args.canvas,
                                  boi_token_id=args.vocab - 3, eoi_token_id=args.vocab - 2,
                                  image_token_id=args.vocab - 1, initializer_range=args.init_std)
    torch.manual_seed(0)
    model = DiffusionGemmaForBlockDiffusion(config).eval()
    ops = DiffusionGemmaDenoiser(model, (1,), 0)
    return model, Converging(ops, args) if args.converge else DiffusionGemma(ops)


def run_transformers(model, prompts: torch.Tensor, args, rule) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    from transformers import EntropyBoundSamplerConfig

    calls = k = 0
    forward = model.forward

    def counting(**kw):  # type: ignore[no-untyped-def]
        nonlocal calls, k
        calls += 1
        k = 0 if kw.get("self_conditioning_logits") is None else k + 1  # a canvas's first call has none
        out = forward(**kw)
        if args.converge:
            rows = torch.arange(args.batch)
            out.logits = out.logits + bias(args, rows, torch.full((args.batch,), float(k)))
        return out

    model.forward = counting
    try:
        start = time.perf_counter()
        model.generate(prompts, max_new_tokens=args.canvases * args.canvas, max_denoising_steps=rule.max_calls,
                       sampler_config=EntropyBoundSamplerConfig(entropy_bound=rule.entropy_bound),
                       t_min=rule.t_min, t_max=rule.t_max, stability_threshold=rule.stability,
                       confidence_threshold=rule.confidence)
        seconds = time.perf_counter() - start
    finally:
        del model.forward
    return seconds, calls / args.canvases


def run_unmask(gemma, prompts: torch.Tensor, args) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    cfg = dict(gen_length=args.canvases * args.canvas, block_length=args.canvas, planner=args.sampler, seed=0)
    start = time.perf_counter()
    out = generate(gemma, prompts, cfg)
    seconds = time.perf_counter() - start
    return seconds, float(out.nfe_per_row.double().mean()) / args.canvases


def main() -> None:
    args = parse()
    torch.set_num_threads(args.threads)
    rule = parse_planner(args.sampler)
    model, gemma = build(args)
    prompts = torch.randint(3, args.vocab - 3, (args.batch, args.prompt), generator=torch.Generator().manual_seed(1))
    times: dict[str, list[float]] = {"transformers": [], "unmask": []}
    calls: dict[str, list[float]] = {"transformers": [], "unmask": []}
    with torch.no_grad():
        for _ in range(args.reps):
            for name, fn in (("transformers", lambda: run_transformers(model, prompts, args, rule)),
                             ("unmask", lambda: run_unmask(gemma, prompts, args))):
                seconds, per_canvas = fn()
                times[name].append(seconds)
                calls[name].append(per_canvas)
    tokens = args.batch * args.canvases * args.canvas
    print(f"# {shlex.join([sys.argv[0], *sys.argv[1:]])}")
    print(f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, threads {args.threads}")
    print("| engine | batch | tokens/s (median) | seconds (median) | calls per canvas |")
    print("|---|---|---|---|---|")
    base = statistics.median(times["transformers"])
    for name in ("transformers", "unmask"):
        t = statistics.median(times[name])
        print(f"| {name} | {args.batch} | {tokens / t:.0f} | {t:.3f} | {statistics.median(calls[name]):.1f} |")
    print(f"\nspeed-up (transformers time / unmask time): {base / statistics.median(times['unmask']):.2f}x")


if __name__ == "__main__":
    main()
