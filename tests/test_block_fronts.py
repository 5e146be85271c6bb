"""Every front on a block-causal family (tiny SDAR, blocks of 4): the server's streamed events count generated
tokens only (a row's prompt tail in block 0 is not part of them) and end as offline generate, with the committed
cache by default; the CLI's block length defaults to the model's block size."""

from __future__ import annotations

import asyncio
import math

import model_fixtures as mf
import pytest
import torch

import unmask
from unmask import GenerationConfig

pytest.importorskip("fastapi")

from unmask.serve import Served, ServeSettings
from unmask.serve.job import Job, row_text
from unmask.serve.metrics import Metrics
from unmask.serve.plan import build_plan
from unmask.serve.prompts import completion_prompts
from unmask.serve.schemas import CompletionRequest
from unmask.serve.worker import Worker


@pytest.fixture(scope="module")
def served() -> Served:
    den, tok = unmask.load(mf.sdar_small(), device="cpu", dtype=torch.float32)
    return Served(den, tok, ServeSettings(max_batch=8, max_tokens=12))


def _run(served: Served, fields: dict, prompt: str):  # type: ignore[no-untyped-def]
    async def main():  # type: ignore[no-untyped-def]
        worker = Worker(served, Metrics())
        worker.start()
        try:
            req = CompletionRequest(prompt=prompt, **fields)
            job = Job(build_plan(req, served, lambda: completion_prompts(req, served)), asyncio.get_running_loop())
            worker.submit(job)
            events = []
            while True:
                kind, data = await asyncio.wait_for(job.events.get(), 60)
                events.append((kind, data))
                if kind in ("done", "error"):
                    return job, events
        finally:
            await worker.stop()

    return asyncio.run(main())


@pytest.mark.parametrize("prompt", ["hello world the cat sat", "hello world the cat", "hello"])  # leads 1, 0, 1
def test_streamed_request_counts_generated_tokens_and_equals_offline(served, prompt):
    fields = dict(max_tokens=12, stream=True, reveal_events=True, n=2, seed=3, planner="threshold(tau=0.5)",
                  temperature=1.0)
    job, events = _run(served, fields, prompt)
    plan = job.plan
    assert plan.config.block_length == 4 and plan.config.cache == "auto"  # the model's block, the committed cache
    out = unmask.generate(served.denoiser, plan.rows, plan.config, seeds=plan.seeds)
    assert out.partial_forwards == out.nfe  # auto resolved to the committed cache: segment calls only
    gen = out.generated.tolist()
    positions: dict[int, list[int]] = {0: [], 1: []}
    for kind, data in events:
        if kind == "call":
            for row in data["rows"]:  # every revealed position is a generated offset, with its offline token
                assert all(gen[row["index"]][p] == t for p, t in zip(row["positions"], row["tokens"], strict=True))
                positions[row["index"]] += row["positions"]
    for r in (0, 1):  # each generated offset revealed exactly once, none of the prompt tail
        assert sorted(positions[r]) == list(range(12)), positions[r]
    streamed = ["", ""]
    for kind, data in events:
        if kind == "block":
            for k, delta, _ in data:
                streamed[k] += delta
    eos = set(served.denoiser.spec.eos_ids)
    offline = [row_text(served.tokenizer, ids, eos, plan, True)[0] for ids in gen]
    assert streamed == offline
    assert [c.text for c in events[-1][1].choices] == offline


