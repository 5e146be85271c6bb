"""``unmask demo``: DUS beside confidence top-k, the adaptive planners and one token per call.

By default on the bundled tiny-arith model (no download): held-out arithmetic
problems solved by each planner, the reveal order of a few of them coloured by
call with their final answer marked right or wrong, and a table of answer
accuracy, whole-chain exact match, NFE and time, followed by the planner that
needs the fewest calls to stay within a point of one token per call.
``--oracle`` runs the fixed-count planners on an exact first-order Markov
oracle instead, where each planner's sampling error is measured exactly (path
KL, nats/token).
"""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from . import HTML_SUFFIXES, check_output

if TYPE_CHECKING:  # torch, the loop and the planners are imported when the command runs, not for --help
    from ..planners import Planner


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="DUS vs confidence top-k, adaptive planners and one token per call, on the bundled "
                                    "tiny model (or --oracle)")
    p.add_argument("--problems", type=int, default=None, help="held-out problems per planner for the table (default 200)")
    p.add_argument("--show", type=int, default=None, help="problems whose reveal order is shown per planner (default 3)")
    p.add_argument("--html", metavar="PATH", default=None,
                   help="also write a self-contained page replaying the shown problems call by call")
    p.add_argument("--oracle", action="store_true", help="run on an exact Markov oracle and report path KL instead")
    p.add_argument("--samples", type=int, default=None, help="--oracle: sequences per planner (default 128)")
    p.add_argument("--gen-length", type=int, default=None, help="--oracle: generated tokens (default 64)")
    p.add_argument("--block-length", type=int, default=None, help="--oracle: block length (default 32)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


# the options of each mode and their defaults; an option of the other mode is refused, not ignored
TINY_OPTIONS = {"problems": 200, "show": 3}
ORACLE_OPTIONS = {"samples": 128, "gen_length": 64, "block_length": 32}


def resolve_mode(args: argparse.Namespace) -> None:
    """Refuse the options of the mode not run; fill in the defaults of the one run."""
    own, other = (ORACLE_OPTIONS, {**TINY_OPTIONS, "html": None}) if args.oracle else (TINY_OPTIONS, ORACLE_OPTIONS)
    given = [f"--{name.replace('_', '-')}" for name in other if getattr(args, name) is not None]
    if given:
        where = ("without --oracle (the tiny-arith demo generates 32 tokens in one block)" if not args.oracle
                 else "with --oracle (options of the tiny-arith demo)")
        raise ValueError(f"{', '.join(given)} cannot be used {where}")
    for name, value in own.items():
        if getattr(args, name) is None:
            setattr(args, name, value)


def run(args: argparse.Namespace) -> int:
    resolve_mode(args)
    return run_oracle(args) if args.oracle else run_tiny(args)


def tiny_planners(gen_length: int) -> list[tuple[str, Planner]]:
    """The demo's planners: fixed 5 calls (DUS, confidence top-k), adaptive (threshold, EB), the reference."""
    from ..planners import EB, Dilated, Threshold, TopK

    return [
        ("DUS (dilated)", Dilated()),
        ("confidence top-k, DUS counts", TopK(score="confidence", counts="dilated")),
        ("threshold (tau=0.95)", Threshold(tau=0.95)),
        ("EB (gamma=0.1)", EB(gamma=0.1)),
        ("one token per call", TopK(score="confidence", steps=gen_length)),
    ]


def answer_mark(text: str, value: int) -> tuple[bool, Text]:
    """Whether the final answer (after ``A:``) of ``text`` is right, and its mark for the terminal."""
    from ..tiny import final_answer

    answer = final_answer(text)
    if answer == str(value):
        return True, Text(f"  A:{answer} right", style="green")
    shown = f"A:{answer}" if answer is not None else "no A:"
    return False, Text(f"  {shown} wrong (A:{value})", style="red")


def show_rows(console: Console, name: str, items: list[Any], res: dict[str, Any], tok: Any, show: int) -> list[tuple]:
    """Print the reveal order of the first ``show`` problems, answers marked; return their HTML rows."""
    from ..output import FILLED
    from ..viz import EOS_GLYPH, reveal_legend, reveal_text, token_pieces

    width = max((len(p.prompt) for p in items[:show]), default=0)
    rows, longest = [], 1
    for i in range(show):
        pieces = token_pieces(tok, res["generated"][i].tolist(), eos_glyph=EOS_GLYPH)
        calls = res["reveal_call"][i].tolist()
        real = [c for c in calls if c != FILLED]
        first, num = min(real), max(real) - min(real) + 1
        longest = max(longest, num)
        ok, mark = answer_mark(res["texts"][i], items[i].value)
        line = Text(items[i].prompt.ljust(width + 1))
        line.append_text(reveal_text(pieces, calls, first_call=first, num_calls=num))
        console.print(line.append_text(mark))
        rows.append((f"{items[i].prompt}  {name}: answer {'right' if ok else 'wrong'}", pieces, calls))
    if show:
        console.print(reveal_legend(longest))
    return rows


def best_line(results: list[tuple[str, dict[str, Any]]]) -> str:
    """The planner with the fewest calls whose answer accuracy is within a point of one token per call."""
    reference = results[-1][1]["answer_acc"]
    good = [(res["mean_nfe"], name) for name, res in results if res["answer_acc"] >= reference - 0.01]
    nfe, name = min(good)
    return (f"fewest calls within a point of one token per call ({100 * reference:.1f}%): {name}, "
            f"{nfe:.1f} calls per problem on average")


def run_tiny(args: argparse.Namespace) -> int:
    """Held-out problems on the bundled model: reveal views, a table and the best planner."""
    from ..config import GenerationConfig
    from ..tiny import GEN_LENGTH, heldout, load_tiny, solve
    from ..viz import EOS_GLYPH

    if not isinstance(args.problems, int) or args.problems < 1:
        raise ValueError(f"--problems must be a positive int, got {args.problems}")
    if not isinstance(args.show, int) or not 0 <= args.show <= args.problems:
        raise ValueError(f"--show must be an int in [0, --problems={args.problems}], got {args.show}")
    check_output("--html", args.html, HTML_SUFFIXES)
    console = Console(highlight=False)
    denoiser, tok = load_tiny()
    params = sum(p.numel() for p in denoiser.model.parameters())
    items = heldout(args.problems, "test")
    console.print(
        f"[bold]unmask demo[/]: the bundled tiny-arith model ({params / 1e6:.1f}M parameters, LLaDA-style "
        f"bidirectional Llama) on {args.problems} held-out problems, {GEN_LENGTH} generated tokens in one block, "
        f"greedy. Each answer is coloured by the denoiser call that revealed it ({EOS_GLYPH} = EOS); right/wrong "
        "judges the final answer after A:.\n",
        soft_wrap=True,
    )
    table = Table(title=f"{args.problems} held-out problems")
    for col in ("planner", "NFE", "answer acc", "exact chain", "time (s)", "tokens/s"):
        table.add_column(col, justify="left" if col == "planner" else "right")
    html_rows, results = [], []
    for name, planner in tiny_planners(GEN_LENGTH):
        cfg = GenerationConfig(gen_length=GEN_LENGTH, block_length=GEN_LENGTH, planner=planner, seed=args.seed)
        solve(denoiser, items[:1], cfg, tokenizer=tok)  # warm-up, so the timing compares like with like
        res = solve(denoiser, items, cfg, tokenizer=tok, keep=True)
        results.append((name, res))
        fixed = res["mean_nfe"].is_integer()
        console.print(f"[bold]{name}[/]: " + (f"{res['mean_nfe']:.0f} calls" if fixed else
                                              f"{res['mean_nfe']:.1f} calls per problem on average"))
        html_rows += show_rows(console, name, items, res, tok, args.show)
        console.print()
        table.add_row(name, f"{res['mean_nfe']:.1f}", f"{100 * res['answer_acc']:.1f}%",
                      f"{100 * res['exact_match']:.1f}%", f"{res['seconds']:.2f}", f"{res['tokens_per_s']:.0f}")
    console.print(table)
    console.print(best_line(results), soft_wrap=True)
    if args.html is not None:
        from ..viz import write_reveal_html

        console.print(f"[dim]wrote {write_reveal_html(args.html, html_rows, title='unmask demo: reveal order')}[/]")
    console.print("[dim]the full sweep (1,000 problems, every planner, 95% intervals): unmask bench tiny; "
                  "the exact-oracle version of this demo: unmask demo --oracle[/]", soft_wrap=True)
    return 0


def run_oracle(args: argparse.Namespace) -> int:
    """The same planners on an exact first-order Markov chain: path KL per token."""
    import torch

    from ..config import GenerationConfig
    from ..loop import generate
    from ..oracles import MarkovOracle, path_kl, path_kl_status
    from ..planners import Dilated, TopK
    from ..viz import render_reveal

    for flag, value in (("--samples", args.samples), ("--gen-length", args.gen_length),
                        ("--block-length", args.block_length)):
        if value < 1:
            raise ValueError(f"{flag} must be a positive int, got {value}")
    GenerationConfig(gen_length=args.gen_length, block_length=args.block_length)  # lengths that fit, before compute
    console = Console()
    oracle = MarkovOracle(vocab_size=16, order=1, concentration=0.3, seed=args.seed)
    letters = [chr(ord("a") + i) for i in range(16)]
    planners = [
        ("DUS (dilated)", Dilated()),
        ("confidence top-k, DUS counts", TopK(score="confidence", counts="dilated")),
        ("random top-k, DUS counts", TopK(score="random", counts="dilated")),
        ("one token per call", TopK(score="confidence", steps=args.gen_length)),
    ]
    console.print(
        f"[bold]unmask demo[/]: {args.samples} sequences of {args.gen_length} tokens from a first-order Markov chain "
        f"(16 letters, Dirichlet 0.3), blocks of {args.block_length}, temperature 1.\n"
        "Path KL = log q(sampled path) - log p(sequence) per token: 0 for exact sampling, larger when dependent "
        "tokens are revealed in the same call.\n"
    )
    table = Table(title="planner comparison on the exact oracle")
    for col in ("planner", "NFE", "path KL (nats/token)", "time (ms)"):
        table.add_column(col, justify="left" if col == "planner" else "right")
    prompts: list[list[int]] = [[] for _ in range(args.samples)]
    for name, planner in planners:
        cfg = GenerationConfig(
            gen_length=args.gen_length, block_length=args.block_length, planner=planner,
            sampling={"temperature": 1.0}, early_exit=False, seed=args.seed,
        )
        generate(oracle, prompts[:1], cfg)  # warm-up, so the timing compares like with like
        t0 = time.perf_counter()
        out = generate(oracle, prompts, cfg)
        ms = 1000 * (time.perf_counter() - t0)
        kl = path_kl(oracle, out, prompts)
        se = kl.std() / kl.numel() ** 0.5 if kl.numel() > 1 else torch.tensor(float("nan"))
        first = out.generated[0].tolist()
        render_reveal(console, [letters[t] for t in first], out.trace.reveal_call[0].tolist(),
                      title=f"{name}: {out.nfe} calls")
        console.print()
        mean = float(kl.mean())
        mean = 0.0 if abs(mean) < 5e-4 else mean  # no "-0.000"
        status = path_kl_status(planner)
        mark = {"exact": "", "upper bound": " (bound)", "biased": " †"}[status]
        table.add_row(name, str(out.nfe), f"{mean:.3f} ± {se:.3f}{mark}", f"{ms:.0f}")
    console.print(table)
    console.print("[dim]† biased: the planner picks positions by the tokens just drawn, which path KL leaves out "
                  "(unmask bench oracle measures it consistently); (bound): an upper bound (random order)[/]",
                  soft_wrap=True)
    return 0
