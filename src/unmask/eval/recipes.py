"""Ready ``unmask eval`` commands for the paper's benchmarks and models, with where each setting comes from.

A :class:`Recipe` is one (model, benchmark): the lm-eval task, few-shot count,
generation length, chat template, and the source of those numbers. A
:class:`Variant` is one planner configuration of the sweep: DUS at block sizes
8-64, confidence top-k with DUS's per-call counts (matched NFE), one token per
call, EB, threshold and the spaced hybrids. ``unmask eval --recipe NAME``
prints (or with ``--run`` runs) one command per variant. The provenance of
every number, and what is not known, is in examples/eval/RECIPES.md.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

LLADA, DREAM, DIFFUCODER = "GSAI-ML/LLaDA-8B-Instruct", "Dream-org/Dream-v0-Instruct-7B", "apple/DiffuCoder-7B-Instruct"
SRC_LLADA = "LLaDA repo, opencompass/examples/llada_instruct_gen_*.py and EVAL.md (LLaDA-8B-Instruct settings)"
SRC_DREAM = "Dream repo, eval_instruct/eval.sh (Dream-v0-Instruct-7B settings, lm-eval)"
SRC_DIFFUCODER = "apple/DiffuCoder-7B-Instruct model card usage example (256 new tokens)"


@dataclass(frozen=True)
class Recipe:
    """One model on one benchmark, as lm-eval arguments."""

    name: str
    model: str
    task: str
    num_fewshot: int
    gen_length: int  # a multiple of 64, so every DUS block size of the sweep divides it
    chat: bool = True
    code: bool = False  # executes generated code: needs --allow-code-execution
    source: str = ""
    notes: str = ""
    model_args: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Variant:
    """One planner configuration of the sweep (``{G}`` is replaced by the recipe's gen_length)."""

    name: str
    block_length: int
    planner_args: tuple[tuple[str, str], ...]


def sweep() -> list[Variant]:
    """DUS B in 8..64, confidence top-k at matched NFE, one-per-call, EB, threshold, spaced hybrids."""
    out: list[Variant] = []
    for b in (8, 16, 32, 64):
        out.append(Variant(f"dus-B{b}", b, (("planner", "dilated"),)))
        out.append(Variant(f"conf-topk-B{b}", b, (("planner", "topk"), ("score", "confidence"), ("counts", "dilated"))))
    out.append(Variant("dus-skip0.3-B32", 32, (("planner", "dilated"), ("confidence_threshold", "0.3"))))
    out.append(Variant("one-per-call-B32", 32, (("planner", "topk"), ("score", "confidence"), ("steps", "{G}"))))
    for gamma in ("1", "2"):
        out.append(Variant(f"eb-g{gamma}-B32", 32, (("planner", "eb"), ("gamma", gamma))))
    for tau in ("0.9", "0.7", "0.5"):
        out.append(Variant(f"threshold-t{tau}-B32", 32, (("planner", "threshold"), ("tau", tau))))
    out.append(Variant("spaced-eb-g2-B32", 32, (("planner", "spaced"), ("inner", "eb(gamma=2)"), ("start_stride", "8"))))
    out.append(Variant("spaced-threshold-t0.5-B32", 32,
                       (("planner", "spaced"), ("inner", "threshold(tau=0.5)"), ("start_stride", "8"))))
    return out


def _r(name: str, model: str, task: str, shots: int, gen: int, source: str, notes: str, **kw: object) -> Recipe:
    return Recipe(name, model, task, shots, gen, source=source, notes=notes, **kw)  # type: ignore[arg-type]


RECIPES: dict[str, Recipe] = {r.name: r for r in (
    _r("llada/gsm8k", LLADA, "gsm8k", 4, 256, SRC_LLADA,
       "gen 256 as LLaDA-Instruct (its own block was 8). 4-shot follows LLaDA's paper; the Instruct numbers came "
       "from OpenCompass gsm8k_gen, whose prompt differs from lm-eval's gsm8k."),
    _r("llada/math500", LLADA, "minerva_math500", 0, 256, SRC_LLADA,
       "0-shot, gen 256 as LLaDA-Instruct MATH (block 256 there). LLaDA scored the full MATH set; MATH500 is the DUS "
       "paper's choice."),
    _r("llada/humaneval", LLADA, "humaneval_instruct", 0, 512, SRC_LLADA,
       "0-shot, gen 512 as LLaDA-Instruct (block 32). LLaDA used OpenCompass humaneval; lm-eval's humaneval_instruct "
       "prompt is our stand-in.", code=True),
    _r("llada/mbpp", LLADA, "mbpp", 3, 512, SRC_LLADA,
       "3-shot, gen 512 as LLaDA-Instruct (block 32); lm-eval's mbpp caps answers at its own max_gen_toks if set.",
       code=True),
    _r("llada/bbh", LLADA, "bbh_cot_fewshot", 3, 256, "LLaDA repo, opencompass/examples/llada_base_gen_bbh.py (Base)",
       "3-shot CoT, gen 256 as LLaDA-Base BBH; no Instruct BBH setting is published there: unverified for Instruct."),
    _r("llada/mmlu_pro", LLADA, "mmlu_pro", 0, 256, SRC_LLADA,
       "gen 256 as LLaDA-Instruct MMLU-Pro; 0-shot is our reading of LLaDA's Instruct table, unverified."),
    _r("llada/ifeval", LLADA, "ifeval", 0, 512, "LLaDA repo, opencompass/examples/llada_gen_ifeval_15.py",
       "0-shot, gen 512 as LLaDA's IFEval setting (LLaDA 1.5 paper setting for LLaDA-Instruct)."),
    _r("dream/gsm8k", DREAM, "gsm8k_cot", 0, 256, SRC_DREAM,
       "0-shot gsm8k_cot with chat, 256 tokens. Dream sampled at temperature 0.1, top_p 0.9 with its entropy order; "
       "the sweep is greedy, as the DUS reference harness."),
    _r("dream/math500", DREAM, "minerva_math500", 0, 512, SRC_DREAM,
       "0-shot, 512 tokens as Dream's minerva_math run (Dream scored the full set)."),
    _r("dream/humaneval", DREAM, "humaneval_instruct", 0, 768, SRC_DREAM, "0-shot, 768 tokens.", code=True),
    _r("dream/mbpp", DREAM, "mbpp_instruct", 0, 1024, SRC_DREAM,
       "0-shot, 1024 tokens; lm-eval's mbpp_instruct sets max_gen_toks 256, which shortens the generation to 256.",
       code=True),
    _r("dream/bbh", DREAM, "bbh_cot_fewshot", 3, 256, "not published for Dream-Instruct",
       "3-shot CoT, gen 256 copied from the LLaDA-Base BBH setting: our choice, unverified for Dream."),
    _r("dream/mmlu_pro", DREAM, "mmlu_pro", 4, 128, SRC_DREAM, "4-shot, 128 tokens."),
    _r("dream/ifeval", DREAM, "ifeval", 0, 1280, SRC_DREAM, "0-shot, 1280 tokens."),
    _r("diffucoder/humaneval", DIFFUCODER, "humaneval_instruct", 0, 256, SRC_DIFFUCODER,
       "0-shot with chat; DiffuCoder's paper evaluates with EvalPlus, not lm-eval: prompts differ. 256 tokens from "
       "the model card, which samples at temperature 0.4 / top_p 0.95; the sweep is greedy.", code=True),
    _r("diffucoder/mbpp", DIFFUCODER, "mbpp_instruct", 0, 256, SRC_DIFFUCODER,
       "0-shot with chat; EvalPlus in the paper; 256 tokens as the model card.", code=True),
)}


def variant_args(recipe: Recipe, variant: Variant, batch_size: int = 8) -> str:
    """The ``--model_args`` value of one (recipe, variant)."""
    pairs = [("pretrained", recipe.model), ("gen_length", str(recipe.gen_length)),
             ("block_length", str(variant.block_length))]
    pairs += [(k, v.replace("{G}", str(recipe.gen_length))) for k, v in variant.planner_args]
    pairs += list(recipe.model_args.items()) + [("batch_size", str(batch_size))]
    return ",".join(f"{k}={v}" for k, v in pairs)


def commands(recipe: Recipe, variants: list[Variant] | None = None, output_root: str = "runs/eval",
             batch_size: int = 8) -> list[list[str]]:
    """``unmask eval`` argument lists, one per variant."""
    out = []
    for v in variants if variants is not None else sweep():
        args = ["unmask", "eval", "--model_args", variant_args(recipe, v, batch_size), "--tasks", recipe.task,
                "--num_fewshot", str(recipe.num_fewshot), "--output_path", f"{output_root}/{recipe.name}/{v.name}",
                "--log_samples"]
        if recipe.chat:
            args += ["--apply_chat_template", "--fewshot_as_multiturn", "true"]
        if recipe.code:
            args.append("--allow-code-execution")
        out.append(args)
    return out


def select_variants(spec: str | None) -> list[Variant]:
    """Variants whose name starts with any comma-separated prefix of ``spec`` (all when None)."""
    all_variants = sweep()
    if not spec:
        return all_variants
    prefixes = [p.strip() for p in spec.split(",") if p.strip()]
    chosen = [v for v in all_variants if any(v.name.startswith(p) for p in prefixes)]
    if not chosen:
        raise ValueError(f"--variants {spec!r} matches none of {[v.name for v in all_variants]}")
    return chosen


def describe(name: str, variants: list[Variant] | None = None, output_root: str = "runs/eval", batch_size: int = 8) -> str:
    """A printable description of one recipe and its commands."""
    if name not in RECIPES:
        raise ValueError(f"--recipe must be one of {sorted(RECIPES)} (or 'list'), got {name!r}")
    r = RECIPES[name]
    head = [f"# {r.name}: {r.model} on {r.task} ({r.num_fewshot}-shot, gen_length {r.gen_length}"
            f"{', chat template' if r.chat else ''}{', executes code' if r.code else ''})",
            f"# settings from: {r.source}", f"# notes: {r.notes}"]
    return "\n".join(head + [shlex.join(c) for c in commands(r, variants, output_root, batch_size)]) + "\n"
