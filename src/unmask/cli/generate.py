"""``unmask generate``: sample from a real checkpoint with any planner and cache mode.

    unmask generate --model PATH --planner 'dilated(base=2)' --block-length 32 \\
        --gen-length 256 --cache dual "prompt" ["more prompts" ...]

Prompts also come from ``--file F`` (one per line) or stdin (``-``). Instruct
checkpoints (a tokenizer with a chat template) get it unless
``--no-chat-template``. All prompts run as one left-padded batch. Without
``--gen-length``, 128 positions are generated, or, when they do not fit the
model's maximum length after the longest prompt, the most whole blocks that do
(said in a line; a ``--gen-length`` that does not fit is an error).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from ..names import CACHE_MODES
from . import FIGURE_SUFFIXES, HTML_SUFFIXES, check_output

if TYPE_CHECKING:  # torch and the models are imported when the command runs, not for --help
    from ..config import GenerationConfig
    from ..output import GenerationOutput

DEFAULT_GEN_LENGTH = 128


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="generate text from a LLaDA / Dream / DiffuCoder checkpoint")
    p.add_argument("prompts", nargs="*", metavar="PROMPT",
                   help="prompt texts; '-' reads one prompt per line from stdin")
    p.add_argument("--model", required=True, help="checkpoint directory (or Hugging Face Hub id)")
    p.add_argument("--file", help="read prompts from this file, one per line")
    p.add_argument("--planner", default="dilated(base=2)",
                   help="planner spec, e.g. 'dilated(base=2)', 'topk(steps=64)', 'threshold(tau=0.9)'")
    p.add_argument("--gen-length", type=int, default=None,
                   help=f"generated positions (default {DEFAULT_GEN_LENGTH}, shortened to whole blocks that fit the "
                        "model's maximum length, with a note)")
    p.add_argument("--block-length", type=int, default=None,
                   help="generated block (default: the model's own block size for block-diffusion models, e.g. "
                        "SDAR 4, Fast-dLLM v2 and LLaDA2 32, which need a divisor of it; DiffusionGemma's canvas length; 32 "
                        "for the others)")
    p.add_argument("--cache", choices=CACHE_MODES, default="auto",
                   help="KV cache mode (default auto: committed, exact, for block-diffusion models such as SDAR; "
                        "none, exact, for the others)")
    p.add_argument("--compile", action="store_true",
                   help="static shapes, torch.compile and (on CUDA) CUDA graphs: the first call of each shape "
                        "compiles once (the time is reported), later ones replay (native checkpoints only)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--tempered-scores", action="store_true",
                   help="rank positions by the tempered, truncated distribution (Dream's maskgit_plus) instead of "
                        "the model's own (LLaDA)")
    p.add_argument("--cfg-scale", type=float, default=0.0, help="classifier-free guidance scale (0 = off)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stop", action="append", default=[], metavar="STR", help="stop string (repeatable)")
    p.add_argument("--no-early-exit", action="store_true", help="run every block even after EOS")
    p.add_argument("--no-chat-template", action="store_true", help="encode prompts as plain text")
    p.add_argument("--show-order", action="store_true", help="colour each token by the call that revealed it")
    p.add_argument("--html", metavar="PATH", default=None,
                   help="write a self-contained page replaying the unmasking call by call (all prompts)")
    p.add_argument("--png", metavar="PATH", default=None,
                   help=f"write a position x call figure of the reveal order (first prompt; {', '.join(FIGURE_SUFFIXES)})")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--dtype", default=None,
                   help="weights dtype, e.g. bfloat16, float32 (default: bf16 on cuda, fp32 on cpu)")
    p.add_argument("--quantize", choices=("none", "int8", "int4"), default="none",
                   help="weight-only quantization of the decoder layers with torchao (the 'quant' extra); "
                        "int4 runs in bfloat16")
    p.add_argument("--remote-code", action="store_true",
                   help="run the checkpoint's own code (no cache) instead of the native path")
    p.set_defaults(func=run)


def read_prompts(args: argparse.Namespace) -> list[str]:
    """Prompts from the command line, ``--file`` and stdin (``-``), in that order."""
    texts: list[str] = []
    for prompt in args.prompts:
        if prompt == "-":
            texts += [line.rstrip("\n") for line in sys.stdin if line.strip()]
        else:
            texts.append(prompt)
    if args.file:
        path = Path(args.file)
        if not path.exists():
            raise FileNotFoundError(f"--file {args.file!r} does not exist")
        if path.is_dir():
            raise ValueError(f"--file {args.file!r} is a directory; give a file with one prompt per line")
        from_file = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not from_file:
            raise ValueError(f"--file {args.file!r} holds no prompt (one per non-empty line)")
        texts += from_file
    if not texts:
        raise ValueError("give at least one prompt: as arguments, with --file F, or '-' for stdin")
    return texts


def revealed_row(tokenizer: object, out: GenerationOutput, row: int, eos_ids: tuple[int, ...]) -> tuple[list[str], list[int]]:
    """Display pieces and reveal calls of one row, up to and including its first EOS."""
    from ..viz import token_pieces

    ids = out.generated[row].tolist()
    end = next((i + 1 for i, t in enumerate(ids) if t in eos_ids), len(ids))
    return token_pieces(tokenizer, ids[:end]), out.trace.reveal_call[row, :end].tolist()


def show_order(console: Console, tokenizer: object, out: GenerationOutput, row: int, eos_ids: tuple[int, ...]) -> None:
    """The coloured reveal-order view of one row, up to and including its first EOS."""
    from ..viz import render_reveal

    pieces, calls = revealed_row(tokenizer, out, row, eos_ids)
    render_reveal(console, pieces, calls, title=f"reveal order ({int(out.nfe_per_row[row])} calls)",
                  edited=set(out.trace.revised(row)))


def write_views(args: argparse.Namespace, texts: list[str], tokenizer: object, out: GenerationOutput,
                eos_ids: tuple[int, ...]) -> list[Path]:
    """The ``--html`` replay (every prompt) and the ``--png`` figure (first prompt)."""
    from ..viz import plot_reveal_order, write_reveal_html

    rows = [(f"[{i}] {text[:80]}", *revealed_row(tokenizer, out, i, eos_ids), out.trace.revised(i))
            for i, text in enumerate(texts)]  # the page adds "(N calls)"
    files = []
    if args.html:
        files.append(write_reveal_html(args.html, rows, title=f"unmask: reveal order, planner {args.planner}"))
    if args.png:
        rev = out.trace.revisions  # row 0's edits and re-masks within the shown positions
        rev = None if rev is None else rev[(rev[:, 1] == 0) & (rev[:, 2] < len(rows[0][2]))]
        files.append(plot_reveal_order(args.png, rows[0][2], title=f"positions revealed by each call ({args.planner})",
                                       pieces=rows[0][1], revisions=rev))
    return files


def warn_tiny_format(model: str, texts: list[str]) -> None:
    """The bundled tiny-arith model answers only prompts of the kinds it was trained on: say so for others."""
    if model != "tiny-arith":
        return
    from ..tiny.data import FORMAT_HELP, matches_format

    for i, text in enumerate(texts):
        if not matches_format(text):
            Console(stderr=True, highlight=False).print(
                f"warning: prompts[{i}] {text!r} is not of the form tiny-arith was trained on, so its answer means "
                f"nothing: {FORMAT_HELP}", markup=False, soft_wrap=True)


def fit_gen_length(config: GenerationConfig, given: bool, longest: int,
                   max_length: int | None) -> tuple[GenerationConfig, str | None]:
    """The config with the default gen length shortened to whole blocks that fit, and a note saying so.

    A gen length the user gave is kept (the loop refuses it if it does not fit).
    """
    if given or max_length is None or longest + config.gen_length <= max_length:
        return config, None
    fits = (max_length - longest) // config.block_length * config.block_length
    if fits < 1:
        raise ValueError(f"the longest prompt has {longest} tokens: no block of {config.block_length} fits after it "
                         f"within the model's maximum length {max_length} (shorten it, or lower --block-length)")
    note = (f"--gen-length {fits}: the default {config.gen_length} does not fit the model's maximum length "
            f"{max_length} after a {longest}-token prompt")
    return dataclasses.replace(config, gen_length=fits), note


def print_output(console: Console, args: argparse.Namespace, texts: list[str], tokenizer: object,
                 out: GenerationOutput, config: GenerationConfig, eos_ids: tuple[int, ...]) -> None:
    """Each answer (with its reveal order when asked), the files written and the cost line."""
    assert out.texts is not None
    for i, (text, answer) in enumerate(zip(texts, out.texts, strict=True)):
        if len(texts) > 1:
            console.print(f"--- [{i}] {text}", style="bold", markup=False, soft_wrap=True)
        console.print(answer, markup=False, soft_wrap=True)
        if args.show_order:
            show_order(console, tokenizer, out, i, eos_ids)
    for path in write_views(args, texts, tokenizer, out, eos_ids):
        console.print(f"[dim]wrote {path}[/]")
    cache = f", {out.full_forwards} full + {out.partial_forwards} cached" if config.cache != "none" else ""
    console.print(
        f"[dim]NFE {out.nfe}{cache}, {out.seconds:.2f} s, {out.tokens_per_second:.1f} tokens/s "
        f"({len(texts)} x {config.gen_length} positions, blocks of {config.block_length}, planner {args.planner}, "
        f"cache {config.cache})[/]",
        soft_wrap=True,
    )


def run(args: argparse.Namespace) -> int:
    from ..config import GenerationConfig
    from ..loop import generate
    from ..models import encode_prompts, has_chat_template, load

    # everything a user can get wrong is checked before the model is read
    if args.gen_length is not None and args.gen_length < 1:
        raise ValueError(f"--gen-length must be a positive int, got {args.gen_length}")
    gen_length = DEFAULT_GEN_LENGTH if args.gen_length is None else args.gen_length
    block = args.block_length
    if block is None:  # checked with 32 now (or one block when that does not divide), with the model's block later
        block = 32 if gen_length % 32 == 0 else gen_length
    cfg = GenerationConfig(
        gen_length=gen_length, block_length=block,
        planner=args.planner,
        cfg_scale=args.cfg_scale, cache=args.cache,
        sampling={"temperature": args.temperature, "top_p": args.top_p, "top_k": args.top_k,
                  "tempered_scores": args.tempered_scores},
        early_exit=not args.no_early_exit, stop=tuple(args.stop), seed=args.seed, compile=args.compile,
    )
    texts = read_prompts(args)
    check_output("--html", args.html, HTML_SUFFIXES)
    check_output("--png", args.png, FIGURE_SUFFIXES)
    console = Console(highlight=False)
    denoiser, tokenizer = load(args.model, device=args.device, dtype=args.dtype, native=False if args.remote_code else None,
                               quantize=args.quantize)
    if args.block_length is None:  # the model's own block (block-diffusion) or canvas (DiffusionGemma), else 32
        from ..denoiser import CanvasDenoiser

        model_block = denoiser.canvas_length if isinstance(denoiser, CanvasDenoiser) else denoiser.attention_block
        cfg = dataclasses.replace(cfg, block_length=32 if model_block is None else model_block)
    chat = has_chat_template(tokenizer) and not args.no_chat_template
    prompts = encode_prompts(tokenizer, texts, chat=chat, add_bos=denoiser.add_bos)
    if hasattr(denoiser, "model"):  # once the prompts are known to be good
        from ..models import weight_bytes

        console.print(f"[dim]weights {weight_bytes(denoiser.model) / 2**20:.1f} MiB ({denoiser.dtype}, "
                      f"quantize {args.quantize})[/]", soft_wrap=True)
    from ..cache import resolve_cache

    cfg = dataclasses.replace(cfg, cache=resolve_cache(cfg.cache, denoiser))  # auto: the model's exact cache
    cfg, note = fit_gen_length(cfg, args.gen_length is not None, max(map(len, prompts)), denoiser.spec.max_length)
    if note:
        console.print(f"[dim]{note}[/]", soft_wrap=True)
    warn_tiny_format(args.model, texts)  # once every input is known to be good: the answers will be printed
    out = generate(denoiser, prompts, cfg, tokenizer=tokenizer)
    print_output(console, args, texts, tokenizer, out, cfg, denoiser.spec.eos_ids)
    if cfg.compile:  # the time includes compiling each new shape once; say how much
        warm = denoiser.compiled().warmup_seconds  # type: ignore[attr-defined]
        console.print(f"[dim]compiled {len(warm)} call shapes in {sum(warm.values()):.1f} s (included above; "
                      "later generations of the same shapes replay them)[/]", soft_wrap=True)
    return 0
