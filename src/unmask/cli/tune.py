"""``unmask tune``: the best planner for a model at a call budget, from unlabelled prompts.

    unmask tune --model tiny-arith --prompts examples/tune/tiny_val.txt --budget 5
    unmask tune --model oracle:markov2 --budget 4          # exact oracle, unconditional samples
    unmask tune --model mymodels:build --prompts p.txt --budget 3,5,8   # a callable returning (denoiser, tokenizer)

The prompts (one per line) are split into a calibration half, on which every
candidate is scored against one-token-per-call decoding, and a report half, on
which the winner is scored again. Several budgets share one reference decode.
Prints the frontier table (one per budget), writes a plot and ends with the
winner as a planner spec for ``generate``, ``eval`` and the API.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from ..names import CACHE_MODES
from . import FIGURE_SUFFIXES, check_output
from .factory import is_factory, load_factory

ORACLE_PREFIX = "oracle:"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tune", help="find the best planner for a model and a call budget, without labels",
        description="Decode unlabelled prompts one token per call (the reference) and with every candidate planner at "
                    "the budget, score each against the reference from the model alone, print the frontier, write a "
                    "plot, and give the winner as a planner spec for generate, eval and the API.",
    )
    p.add_argument("--model", required=True,
                   help="checkpoint directory, Hub id, 'tiny-arith', oracle:markov1 / oracle:markov2 / oracle:hmm, or "
                        "module:factory, a Python callable (imported from the current directory or the Python path) "
                        "that returns (denoiser, tokenizer); a tokenizer of None reads prompts as token ids")
    p.add_argument("--prompts", default=None, metavar="FILE",
                   help="prompts, one per line (oracles and factories without a tokenizer: token ids separated by "
                        "spaces; default: unconditional samples)")
    p.add_argument("--budget", required=True, metavar="CALLS_PER_BLOCK",
                   help="mean denoiser calls per block; several separated by commas (3,5,8) share one reference "
                        "decode and get one table each")
    p.add_argument("--candidates", nargs="+", default=None, metavar="SPEC",
                   help="planner specs to compare (default: DUS bases, interleave, farthest point, top-k scores, "
                        "threshold and EB grids, spaced hybrids)")
    p.add_argument("--search", type=int, default=None, metavar="N",
                   help="also search for a better fixed schedule, scoring at most N (default: 200 when sampling, "
                        "0 when greedy); it is kept only if it beats the best fixed candidate by two standard errors "
                        "on fresh samples (greedy: on the second half of the calibration prompts, held out from the "
                        "search; needs at least 8)")
    p.add_argument("--report", type=int, default=None,
                   help="prompts kept apart to score the winner (default: half of them)")
    p.add_argument("--samples", type=int, default=512,
                   help="oracles and token-id factories without --prompts: unconditional samples per set (default 512)")
    p.add_argument("--gen-length", type=int, default=32)
    p.add_argument("--block-length", type=int, default=None,
                   help="generated block (default: the model's own block for block-diffusion models, e.g. SDAR 4; "
                        "32 for the others)")
    p.add_argument("--temperature", type=float, default=None,
                   help="default: 0 (greedy) for models and factories, 1 for oracles (greedy ones have a single output)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--cache", choices=CACHE_MODES, default="auto",
                   help="KV cache mode (default auto: the committed cache on block-diffusion models, else none)")
    p.add_argument("--plot", default="unmask-tune.png", metavar="PATH",
                   help="frontier plot (default unmask-tune.png; several budgets: one per budget, NAME-BUDGET.png)")
    p.add_argument("--markdown", default=None, metavar="PATH",
                   help="also write the frontier table as markdown (several budgets: one section each)")
    p.add_argument("--json", default=None, metavar="PATH",
                   help="also write every budget's scores (mean and max calls per block, ...) and winner as JSON")
    p.add_argument("--no-chat-template", action="store_true", help="encode prompts as plain text")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", default=None, help="checkpoints only (a factory places its own model)")
    p.add_argument("--dtype", default=None, help="checkpoints only (a factory casts its own model)")
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


def parse_budgets(text: str) -> list[int]:
    """``--budget``: one int or several separated by commas, ascending; each is checked by ``TuneConfig``."""
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"--budget must be calls per block, one int or several separated by commas (3,5,8), "
                         f"got {text!r}") from None
    if len(set(values)) != len(values):
        raise ValueError(f"--budget must not repeat a value, got {text!r}")
    return sorted(values)


def plot_paths(path: str, budgets: list[int]) -> list[Path]:
    """``--plot`` as given for one budget, else ``NAME-BUDGET.SUFFIX`` per budget."""
    if len(budgets) == 1:
        return [Path(path)]
    return [Path(path).with_stem(f"{Path(path).stem}-{b}") for b in budgets]


def _oracle_prompts(args: argparse.Namespace, vocab: int) -> tuple[list[list[int]], list[list[int]]]:
    if args.prompts is None:
        if args.samples < 2:
            raise ValueError(f"--samples must be an int >= 2, got {args.samples}")
        if args.temperature == 0:
            raise ValueError("--prompts FILE is required at --temperature 0 (unconditional greedy outputs are all "
                             "the same)")
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


def _model(args: argparse.Namespace, oracle: bool, factory: bool) -> tuple[Any, list[list[int]], list[list[int]]]:
    """The denoiser and the (calibration, report) prompt ids."""
    if oracle:
        from ..oracles import named_oracle

        den = named_oracle(args.model[len(ORACLE_PREFIX):], args.seed)
        return (den, *_oracle_prompts(args, den.num_tokens))
    texts = _lines(args.prompts) if args.prompts else []
    if factory:
        if args.device is not None or args.dtype is not None:
            raise ValueError("--device and --dtype apply to checkpoints; a module:factory model places and casts itself")
        den, tok = load_factory(args.model)
        if tok is None:
            return (den, *_oracle_prompts(args, den.spec.vocab_size))
    if not texts:
        raise ValueError("--prompts FILE is required for models with a tokenizer (oracles and token-id factories "
                         "sample unconditionally without it)")
    from ..models import encode_prompts, has_chat_template, load

    if not factory:
        den, tok = load(args.model, device=args.device, dtype=args.dtype)
    chat = has_chat_template(tok) and not args.no_chat_template
    return (den, *_split(encode_prompts(tok, texts, chat=chat, add_bos=den.add_bos), args.report))


def _settings(args: argparse.Namespace, budgets: list[int], temperature: float, block: int):
    """The first budget's config and each budget's candidates for generated blocks of ``block``, checked."""
    from ..tune import TuneConfig, default_candidates, user_candidates

    configs = [TuneConfig(budget=b, gen_length=args.gen_length, block_length=block,
                          temperature=temperature, seed=args.seed, batch_size=args.batch_size, cache=args.cache,
                          search=args.search) for b in budgets]
    config = configs[0]
    if args.candidates is not None:
        cands = user_candidates(args.candidates, block, config.num_blocks)
        per_budget = {b: cands for b in budgets}
    else:
        per_budget = {b: default_candidates(b, block, args.gen_length) for b in budgets}
    for c in {c.spec: c for cs in per_budget.values() for c in cs}.values():
        c.planner.check(args.gen_length, block)
    return config, per_budget


def run(args: argparse.Namespace) -> int:
    from ..tune import tune_budgets
    from ..tune.report import plot_tune, print_tune, render_budgets, to_json

    oracle = args.model.startswith(ORACLE_PREFIX)
    factory = not oracle and is_factory(args.model)
    temperature = args.temperature if args.temperature is not None else (1.0 if oracle else 0.0)
    args.temperature = temperature
    budgets = parse_budgets(args.budget)
    # everything a user can get wrong is checked before the model is read: with the block the user gave, or with 32
    # now and with the model's own block (block-diffusion models) once it is loaded
    given = args.block_length
    block = given if given is not None else (32 if args.gen_length % 32 == 0 else args.gen_length)
    config, per_budget = _settings(args, budgets, temperature, block)
    check_output("--plot", args.plot, FIGURE_SUFFIXES)
    check_output("--markdown", args.markdown, (".md",))
    check_output("--json", args.json, (".json",))
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be a positive int, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    den, calibration, report = _model(args, oracle, factory)
    from ..denoiser import CanvasDenoiser

    model_block = den.canvas_length if isinstance(den, CanvasDenoiser) else den.attention_block
    if given is None and model_block is not None and model_block != block:
        config, per_budget = _settings(args, budgets, temperature, model_block)
    results = tune_budgets(den, calibration, report, per_budget.__getitem__, config, budgets, progress=True)
    files: list[Path] = [plot_tune(r, path) for r, path in zip(results, plot_paths(args.plot, budgets))]
    if args.markdown:
        Path(args.markdown).write_text(render_budgets(results))
        files.append(Path(args.markdown))
    if args.json:
        Path(args.json).write_text(json.dumps(to_json(results), indent=1) + "\n")
        files.append(Path(args.json))
    console = Console(width=None if sys.stdout.isatty() else 120)
    for r in results:
        print_tune(r, console)
    console.print("wrote " + ", ".join(map(str, files)), highlight=False)
    return 0
