"""The compiled path (static shapes, torch.compile, graph replay) gives the eager path's tokens, on CPU.

torch.compile runs on CPU (inductor's C++ backend), so every planner x cache
mode x padded batch is checked here against the eager reference; CUDA graphs
cannot be captured without a GPU, so their static-input/static-output logic is
run in emulation (the same copies, no graph). Each shape compiles once per
process (tens of seconds here), so the tests share one compiled model per
family and use few shapes.
"""

import pytest
import torch

import model_fixtures as mf
from unmask import GenerationConfig, generate
from unmask.models import load
from unmask.models.runner import CompiledDenoiser, batch_bucket, query_bucket, round_up

PLANNERS = [
    "dilated", "dilated(confidence_threshold=0.5)", "binary", "topk(steps=2)", "topk(score='margin', counts='dilated')",
    "topk(score='random', counts='dilated')", "eb(gamma=1.0)", "threshold(tau=0.7)", "factor(factor=1.0)",
    "spaced(eb(gamma=2.0), start_stride=4)",
]
PROMPTS = [[1, 2, 3, 4, 5, 6], [7, 8], [9, 10, 11]]  # 3 rows: the batch bucket of 4 adds a dummy row


@pytest.fixture(scope="module", params=["llada", "dream"])
def model(request):
    path = mf.llada_small() if request.param == "llada" else mf.dream_small()
    den, _ = load(path, dtype=torch.float32)
    return den


def same(a, b):
    return torch.equal(a.generated, b.generated) and torch.equal(a.trace.reveal_call, b.trace.reveal_call)


@pytest.mark.parametrize("mode", ["none", "prefix", "dual"])
def test_compiled_tokens_equal_eager_for_every_planner(model, mode):
    for planner in PLANNERS:
        for temperature in (0.0, 1.0):
            cfg = GenerationConfig(gen_length=16, block_length=8, planner=planner, cache=mode, early_exit=False,
                                   sampling={"temperature": temperature}, seed=3)
            eager = generate(model, PROMPTS, cfg)
            compiled = generate(model, PROMPTS, GenerationConfig(**{**cfg.__dict__, "compile": True}))
            assert same(eager, compiled), f"{planner} at temperature {temperature}, cache={mode}"
            assert (compiled.full_forwards, compiled.partial_forwards) == (eager.full_forwards, eager.partial_forwards)


def test_graphs_are_reused_across_generations_and_batch_sizes_in_a_bucket(model):
    compiled = model.compiled()
    cfg = GenerationConfig(gen_length=16, block_length=8, planner="dilated", cache="dual", early_exit=False, compile=True)
    generate(model, PROMPTS, cfg)
    shapes = set(compiled.shapes)
    arena = compiled.arena
    assert all(seconds > 0 for seconds in compiled.warmup_seconds.values())
    four = [[1, 2], [3, 4, 5, 6, 7], [8], [9, 10, 11, 12]]  # 4 rows, longest prompt 5: same buckets
    out = generate(model, four, cfg)
    assert set(compiled.shapes) == shapes, "a batch in the same bucket compiled new shapes"
    longer = [[1] * 70, [2, 3]]  # another canvas bucket: new shapes, the same arena (its memory is fixed)
    generate(model, longer, cfg)
    assert compiled.arena is arena and arena.slots == 64
    assert same(out, generate(model, four, GenerationConfig(**{**cfg.__dict__, "compile": False})))


def test_guidance_doubles_the_rows_into_the_next_bucket(model):
    cfg = GenerationConfig(gen_length=16, block_length=8, planner="dilated", cache="dual", cfg_scale=1.0,
                           early_exit=False)
    assert same(generate(model, PROMPTS, cfg), generate(model, PROMPTS, GenerationConfig(**{**cfg.__dict__, "compile": True})))


@pytest.mark.parametrize("mode", ["prefix", "dual"])
def test_static_inputs_and_outputs_as_a_graph_uses_them(model, mode):
    """Graph replay reads inputs from and writes outputs to fixed tensors; emulated, the tokens must not change."""
    emulated = CompiledDenoiser(model, graphs="emulate")
    cfg = GenerationConfig(gen_length=16, block_length=8, planner="threshold(tau=0.7)", cache=mode, early_exit=False)
    for prompts in (PROMPTS, [[5, 4, 3], [2, 1], [7, 7, 7, 7]]):  # a second generation reuses the static tensors
        eager = generate(model, prompts, cfg)
        model._compiled, saved = emulated, model._compiled
        try:
            replayed = generate(model, prompts, GenerationConfig(**{**cfg.__dict__, "compile": True}))
        finally:
            model._compiled = saved
        assert same(eager, replayed)
    assert all(call.inputs is not None for call in emulated.shapes.values())


def test_compile_needs_a_denoiser_with_a_compiled_path():
    from toy import ToyDenoiser

    with pytest.raises(ValueError, match="compile=True needs a denoiser with a compiled path"):
        generate(ToyDenoiser(), [[1]], GenerationConfig(gen_length=8, block_length=8, compile=True))


@pytest.mark.parametrize("n, bucket", [(1, 1), (2, 2), (3, 4), (5, 8), (33, 64), (64, 64), (65, 128), (130, 192)])
def test_batch_buckets(n, bucket):
    assert batch_bucket(n) == bucket


def test_query_and_length_buckets():
    assert [query_bucket(q) for q in (1, 8, 9, 33, 64, 65, 257)] == [8, 8, 16, 64, 64, 128, 512]
    assert [round_up(v, 64) for v in (1, 64, 65, 384)] == [64, 64, 128, 384]
