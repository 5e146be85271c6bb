"""The identity cases: generate's outputs for every planner x cache mode x padded batch, greedy and sampled.

``record(...)`` runs every case and returns its outputs (tokens, trace, NFE, forwards) as tensors;
``tests/fixtures/record_identity.py`` saves them once, and ``tests/test_identity.py`` checks that the
current code reproduces them exactly (tokens, reveal calls, NFE) and to float32 rounding (probabilities).
"""

from __future__ import annotations

import torch

import model_fixtures as mf
from unmask import GenerationConfig, generate
from unmask.models import load

PLANNERS = [
    "dilated", "dilated(base=3)", "dilated(confidence_threshold=0.4)", "binary", "topk(steps={nb})",
    "topk(score='margin', counts='dilated')", "topk(score='entropy', counts='dilated')",
    "topk(score='random', counts='dilated')", "eb(gamma=1.0)", "threshold(tau=0.5)", "factor(factor=1.0)",
    "spaced(eb(gamma=2.0), start_stride=4)", "spaced(dilated(), start_stride=2)", "interleave(k=4)",
    "farthest(calls=3)",
]
MODES = ["none", "prefix", "dual"]
TEXTS = ["Q:26+34-6+33;", "Q:86*2+89;", "Q:7+5;", "Q:41-17*3+2-9;"]  # different lengths: a padded batch
GEN, BLOCK = 48, 16


def models():
    """The bundled model (confident logits) and a tiny random Dream checkpoint (shifted logits, lookbehind 1)."""
    tiny, tok = load("tiny-arith", dtype=torch.float32)
    dream, _ = load(mf.dream_small(), dtype=torch.float32)
    prompts = {"tiny": [tok(t, add_special_tokens=False)["input_ids"] for t in TEXTS],
               "dream": [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14], [15]]}
    return {"tiny": tiny, "dream": dream}, prompts


def cases():
    """(name, model key, config, seeds or None) for every case."""
    nb = GEN // BLOCK
    for key in ("tiny", "dream"):
        for planner in PLANNERS:
            for mode in MODES:
                for temp in (0.0, 1.0):
                    cfg = GenerationConfig(gen_length=GEN, block_length=BLOCK, planner=planner.format(nb=nb),
                                           cache=mode, sampling={"temperature": temp}, seed=7)
                    yield f"{key}|{planner}|{mode}|t{temp}", key, cfg
        for mode in MODES:  # guidance composes with every cache mode
            cfg = GenerationConfig(gen_length=GEN, block_length=BLOCK, planner="dilated", cache=mode, cfg_scale=1.0,
                                   seed=3)
            yield f"{key}|dilated|{mode}|cfg", key, cfg
        cfg = GenerationConfig(gen_length=GEN, block_length=BLOCK, planner="threshold(tau=0.9)", early_exit=False)
        yield f"{key}|threshold|none|no-early-exit", key, cfg


def outputs(out) -> dict[str, torch.Tensor]:
    t = out.trace
    return {
        "generated": out.generated.clone(), "reveal_call": t.reveal_call.clone(), "token_prob": t.token_prob.clone(),
        "token_logq": t.token_logq.clone(), "revealed_per_call": t.revealed_per_call.clone(),
        "block_of_call": t.block_of_call.clone(), "nfe": torch.tensor(out.nfe), "nfe_per_row": out.nfe_per_row.clone(),
        "full_forwards": torch.tensor(out.full_forwards), "partial_forwards": torch.tensor(out.partial_forwards),
        "skipped_blocks": torch.tensor(out.skipped_blocks),
    }


def record() -> dict[str, dict[str, torch.Tensor]]:
    dens, prompts = models()
    return {name: outputs(generate(dens[key], prompts[key], cfg)) for name, key, cfg in cases()}
