"""Every front on a block-causal family (tiny SDAR, blocks of 4): the server's streamed events count generated
tokens only (a row's prompt tail in block 0 is not part of them) and end as offline generate, with the committed
cache by default; the CLI's block length defaults to the model's block size."""

from __future__ import annotations

import asyncio

import model_fixtures as mf
import pytest
import torch

import unmask
from unmask import GenerationConfig

pytest.importorskip("fastapi")

from unmask.serve import Served, ServeSettings  # noqa: E402
from unmask.serve.job import Job, row_text  # noqa: E402
from unmask.serve.metrics import Metrics  # noqa: E402
from unmask.serve.plan import build_plan  # noqa: E402
from unmask.serve.prompts import completion_prompts  # noqa: E402
from unmask.serve.schemas import CompletionRequest  # noqa: E402
from unmask.serve.worker import Worker  # noqa: E402


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
