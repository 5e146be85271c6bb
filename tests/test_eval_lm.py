"""The lm-eval model end to end on local tasks and a scripted denoiser: metrics, speed, stops, chat, scoring."""

from __future__ import annotations

import math

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("lm_eval", reason="needs the eval extra: pip install -e '.[eval]'")

import torch
from eval_tasks import scripted
from lm_eval.api.instance import Instance
from lm_eval.tasks import TaskManager
from toy import ToyDenoiser

from unmask import Denoiser, TokenSpec
from unmask.denoiser import select_window
from unmask.eval import simple_evaluate
from unmask.eval.likelihood import greedy_check, mc_loglikelihood
from unmask.eval.dist import padding_flags


def _manager(task_dir: Path) -> TaskManager:
    return TaskManager(include_path=str(task_dir), include_defaults=False)


@pytest.fixture(scope="module")
def plain_run(task_dir: Path) -> dict[str, Any]:
    lm = scripted.scripted_lm({**scripted.GSM8K_SCRIPT, **scripted.MC_SCRIPT})
    results = simple_evaluate(lm, tasks=["tiny_gsm8k", "tiny_mc"], bootstrap_iters=0, log_samples=True,
                              task_manager=_manager(task_dir))
    assert results is not None
    return results


def _scores(results: dict[str, Any], task: str, metric: str, filt: str | None = None) -> list[float]:
    rows = [s for s in results["samples"][task] if filt is None or s["filter"] == filt]
    return [s[metric] for s in sorted(rows, key=lambda s: s["doc_id"])]


def test_metrics_keys_and_right_and_wrong_answers(plain_run: dict[str, Any]) -> None:
    gsm, mc = plain_run["results"]["tiny_gsm8k"], plain_run["results"]["tiny_mc"]
    assert {"exact_match,strict-match", "exact_match,flexible-extract"} <= set(gsm)
    assert "acc,none" in mc
    # scripted: right, wrong, right-after-stop-trimming; multiple choice: right, wrong
    assert _scores(plain_run, "tiny_gsm8k", "exact_match", "strict-match") == [1.0, 0.0, 1.0]
    assert _scores(plain_run, "tiny_gsm8k", "exact_match", "flexible-extract") == [1.0, 0.0, 1.0]
    assert _scores(plain_run, "tiny_mc", "acc") == [1.0, 0.0]
    assert gsm["exact_match,flexible-extract"] == pytest.approx(2 / 3) and mc["acc,none"] == 0.5


def test_stop_strings_are_trimmed_on_text(plain_run: dict[str, Any]) -> None:
    third = next(s for s in plain_run["samples"]["tiny_gsm8k"] if s["doc_id"] == 2)
    answer = third["resps"][0][0]
    assert answer == " She keeps 5.\n#### 5\n\n"  # the scripted text went on with "Question: then 999"


def test_speed_is_recorded_per_task(plain_run: dict[str, Any]) -> None:
    speed = plain_run["unmask_speed"]
    gsm, mc, total = speed["tiny_gsm8k"], speed["tiny_mc"], speed["_total"]
    assert gsm["requests"] == 3 and mc["requests"] == 6  # 3 documents; 2 documents x 3 choices
    assert gsm["gen_positions"] == 3 * 64 and mc["gen_positions"] == 0
    assert gsm["nfe_per_token"] == pytest.approx(gsm["nfe"] / gsm["gen_positions"])
    assert gsm["tokens_per_nfe"] == pytest.approx(gsm["gen_positions"] / gsm["nfe"])
    # DUS with blocks of 16: log2(16) = 4 calls per block, 4 blocks at most (early exit may skip some)
    assert 4 <= gsm["nfe_per_request"] <= 16
    assert gsm["seconds"] > 0 and gsm["tokens_per_second"] > 0 and 0 < gsm["answer_tokens"] <= gsm["gen_positions"]
    assert mc["nfe"] >= 6 * 4  # mc_num = 4 draws per request, plus greedy-check calls
    assert total["requests"] == 9 and total["nfe"] == gsm["nfe"] + mc["nfe"] and total["world_size"] == 1
    assert total["denoiser_calls"] > 0 and total["eval_wall_seconds"] > 0
    assert plain_run["config"]["unmask"]["planner"] == "dilated" and plain_run["config"]["model"] == "unmask"


