"""``unmask serve``: the OpenAI-compatible server (FastAPI + uvicorn) for one model.

    unmask serve [--model tiny-arith] [--host 127.0.0.1] [--port 8000] [--max-batch 32] \\
        [--kv-memory 0.5] [--queue-limit 256] [--timeout-s 60] [--device cuda] [--compile] \\
        [--api-key KEY] [--allowed-hosts NAMES] [--allowed-origins ORIGINS] [--max-request-bytes 4194304] \\
        [--max-connections 512] [--read-timeout-s 10] [--shutdown-timeout-s 30]

With no ``--model`` it serves the bundled tiny-arith model, so it runs on any
CPU. Settings are checked before the model is loaded. One server drives one
device; to scale out, run one per GPU (``--device cuda:0``, ``--port 8001``,
...) behind any HTTP load balancer: requests carry all their state.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from rich.console import Console


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a model over HTTP with OpenAI's API, request batching and a playground")
    p.add_argument("--model", default="tiny-arith", help="checkpoint directory, Hub id or bundled name (default tiny-arith)")
    p.add_argument("--served-model-name", default=None, help="the model id clients send (default: --model as given)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-batch", type=int, default=32,
                   help="most rows (prompts x n, of any requests) in one denoiser call (default 32)")
    p.add_argument("--kv-memory", default=None,
                   help="key/value arena budget: a fraction of free GPU memory (0.5) or a size (8GiB, 512MiB); "
                        "default: 0.5 on CUDA, 256MiB on CPU")
    p.add_argument("--max-model-len", type=int, default=None,
                   help="canvas columns (prompt + max_tokens) per key/value slot (default: the model's, at most 2048)")
    p.add_argument("--queue-limit", type=int, default=256, help="requests that may wait; more get 503 (default 256)")
    p.add_argument("--timeout-s", type=float, default=60.0, help="per-request limit; later answers are 504 (default 60)")
    p.add_argument("--max-tokens", type=int, default=None,
                   help="default max_tokens of a request (default: 32 for tiny-arith, else 128)")
    p.add_argument("--block-length", type=int, default=32,
                   help="default block_length of a request (default 32; on a block-diffusion model whose block "
                        "it does not divide, the model's block)")
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
    add_limit_flags(p)
    p.set_defaults(func=run)


def add_limit_flags(p: argparse.ArgumentParser) -> None:
    """Flags of the limits on clients (:mod:`unmask.serve.guard`)."""
    p.add_argument("--max-request-bytes", type=int, default=4 * 1024 * 1024,
                   help="largest request body; larger ones get 413 (default 4194304, 4 MiB)")
    p.add_argument("--max-connections", type=int, default=512,
                   help="most open connections; one more is answered 503 and closed (default 512)")
    p.add_argument("--read-timeout-s", type=float, default=10.0,
                   help="a connection that sends no complete headers, or no complete body, for this long is closed; "
                   "also the keep-alive timeout (default 10)")
    p.add_argument("--shutdown-timeout-s", type=float, default=30.0,
                   help="on SIGTERM, the longest wait for requests in flight before they are cut (default 30)")
    p.add_argument("--api-key", default=None,
                   help="require 'Authorization: Bearer KEY' on every route but /health and / (default: the "
                   "UNMASK_API_KEY environment variable, else no key)")
    p.add_argument("--allowed-hosts", default=None, metavar="NAMES",
                   help="comma-separated Host names to answer, '*' for any (default: localhost, 127.0.0.1 and ::1 "
                   "when bound to loopback, any when bound to 0.0.0.0, else the --host name)")
    p.add_argument("--allowed-origins", default="", metavar="ORIGINS",
                   help="comma-separated web origins (e.g. http://localhost:3000) whose pages may call the API, "
                   "'*' for any (default: none but the server's own playground)")


def _names(value: str) -> tuple[str, ...]:
    return tuple(v for v in (part.strip() for part in value.split(",")) if v)


def limit_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`~unmask.serve.ServeSettings` fields of the client-limit flags."""
    from ..serve.guard import default_allowed_hosts

    key = args.api_key if args.api_key is not None else os.environ.get("UNMASK_API_KEY") or None
    hosts = default_allowed_hosts(args.host) if args.allowed_hosts is None else _names(args.allowed_hosts)
    return {"max_request_bytes": args.max_request_bytes, "max_connections": args.max_connections,
            "read_timeout_s": args.read_timeout_s, "shutdown_timeout_s": args.shutdown_timeout_s, "api_key": key,
            "allowed_hosts": hosts, "allowed_origins": _names(args.allowed_origins)}