def test_cli_block_length_defaults_to_the_model_block(capsys):
    from unmask import cli

    code = cli.main(["generate", "--model", str(mf.sdar_small()), "--gen-length", "8", "--no-chat-template", "hello"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "blocks of 4," in out, out
    code = cli.main(["generate", "--model", "tiny-arith", "--gen-length", "32", "--no-chat-template", "Q:1+2;"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "blocks of 32," in out, out


def test_offline_generate_on_sdar_needs_the_model_block_divisible():
    den, _ = unmask.load(mf.sdar_small(), device="cpu", dtype=torch.float32)
    with pytest.raises(ValueError, match="block_length must divide"):
        unmask.generate(den, [[1, 2]], GenerationConfig(gen_length=32, block_length=32))


@pytest.mark.parametrize("block", [["--block-length", "4"], []], ids=["given", "the model's"])
def test_tune_runs_on_a_saved_sdar_checkpoint(tmp_path, capsys, block):
    import json

    from unmask.cli import main

    prompts = tmp_path / "p.txt"
    prompts.write_text("\n".join(["hello world", "the cat sat", "on a mat", "what is", "the world", "a cat"]))
    code = main(["tune", "--model", str(mf.sdar_small()), "--prompts", str(prompts), "--budget", "2",
                 "--gen-length", "8", *block, "--samples", "4", "--no-chat-template", "--device", "cpu",
                 "--dtype", "float32", "--plot", str(tmp_path / "t.png"), "--json", str(tmp_path / "t.json"),
                 "--candidates", "dilated(base=2)", "threshold(tau=0.7)", "eb(gamma=1.0)"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "winner: " in out and (tmp_path / "t.png").exists()
    assert json.loads((tmp_path / "t.json").read_text())["settings"]["block_length"] == 4  # SDAR's block


def test_eval_generation_and_block_likelihood_on_sdar():
    pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance

    from unmask.eval import UnmaskLM
    from unmask.eval.likelihood import block_pairs

    lm = UnmaskLM(pretrained=str(mf.sdar_small()), gen_length=8, block_length=4, mc_num=2, batch_size=4,
                  device="cpu", dtype="float32")
    req = Instance("generate_until", {}, ("hello world the cat", {"until": ["\n"]}), 0, ("t", 0, 1))  # lead 0
    texts = lm.generate_until([req])
    assert len(texts) == 1 and lm.speed.tasks["t"].nfe == 2 * 2  # dilated (base 2): 2 calls in each of 2 blocks
    assert lm.config.cache == "auto" and lm.speed.denoiser_calls == 4
    ctx, cont = lm._encode_request("hello world the", " cat sat on a mat")
    (ll, greedy), = lm.loglikelihood([Instance("loglikelihood", {}, ("hello world the", " cat sat on a mat"), 0,
                                                ("l", 0, 1))])
    pieces = len(block_pairs([(ctx, cont)], 4)[0])
    assert (len(ctx), len(cont), pieces) == (3, 5, 2)  # block 0 holds 1 continuation token, block 1 the other 4
    assert math.isfinite(ll) and ll < 0 and isinstance(greedy, bool)
    assert lm.speed.tasks["l"].nfe >= 2 * pieces  # mc_num draws per model block


def test_serve_default_block_is_the_models_when_the_servers_does_not_divide_it():
    from unmask.serve.plan import default_block

    assert default_block(32, 12, 4) == 4 and default_block(32, 12, None) == 12  # SDAR's 4; a full-attention model
    assert default_block(2, 12, 4) == 2 and default_block(32, 64, 32) == 32  # a divisor is kept
    assert default_block(16, 12, 32) == 32  # 12 does not divide LLaDA2's 32: the model's block


def test_serve_warm_up_compiles_the_committed_cache_on_sdar(served):
    from rich.console import Console

    from unmask.cli.serve import warm_up

    class FakeEngine:  # records what warm_up asks for, no compiling
        model = type("M", (), {"attention_block": 4, "warmup_seconds": {}})()
        spec = served.denoiser.spec

        def __init__(self):
            self.configs = []

        def add(self, request):
            self.configs.append(request.config)

        def run(self):
            return {}

    engine = FakeEngine()
    warm_up(type("W", (), {"engine": engine})(), served.settings, Console(quiet=True))
    assert {(c.cache, c.block_length) for c in engine.configs} == {("none", 4), ("committed", 4)}