def test_chat_template_and_system_prompt(task_dir: Path) -> None:
    lm = scripted.scripted_lm(scripted.GSM8K_SCRIPT, marker="<|assistant|>")
    results = simple_evaluate(lm, tasks=["tiny_gsm8k"], bootstrap_iters=0, log_samples=True, apply_chat_template=True,
                              system_instruction="Be brief.", task_manager=_manager(task_dir))
    assert results is not None
    assert _scores(results, "tiny_gsm8k", "exact_match", "flexible-extract") == [1.0, 0.0, 1.0]
    prompts = [p.replace("<|pad|>", "") for p in lm.denoiser.prompts]
    assert prompts and all(p.startswith("<|system|>Be brief.<|eos|><|user|>Question:") for p in prompts)
    assert all(p.endswith("<|assistant|>") for p in prompts)
    assert all(p.count("<|assistant|>") == 3 for p in prompts)  # 2 few-shot turns + the generation prompt


def _instance(context: str, kwargs: dict[str, Any], task: str = "t") -> Instance:
    return Instance("generate_until", {}, (context, kwargs), 0, (task, 0, 1))


def test_max_gen_toks_rounds_the_generation_and_cuts_the_answer() -> None:
    question = scripted.GSM8K_TEST[0]["question"]
    lm = scripted.scripted_lm(scripted.GSM8K_SCRIPT, planner="topk", steps=64)  # 16 calls per block of 16
    out = lm.generate_until([_instance(f"Question: {question}\nAnswer:", {"max_gen_toks": 5, "until": ["\n"]})])
    assert out == [" 48 +"]  # 5 tokens (characters) of the scripted " 48 + 24 = 72.\n#### 72"
    row = lm.speed.tasks["t"]
    assert row.gen_positions == 16 and row.nfe == 16  # 5 rounded up to one block; steps rescaled to 16 per block
    out = lm.generate_until([_instance(f"Question: {question}\nAnswer:", {"until": [" ="]})])
    assert out == [" 48 + 24"]


def test_padding_copies_are_flagged() -> None:
    a, b = _instance("a", {}), _instance("b", {})
    assert padding_flags([a, b, b]) == [False, False, True]


class Uniform(Denoiser):
    """Every position uniform over the vocabulary: the ELBO equals the exact log-likelihood for any draw."""

    def __init__(self, vocab: int = 10, max_length: int | None = None) -> None:
        self.spec = TokenSpec(mask_id=vocab - 1, eos_ids=(vocab - 2,), pad_id=0, vocab_size=vocab, max_length=max_length)
        self.lengths: list[int] = []  # real (unpadded) tokens of every row it was called on

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                 window: Any = None) -> torch.Tensor:
        self.lengths += attention_mask.sum(-1).tolist()
        return select_window(torch.zeros(*input_ids.shape, self.spec.vocab_size), window)


def test_elbo_is_exact_for_a_factorised_model() -> None:
    pairs = [([1, 2, 3], [4, 5]), ([1], [2, 3, 4, 5, 6, 7])]
    lls, calls = mc_loglikelihood(Uniform(), pairs, mc_num=8, batch_size=5)
    assert lls == pytest.approx([2 * math.log(1 / 10), 6 * math.log(1 / 10)], rel=1e-5)
    assert calls == math.ceil(2 * 8 / 5)


def test_elbo_does_not_depend_on_batching() -> None:
    toy = ToyDenoiser(vocab=12)
    pairs = [([1, 2, 3], [4, 5, 6]), ([7], [3, 2]), ([5, 5, 5, 5], [1])]
    one, _ = mc_loglikelihood(toy, pairs, mc_num=6, batch_size=1, seed=3)
    many, _ = mc_loglikelihood(toy, pairs, mc_num=6, batch_size=7, seed=3)
    alone = [mc_loglikelihood(toy, [p], mc_num=6, batch_size=4, seed=3)[0][0] for p in pairs]
    assert one == pytest.approx(many, abs=1e-4) and one == pytest.approx(alone, abs=1e-4)


