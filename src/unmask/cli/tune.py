"""``unmask tune``: the best planner for a model at a call budget, from unlabelled prompts.

    unmask tune --model tiny-arith --prompts examples/tune/tiny_val.txt --budget 5
    unmask tune --model oracle:markov2 --budget 4          # exact oracle, unconditional samples

The prompts (one per line) are split into a calibration half, on which every
candidate is scored against one-token-per-call decoding, and a report half, on
which the winner is scored again. Prints the frontier table, writes a plot and
ends with the winner as a planner spec for ``generate``, ``eval`` and the API.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from ..names import CACHE_MODES
from . import FIGURE_SUFFIXES, check_output

ORACLE_PREFIX = "oracle:"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tune", help="find the best planner for a model and a call budget, without labels",
        description="Decode unlabelled prompts one token per call (the reference) and with every candidate planner at "
                    "the budget, score each against the reference from the model alone, print the frontier, write a "
                    "plot, and give the winner as a planner spec for generate, eval and the API.",
    )
    p.add_argument("--model", required=True,
                   help="checkpoint directory, Hub id, 'tiny-arith', or oracle:markov1 / oracle:markov2 / oracle:hmm")
    p.add_argument("--prompts", default=None, metavar="FILE",
                   help="prompts, one per line (oracles: token ids separated by spaces; default: unconditional)")
    p.add_argument("--budget", type=int, required=True, metavar="CALLS_PER_BLOCK", help="denoiser calls per block")
    p.add_argument("--candidates", nargs="+", default=None, metavar="SPEC",
                   help="planner specs to compare (default: DUS bases, interleave, farthest point, top-k scores, "
                        "threshold and EB grids, spaced hybrids)")
    p.add_argument("--search", type=int, default=None, metavar="N",
                   help="also search for a better fixed schedule, scoring at most N (default: 200 when sampling, "
                        "0 when greedy)")
    p.add_argument("--report", type=int, default=None,
                   help="prompts kept apart to score the winner (default: half of them)")
    p.add_argument("--samples", type=int, default=512,
                   help="oracles without --prompts: unconditional samples per set (default 512)")
    p.add_argument("--gen-length", type=int, default=32)
    p.add_argument("--block-length", type=int, default=32)
    p.add_argument("--temperature", type=float, default=None,
                   help="default: 0 (greedy) for models, 1 for oracles (greedy ones have a single output)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--cache", choices=CACHE_MODES, default="none")
    p.add_argument("--plot", default="unmask-tune.png", metavar="PATH", help="frontier plot (default unmask-tune.png)")
    p.add_argument("--markdown", default=None, metavar="PATH", help="also write the frontier table as markdown")
    p.add_argument("--no-chat-template", action="store_true", help="encode prompts as plain text")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None)
    p.set_defaults(func=run)


def _lines(path: str) -> list[str]:
    file = Path(path)
    if not file.exists():
        raise FileNotFoundError(f"--prompts {path!r} does not exist")
    if file.is_dir():
        raise ValueError(f"--prompts {path!r} is a directory; give a file with one prompt per line")
    lines = [line.rstrip("\n") for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(lines) < 3:
        raise ValueError(f"--prompts {path!r} must hold at least 3 prompts (calibration and report), got {len(lines)}")
    return lines


def _split(prompts: list[list[int]], report: int | None) -> tuple[list[list[int]], list[list[int]]]:
    n_rep = len(prompts) // 2 if report is None else report
    if not 1 <= n_rep <= len(prompts) - 2:
        raise ValueError(f"--report must leave at least 2 calibration prompts: in [1, {len(prompts) - 2}], got {n_rep}")
    return prompts[: len(prompts) - n_rep], prompts[len(prompts) - n_rep :]


def _oracle_prompts(args: argparse.Namespace, vocab: int) -> tuple[list[list[int]], list[list[int]]]:
    if args.prompts is None:
        if args.samples < 2:
            raise ValueError(f"--samples must be an int >= 2, got {args.samples}")
        return [[] for _ in range(args.samples)], [[] for _ in range(args.samples)]
    rows = []
    for k, line in enumerate(_lines(args.prompts)):
        try:
            ids = [int(t) for t in line.split()]
        except ValueError:
            raise ValueError(f"--prompts line {k + 1}: oracle prompts are token ids separated by spaces") from None
        if any(not 0 <= t < vocab for t in ids):
            raise ValueError(f"--prompts line {k + 1}: token ids must lie in [0, {vocab})")
        rows.append(ids)
    return _split(rows, args.report)


def run(args: argparse.Namespace) -> int:
    from ..tune import TuneConfig, default_candidates, tune, user_candidates
    from ..tune.report import plot_tune, print_tune, render_markdown

    oracle = args.model.startswith(ORACLE_PREFIX)
    temperature = args.temperature if args.temperature is not None else (1.0 if oracle else 0.0)
    config = TuneConfig(budget=args.budget, gen_length=args.gen_length, block_length=args.block_length,
                        temperature=temperature, seed=args.seed, batch_size=args.batch_size, cache=args.cache,
                        search=args.search)
    cands = (user_candidates(args.candidates, args.block_length, config.num_blocks) if args.candidates is not None
             else default_candidates(args.budget, args.block_length, args.gen_length))
    for c in cands:
        c.planner.check(args.gen_length, args.block_length)
    check_output("--plot", args.plot, FIGURE_SUFFIXES)
    check_output("--markdown", args.markdown, (".md",))
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be a positive int, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    if oracle:
        from ..oracles import named_oracle

        den = named_oracle(args.model[len(ORACLE_PREFIX):], args.seed)
        calibration, report = _oracle_prompts(args, den.num_tokens)
    else:
        from ..models import encode_prompts, has_chat_template, load

        texts = _lines(args.prompts) if args.prompts else []
        if not texts:
            raise ValueError("--prompts FILE is required for models (oracles sample unconditionally without it)")
        den, tok = load(args.model, device=args.device, dtype=args.dtype)
        chat = has_chat_template(tok) and not args.no_chat_template
        calibration, report = _split(encode_prompts(tok, texts, chat=chat, add_bos=den.add_bos), args.report)
    result = tune(den, calibration, report, cands, config, progress=True)
    result.files.append(plot_tune(result, args.plot))
    if args.markdown:
        Path(args.markdown).write_text(render_markdown(result))
        result.files.append(Path(args.markdown))
    print_tune(result, Console(width=None if sys.stdout.isatty() else 120))
    return 0
