"""The engine: requests with different settings share calls and get exactly what they get alone; rows that are
done leave the calls; the arena is one fixed allocation of slots; cancellation and joining mid-flight."""

import pytest
import torch

import model_fixtures as mf
from toy import ToyDenoiser
from unmask import GenerationConfig, generate
from unmask.denoiser import Denoiser, TokenSpec
from unmask.engine import Engine, EngineConfig, Request, parse_memory
from unmask.models import load

PROMPTS = [[1, 2, 3, 4, 5, 6], [7, 8], [9, 10, 11], [12]]

# (prompts, config) of requests that differ in every setting the engine lets them differ in
MIX = [
    (PROMPTS[:2], dict(gen_length=16, block_length=8, planner="dilated", cache="dual")),
    (PROMPTS[1:], dict(gen_length=24, block_length=8, planner="threshold(tau=0.7)", cache="prefix",
                       sampling={"temperature": 1.0}, seed=5)),
    (PROMPTS[2:3], dict(gen_length=32, block_length=16, planner="eb(gamma=1.0)", cache="none")),
    (PROMPTS[:1], dict(gen_length=16, block_length=4, planner="topk(steps=8)", cache="dual", cfg_scale=1.0)),
    (PROMPTS[3:], dict(gen_length=8, block_length=8, planner="spaced(dilated(), start_stride=2)", cache="dual",
                       sampling={"temperature": 0.8, "top_p": 0.9}, seed=2)),
    (PROMPTS, dict(gen_length=16, block_length=16, planner="topk(score='margin', counts='dilated')", cache="none")),
]


@pytest.fixture(scope="module", params=["llada", "dream"])
def model(request):
    path = mf.llada_small() if request.param == "llada" else mf.dream_small()
    den, _ = load(path, dtype=torch.float64)  # float64: a row's logits agree to the last greedy choice in any batch
    return den


def alone(den, prompts, cfg):
    return generate(den, prompts, GenerationConfig(**cfg))


def same(a, b):
    return (torch.equal(a.generated, b.generated) and torch.equal(a.trace.reveal_call, b.trace.reveal_call)
            and a.nfe == b.nfe and torch.equal(a.nfe_per_row, b.nfe_per_row)
            and (a.full_forwards, a.partial_forwards) == (b.full_forwards, b.partial_forwards))


def requests(mix, seeds_from=0):
    out = []
    for i, (prompts, cfg) in enumerate(mix):
        config = GenerationConfig(**cfg)
        seeds = [derived for derived in _seeds(config, len(prompts))]
        out.append(Request([list(p) for p in prompts], config, seeds))
    return out


def _seeds(config, n):
    from unmask.loop import row_seeds

    return row_seeds(None, n, config.seed if config.seed is not None else 0)


@pytest.mark.parametrize("pad_budget", [None, 1.3])
def test_requests_with_different_settings_share_calls_and_get_what_they_get_alone(model, pad_budget):
    engine = Engine(model, EngineConfig(max_rows=64, kv_slots=32, pad_budget=pad_budget))
    reqs = requests(MIX)
    for r in reqs:
        engine.add(r)
    outs = engine.run()
    for r, (prompts, cfg) in zip(reqs, MIX, strict=True):
        cfg = {**cfg, "seed": cfg.get("seed", 0)}
        assert same(outs[r.id], alone(model, prompts, cfg)), f"{cfg} differs from its run alone"
    assert engine.stats.rows_per_call > 2, "requests with different settings did not share calls"
    alone_calls = sum(outs[r.id].nfe for r in reqs)
    assert engine.stats.calls < alone_calls


def test_a_request_joining_mid_flight_gets_what_it_gets_alone(model):
    engine = Engine(model, EngineConfig(kv_slots=16))
    first, late = requests(MIX[:1]), requests(MIX[1:2])
    engine.add(first[0])
    engine.step()
    engine.step()
    engine.add(late[0])
    outs = engine.run()
    assert same(outs[late[0].id], alone(model, MIX[1][0], MIX[1][1]))
    assert same(outs[first[0].id], alone(model, MIX[0][0], {**MIX[0][1], "seed": 0}))


class EosFirst(Denoiser):
    """Row with first prompt token 1 predicts EOS everywhere; other rows predict token 3 (never EOS)."""

    spec = TokenSpec(mask_id=9, eos_ids=(8,), pad_id=0, vocab_size=10)

    def __call__(self, ids, attention_mask, position_ids, window=None):
        first = torch.where(attention_mask, ids, 0).gather(1, attention_mask.long().argmax(-1, keepdim=True))
        logits = torch.full((*ids.shape, 10), -5.0)
        logits[..., 3] = 5.0
        logits[(first == 1).squeeze(-1), :, 8] = 10.0
        return logits if window is None else logits[:, window[0] : window[1]]


def test_rows_that_are_done_leave_the_calls():
    engine = Engine(EosFirst(), EngineConfig())
    cfg = GenerationConfig(gen_length=32, block_length=8, planner="topk(steps=12)")  # 3 calls per block
    req = Request([[1, 2], [2, 2]], cfg, [0, 1])
    engine.add(req)
    out = engine.run()[req.id]
    assert out.nfe_per_row.tolist() == [3, 12] and out.nfe == 12
    assert engine.stats.calls == 12 and engine.stats.row_calls == 15  # the finished row left after its first block