def settings_from(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """The :class:`~unmask.serve.ServeSettings` of the command line (raises ``ValueError`` before any loading)."""
    from ..engine import parse_memory
    from ..serve import ServeSettings

    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be a positive int, got {args.threads}")
    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be in [0, 65535], got {args.port}")
    if args.chat_template is not None and not Path(args.chat_template).is_file():
        raise FileNotFoundError(f"--chat-template {args.chat_template!r} does not exist")
    if args.served_model_name is not None and not args.served_model_name.strip():
        raise ValueError(f"--served-model-name must be a non-empty name, got {args.served_model_name!r}")
    max_tokens = args.max_tokens if args.max_tokens is not None else 32 if args.model == "tiny-arith" else 128
    try:
        kv_memory = None if args.kv_memory is None else parse_memory(args.kv_memory)
        model_name = args.model if args.served_model_name is None else args.served_model_name
        return ServeSettings(model_name=model_name, max_batch=args.max_batch,
                             queue_limit=args.queue_limit, timeout_s=args.timeout_s,
                             max_tokens=max_tokens, block_length=args.block_length, planner=args.planner,
                             compile=args.compile, kv_memory=kv_memory, max_length=args.max_model_len,
                             **limit_settings(args))
    except ValueError as err:  # name the flag: max_batch -> --max-batch
        name = {"max_length": "max_model_len"}.get(str(err).split(" ", 1)[0], str(err).split(" ", 1)[0])
        raise ValueError(f"--{name.replace('_', '-')}: {err}") from None


def read_chat_template(path: str) -> str:
    """The ``--chat-template`` file's text, compiled once now (Jinja, as transformers does) so that a broken
    template is refused at start-up rather than on every chat request."""
    import jinja2

    text = Path(path).read_text(encoding="utf-8")
    try:
        jinja2.Environment().parse(text)
    except jinja2.TemplateSyntaxError as err:
        raise ValueError(f"--chat-template {path!r} does not compile: {err.message} (line {err.lineno})") from None
    return text


def apply_chat_template(tokenizer: Any, text: str, path: str) -> None:
    """Give the tokenizer the template, and render a one-message chat with it: a template that fails at run time
    (an undefined filter, a raise_exception on a plain user turn) is refused at start-up too."""
    import jinja2

    tokenizer.chat_template = text
    try:
        tokenizer.apply_chat_template([{"role": "user", "content": "1+2"}], add_generation_prompt=True, tokenize=False)
    except jinja2.TemplateError as err:
        raise ValueError(f"--chat-template {path!r} fails on a one-message chat: {err}") from None


def check_startup(args: argparse.Namespace, settings: Any) -> str | None:
    """The checks that need no model: the address is free to bind, the chat template compiles. Returns the
    template's text (None without --chat-template)."""
    from ..serve.launch import check_port

    check_port(args.host, args.port)
    return None if args.chat_template is None else read_chat_template(args.chat_template)


def check_served_model(settings: Any, denoiser: Any) -> None:
    """The default request against the loaded model: its canvas leaves room for a one-token prompt (+ BOS)."""
    try:
        settings.check_model(denoiser.spec.max_length, 1 + (denoiser.add_bos is True))
    except ValueError as err:
        raise ValueError(f"--max-tokens{str(err).removeprefix('max_tokens')}") from None


def warm_up(worker: Any, settings: Any, console: Console) -> None:
    """Compile every kind of call the server runs (whole canvases, and cached calls against the engine's arena)
    on the default request, for one row and for two, before the first request arrives."""
    from ..config import GenerationConfig
    from ..engine import Request
    from ..serve.plan import default_block

    engine = worker.engine
    model_block = engine.model.attention_block
    block = default_block(settings.block_length, settings.max_tokens, model_block)
    prompt = [engine.spec.pad_id]
    for cache in ("none", "dual", "prefix") if model_block is None else ("none", "committed"):
        cfg = GenerationConfig(gen_length=-(-settings.max_tokens // block) * block, block_length=block,
                               planner=settings.planner, compile=True, cache=cache)
        for rows in (1, 2):
            engine.add(Request([prompt] * rows, cfg, list(range(rows))))
            engine.run()
    warm = engine.model.warmup_seconds
    console.print(f"compiled {len(warm)} call shapes in {sum(warm.values()):.1f} s before serving", soft_wrap=True)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from ..models import load
    from ..serve import Served, create_app
    from ..serve.guard import uvicorn_options

    settings = settings_from(args)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    console = Console(stderr=True, highlight=False)
    template = check_startup(args, settings)
    denoiser, tokenizer = load(args.model, device=args.device, dtype=args.dtype, quantize=args.quantize)
    check_served_model(settings, denoiser)
    if template is not None:
        apply_chat_template(tokenizer, template, args.chat_template)
    if settings.compile:  # a model without a compiled path is refused now
        denoiser.compiled()
    app = create_app(Served(denoiser, tokenizer, settings))
    if settings.compile:  # every kind of call compiles now, not inside the first requests
        warm_up(app.state.worker, settings, console)
    engine = app.state.worker.engine
    console.print(f"[bold]unmask serve[/]: {settings.model_name} on {denoiser.device}, up to {settings.max_batch} rows "
                  f"per call, {engine.slots} key/value slots of {engine.length} columns; OpenAI API at /v1, playground at / "
                  f"(http://{args.host}:{args.port}/)", soft_wrap=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                **uvicorn_options(settings, app.state.metrics))
    return 0
