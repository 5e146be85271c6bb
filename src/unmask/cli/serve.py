"""``unmask serve``: the OpenAI-compatible server (FastAPI + uvicorn) for one model.

    unmask serve [--model tiny-arith] [--host 127.0.0.1] [--port 8000] [--max-batch 32] \\
        [--batch-wait-ms 5] [--queue-limit 256] [--timeout-s 60] [--device cuda] [--compile]

With no ``--model`` it serves the bundled tiny-arith model, so it runs on any
CPU. Settings are checked before the model is loaded. One server drives one
device; to scale out, run one per GPU (``--device cuda:0``, ``--port 8001``,
...) behind any HTTP load balancer: requests carry all their state.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a model over HTTP with OpenAI's API, request batching and a playground")
    p.add_argument("--model", default="tiny-arith", help="checkpoint directory, Hub id or bundled name (default tiny-arith)")
    p.add_argument("--served-model-name", default=None, help="the model id clients send (default: --model as given)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-batch", type=int, default=32, help="most rows (prompts x n) in one generate call (default 32)")
    p.add_argument("--batch-wait-ms", type=float, default=5.0,
                   help="longest wait for compatible requests to join a batch (default 5)")
    p.add_argument("--queue-limit", type=int, default=256, help="requests that may wait; more get 503 (default 256)")
    p.add_argument("--timeout-s", type=float, default=60.0, help="per-request limit; later answers are 504 (default 60)")
    p.add_argument("--max-tokens", type=int, default=None,
                   help="default max_tokens of a request (default: 32 for tiny-arith, else 128)")
    p.add_argument("--block-length", type=int, default=32, help="default block_length of a request (default 32)")
    p.add_argument("--planner", default="dilated", help="default planner spec of a request (default 'dilated')")
    p.add_argument("--chat-template", metavar="FILE", default=None,
                   help="a Jinja chat template for models whose tokenizer has none (chat requests need one)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--dtype", default=None, help="weights dtype (default: bf16 on cuda, fp32 on cpu)")
    p.add_argument("--quantize", choices=("none", "int8", "int4"), default="none",
                   help="weight-only quantization with torchao (the 'quant' extra); int4 runs in bfloat16")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own choice)")
    p.add_argument("--compile", action="store_true", help="static shapes, compiled (and on CUDA, graph-replayed) calls")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    p.set_defaults(func=run)


def settings_from(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """The :class:`~unmask.serve.ServeSettings` of the command line (raises ``ValueError`` before any loading)."""
    from ..serve import ServeSettings

    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be a positive int, got {args.threads}")
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be in [0, 65535], got {args.port}")
    if args.chat_template is not None and not Path(args.chat_template).is_file():
        raise FileNotFoundError(f"--chat-template {args.chat_template!r} does not exist")
    max_tokens = args.max_tokens if args.max_tokens is not None else 32 if args.model == "tiny-arith" else 128
    try:
        return ServeSettings(model_name=args.served_model_name or args.model, max_batch=args.max_batch,
                             batch_wait_ms=args.batch_wait_ms, queue_limit=args.queue_limit, timeout_s=args.timeout_s,
                             max_tokens=max_tokens, block_length=args.block_length, planner=args.planner,
                             compile=args.compile)
    except ValueError as err:  # name the flag: max_batch -> --max-batch
        name = str(err).split(" ", 1)[0]
        raise ValueError(f"--{name.replace('_', '-')}: {err}") from None


def warm_up(denoiser: Any, settings: Any, console: Console) -> None:
    """Compile the default request's calls for one row and for several (every batch bucket shares those graphs)."""
    from ..config import GenerationConfig
    from ..loop import generate

    block = min(settings.block_length, settings.max_tokens)
    cfg = GenerationConfig(gen_length=-(-settings.max_tokens // block) * block, block_length=block,
                           planner=settings.planner, compile=True)
    prompt = [denoiser.spec.pad_id]
    for rows in (1, 2):
        generate(denoiser, [prompt] * rows, cfg)
    warm = denoiser.compiled().warmup_seconds
    console.print(f"compiled {len(warm)} call shapes in {sum(warm.values()):.1f} s before serving", soft_wrap=True)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from ..models import load
    from ..serve import Served, create_app

    settings = settings_from(args)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    console = Console(stderr=True, highlight=False)
    denoiser, tokenizer = load(args.model, device=args.device, dtype=args.dtype, quantize=args.quantize)
    if settings.compile:  # a model without a compiled path is refused now, and the first requests do not compile
        warm_up(denoiser, settings, console)
    if args.chat_template is not None:
        tokenizer.chat_template = Path(args.chat_template).read_text(encoding="utf-8")
    app = create_app(Served(denoiser, tokenizer, settings))
    console.print(f"[bold]unmask serve[/]: {settings.model_name} on {denoiser.device}, batches of up to "
                  f"{settings.max_batch} rows; OpenAI API at /v1, playground at / "
                  f"(http://{args.host}:{args.port}/)", soft_wrap=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0