def test_cancelled_requests_free_their_slots_at_the_next_step(model):
    engine = Engine(model, EngineConfig(kv_slots=4))
    a, b, c = requests([MIX[0], MIX[0], MIX[0]])  # 2 rows each: two fit the 4 slots, the third waits
    for r in (a, b, c):
        engine.add(r)
    engine.step()
    assert engine.live_rows == 4 and engine.waiting == 1
    engine.cancel(a)
    engine.step()
    assert engine.live_rows == 4 and engine.waiting == 0  # a's slots went to c
    outs = engine.run()
    assert a.id not in outs and same(outs[c.id], alone(model, MIX[0][0], {**MIX[0][1], "seed": 0}))


def test_the_arena_is_allocated_once_and_requests_wait_for_slots(model):
    engine = Engine(model, EngineConfig(kv_slots=3))
    reqs = requests([MIX[0]] * 5)
    for r in reqs:
        engine.add(r)
    arenas, peak = set(), 0
    while engine.has_work:
        engine.step()
        arenas.add(id(engine.runner.arena))
        peak = max(peak, engine.live_rows)
    assert len(arenas) == 1 and peak <= 2  # 2-row requests: only one fits 3 slots at a time
    assert engine.arena_bytes == model.arena_slot_bytes(engine.length) * 3


def test_kv_memory_sizes_the_arena(model):
    per_slot = model.arena_slot_bytes(64)
    engine = Engine(model, EngineConfig(kv_memory=per_slot * 5 + 7, max_length=64))
    assert engine.slots == 5
    with pytest.raises(ValueError, match="holds no slot"):
        Engine(model, EngineConfig(kv_memory=per_slot - 1, max_length=64))


def test_bad_requests_are_refused_before_compute(model):
    engine = Engine(model, EngineConfig(max_rows=2, kv_slots=2, max_length=32))
    with pytest.raises(ValueError, match="max_rows=2"):
        engine.add(Request(PROMPTS[:3], GenerationConfig(gen_length=8, block_length=8), [0, 1, 2]))
    with pytest.raises(ValueError, match="max_length=32"):
        engine.add(Request(PROMPTS[:1], GenerationConfig(gen_length=32, block_length=8, cache="dual"), [0]))
    with pytest.raises(ValueError, match="compile"):
        engine.add(Request(PROMPTS[:1], GenerationConfig(gen_length=8, block_length=8, compile=True), [0]))
    with pytest.raises(ValueError, match="cache='prefix' needs a denoiser"):
        Engine(ToyDenoiser()).add(Request([[1]], GenerationConfig(gen_length=8, block_length=8, cache="prefix"), [0]))
    assert not engine.has_work


@pytest.mark.parametrize("bad, match", [(dict(max_rows=0), "max_rows"), (dict(kv_memory=1.5), "kv_memory"),
                                        (dict(kv_slots=-1), "kv_slots"), (dict(max_length=True), "max_length"),
                                        (dict(pad_budget=0.9), "pad_budget"), (dict(pad_budget="some"), "pad_budget")])
def test_engine_config_is_validated(bad, match):
    with pytest.raises(ValueError, match=match):
        EngineConfig(**bad)


def test_parse_memory():
    assert parse_memory("0.4") == 0.4 and parse_memory("8GiB") == 8 << 30 and parse_memory("512MiB") == 512 << 20
    assert parse_memory("1000000") == 1000000
    for bad in ("", "-1", "1.5", "lots", "GiB"):
        with pytest.raises(ValueError, match="kv_memory"):
            parse_memory(bad)


def test_stop_strings_end_a_row_after_its_block():
    den, tok = load("tiny-arith", dtype=torch.float32)
    prompt = tok("Q:86*2+89;", add_special_tokens=False)["input_ids"]
    cfg = GenerationConfig(gen_length=48, block_length=8, planner="topk(steps=48)", stop=("=",))
    plain = generate(den, [prompt], GenerationConfig(gen_length=48, block_length=8, planner="topk(steps=48)"), tokenizer=tok)
    out = generate(den, [prompt], cfg, tokenizer=tok)
    assert "=" in plain.texts[0] and out.texts[0] == plain.texts[0].split("=")[0]
    assert int(out.nfe_per_row[0]) < int(plain.nfe_per_row[0])  # the row stopped after the block with "="


def test_split_padding_keeps_each_call_within_its_budget():
    from unmask.engine.runner import split_padding
    from unmask.engine.runner import Part

    class State:
        guided = False

    parts = [Part(State(), [0] * rows, 0, width) for rows, width in [(2, 60), (1, 20), (3, 24), (1, 58), (2, 40)]]
    assert split_padding(parts, None) == [parts]
    calls = split_padding(parts, 1.3)
    assert sorted(id(p) for c in calls for p in c) == sorted(id(p) for p in parts)  # every part, once
    for c in calls:
        rows = sum(len(p.rows) for p in c)
        assert max(p.width for p in c) * rows <= 1.3 * sum(len(p.rows) * p.width for p in c)
    assert [[p.width for p in c] for c in calls] == [[20, 24], [40, 58, 60]]  # 20+24 and 40+58+60: 1.09x, 1.16x
    assert split_padding([], 1.3) == []