def test_greedy_check_modes() -> None:
    lm = scripted.scripted_lm(scripted.MC_SCRIPT)
    ctx = lm.tok_encode("Question: Capital of France?\nAnswer:")
    right, wrong = lm.tok_encode(" Paris", add_special_tokens=False), lm.tok_encode(" Lyon", add_special_tokens=False)
    for mode in ("reveal", "argmax"):
        greedy, nfe, _ = greedy_check(lm.denoiser, [(ctx, right), (ctx, wrong)], mode, batch_size=2)
        assert greedy == [True, False]
    assert nfe == [1, 1]
    greedy, nfe, _ = greedy_check(lm.denoiser, [(ctx, right), (ctx, wrong)], "reveal", batch_size=2)
    assert nfe[0] == len(right) and nfe[1] < len(wrong)  # the wrong one stops at its first mismatch


def test_rolling_loglikelihood_sums_windows() -> None:
    lm = scripted.scripted_lm({})
    text = "abcdefghijklmnopqrstuvwxyz"
    lm.denoiser = Uniform(vocab=len(lm.tokenizer), max_length=8)
    lm.spec = lm.denoiser.spec
    (total,) = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0, ("r", 0, 1))])
    assert total == pytest.approx(len(text) * math.log(1 / len(lm.tokenizer)), rel=1e-5)
    assert lm.speed.tasks["r"].requests == 1
    # every window (context + continuation) fits the model: 26 tokens = 7 + 7 + 7 + 5 after one context token each
    assert max(lm.denoiser.lengths) == 8


def test_pretrained_checkpoint_through_unmask_models_load() -> None:
    from model_fixtures import llada_small

    from unmask.eval import UnmaskLM

    path = str(llada_small())
    lm = UnmaskLM(pretrained=path, gen_length=16, block_length=8, mc_num=2, batch_size=2, device="cpu", dtype="float32")
    assert lm.tok_encode("hello world")[:1] == [lm.tokenizer.bos_token_id]  # LLaDA's family rule: one BOS
    reqs = [_instance("hello world", {"until": ["\n"], "max_gen_toks": 12}), _instance("the cat", {"until": ["\n"]})]
    texts = lm.generate_until(reqs)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    assert lm.speed.tasks["t"].gen_positions == 32 and lm.speed.tasks["t"].nfe == 2 * 2 * 3  # 2 blocks x log2(8)
    cached = UnmaskLM(pretrained=path, gen_length=16, block_length=8, cache="prefix", device="cpu", dtype="float32")
    assert cached.generate_until(reqs[:1]) == texts[:1]
    (ll, greedy), = lm.loglikelihood([Instance("loglikelihood", {}, ("the cat", " sat on"), 0, ("l", 0, 1))])
    assert ll < 0 and isinstance(greedy, bool)


@pytest.mark.parametrize("planner", ["dilated", "topk(score='random', counts='dilated')"])
def test_repeats_are_distinct_samples_whatever_the_batch_size(planner: str) -> None:
    """lm-eval lists a request `repeats` times (pass@k); each repeat must be its own sample, in any batch."""
    outs = {}
    for batch_size in (1, 4, 8):
        temperature = 0.0 if "random" in planner else 1.0  # a random order alone must vary too
        lm = scripted.scripted_lm({}, planner=planner, gen_length=16, block_length=8, temperature=temperature,
                                  batch_size=batch_size)
        lm.denoiser = ToyDenoiser(vocab=len(lm.tokenizer), seed=4) if temperature == 0 else Uniform(vocab=len(lm.tokenizer))
        lm.spec = lm.denoiser.spec
        req = _instance("hello", {"until": []})
        other = Instance("generate_until", {}, ("bye", {"until": []}), 0, ("t", 1, 1))
        outs[batch_size] = lm.generate_until([req] * 8 + [other] * 2)
    assert outs[1] == outs[4] == outs[8], "a repeat's sample depends on the batch it landed in"
    assert len(set(outs[1][:8])) == 8 and outs[1][8] != outs[1][9]
