"""SGLang's contract for one ``step``, checked on hand-built blocks and logits.

Done only when the block had no mask at the start of the step; reveals
written into ``forward_batch.input_ids`` itself; committed tokens (including a
literal mask id in the prompt) never touched; the same draws on every
tensor-parallel rank; a row's result independent of the rows beside it and
their calls; clear errors for NaN logits and for batches without request ids.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from sglang.srt.dllm.config import DllmConfig

from unmask.noise import derive_seed
from unmask_sglang.algorithm import ALGORITHMS, RequestState, request_seeds, rid_key

M, V, BL = 9, 10, 4  # mask id, vocabulary, block size


def algo(name: str = "unmask-dus", **config):
    return ALGORITHMS[name](DllmConfig(algorithm=name, algorithm_config=config, block_size=BL, mask_id=M,
                                       max_running_requests=4))


def batch(rows: list[list[int]], offsets: list[int] | None = None, prompt_mask=None, rids=None) -> SimpleNamespace:
    n = len(rows)
    offsets = offsets or [0] * n
    positions = torch.tensor([[o + k for k in range(BL)] for o in offsets]).reshape(-1)
    return SimpleNamespace(batch_size=n, input_ids=torch.tensor(rows).reshape(-1), positions=positions,
                           dllm_prompt_mask=prompt_mask, rids=rids or [f"r{i}" for i in range(n)],
                           sampling_info=SimpleNamespace(sampling_seed=None))


def peaked(n: int, tokens: list[list[int]], conf: float = 8.0) -> torch.Tensor:
    """Logits ``[n * BL, V]`` with a clear favourite per position."""
    logits = torch.zeros(n * BL, V)
    logits[torch.arange(n * BL), torch.tensor(tokens).reshape(-1)] = conf
    return logits


def test_done_only_after_a_step_that_found_no_mask() -> None:
    a, fb = algo(), batch([[1, M, 2, 3]])
    states = a.init_step_state(fb)
    assert a.step(fb, peaked(1, [[0, 5, 0, 0]]), states) == [False]  # it had a mask: not done, though now full
    assert fb.input_ids.tolist() == [1, 5, 2, 3]
    assert a.step(fb, peaked(1, [[0, 0, 0, 0]]), states) == [True]  # no mask at the start: done, nothing written
    assert fb.input_ids.tolist() == [1, 5, 2, 3]


def test_reveals_are_written_into_the_input_ids_tensor_itself() -> None:
    a, fb = algo(), batch([[M] * BL, [M] * BL])
    ids, ptr = fb.input_ids, fb.input_ids.data_ptr()
    a.step(fb, peaked(2, [[1, 2, 3, 4], [5, 6, 7, 8]]), a.init_step_state(fb))
    assert fb.input_ids is ids and ids.data_ptr() == ptr
    assert (ids != M).any()  # the caller's own tensor holds the reveals (what a CUDA graph replays from)


def test_committed_tokens_stay_even_when_they_are_the_mask_id() -> None:
    prompt = torch.tensor([[True, True, False, False]])  # a prompt tail whose first token is literally the mask id
    a, fb = algo("unmask-threshold", planner="threshold(tau=0.5)"), batch([[M, 3, M, M]], prompt_mask=prompt)
    states = a.init_step_state(fb)
    assert a.step(fb, peaked(1, [[7, 7, 7, 7]]), states) == [False]
    assert fb.input_ids.tolist() == [M, 3, 7, 7]
    assert a.step(fb, peaked(1, [[7, 7, 7, 7]]), states) == [True]  # the literal mask id is not a mask to fill


def test_dus_reveals_its_levels_and_a_prompt_tail_is_never_rewritten() -> None:
    a = algo()  # dilated(base=2) on blocks of 4: offsets {0, 2}, then {1, 3}
    fb = batch([[M] * BL])
    states = a.init_step_state(fb)
    seen = []
    while not a.step(fb, peaked(1, [[1, 2, 3, 4]]), states)[0]:
        seen.append(fb.input_ids.tolist())
    assert seen == [[1, M, 3, M], [1, 2, 3, 4]]
    fb = batch([[6, M, M, M]])  # a first block that starts with the prompt's last token
    states = a.init_step_state(fb)
    while not a.step(fb, peaked(1, [[1, 2, 3, 4]]), states)[0]:
        assert fb.input_ids[0] == 6
    assert fb.input_ids.tolist() == [6, 2, 3, 4]


def test_rows_at_different_calls_get_what_they_get_alone() -> None:
    a = algo("unmask-dus", temperature=1.0)
    rows, offsets, calls = [[M] * BL, [5, M, M, M], [M, M, 1, M]], [0, 8, 4], [0, 1, 2]
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3 * BL, V, generator=g)
    fb = batch(rows, offsets, rids=["a", "b", "c"])
    states = [RequestState(s.seed, c) for s, c in zip(a.init_step_state(fb), calls)]
    a.step(fb, logits.clone(), states)
    for i in range(3):
        alone = batch([rows[i]], [offsets[i]], rids=[["a", "b", "c"][i]])
        one = [RequestState(a.init_step_state(alone)[0].seed, calls[i])]
        a.step(alone, logits[i * BL : (i + 1) * BL].clone(), one)
        assert fb.input_ids.view(3, BL)[i].tolist() == alone.input_ids.tolist()
        assert states[i].call == calls[i] + 1


def test_the_lead_is_read_at_the_first_call_and_kept() -> None:
    a = algo("unmask-interleave", planner="interleave(k=2)")  # residues 0 then 1 of the offsets planned
    fb = batch([[6, M, M, M], [M] * BL], [4, 0])
    states = a.init_step_state(fb)
    logits = peaked(2, [[0, 1, 2, 3], [1, 2, 3, 4]])
    a.step(fb, logits.clone(), states)
    assert [(s.call, s.lead) for s in states] == [(1, 1), (1, 0)]
    # the 3 offsets after the prompt's token plan as a block of 3: {0, 2} shifted by 1; the whole block {0, 2}
    assert fb.input_ids.view(2, BL).tolist() == [[6, 1, M, 3], [1, M, 3, M]]
    a.step(fb, logits.clone(), states)  # offsets 0..1 are filled now, but the lead stays the block's own
    assert [(s.call, s.lead) for s in states] == [(2, 1), (2, 0)]
    assert fb.input_ids.view(2, BL).tolist() == [[6, 1, 2, 3], [1, 2, 3, 4]]


def test_step_takes_the_logits_or_sglang_mains_logits_output() -> None:
    from sglang.srt.layers.logits_processor import LogitsProcessorOutput

    logits = torch.randn(2 * BL, V, generator=torch.Generator().manual_seed(2))
    results = []
    for wrap in (lambda t: t, lambda t: LogitsProcessorOutput(next_token_logits=None, full_logits=t)):
        a, fb = algo("unmask-eb", temperature=1.0), batch([[M] * BL, [3, M, M, M]], [0, 4])
        states = a.init_step_state(fb)
        a.step(fb, wrap(logits.clone()), states)
        results.append(fb.input_ids.tolist())
    assert results[0] == results[1] and results[0] != [M] * BL + [3, M, M, M]
    a, fb = algo(), batch([[M] * BL])
    with pytest.raises(TypeError, match="full_logits is NoneType"):
        a.step(fb, LogitsProcessorOutput(next_token_logits=None), a.init_step_state(fb))


def test_every_rank_draws_the_same_numbers() -> None:
    """Two ranks: separate instances, different global RNG states; sampling comes out the same."""
    logits = torch.randn(2 * BL, V, generator=torch.Generator().manual_seed(1))
    results = []
    for rank_seed in (0, 12345):
        torch.manual_seed(rank_seed)
        a, fb = algo("unmask-eb", temperature=1.0, seed=7), batch([[M] * BL, [M] * BL], [0, 4], rids=["x", "y"])
        states = a.init_step_state(fb)
        while not all(a.step(fb, logits.clone(), states)):
            pass
        results.append(fb.input_ids.tolist())
    assert results[0] == results[1]


def test_request_seeds_come_from_the_request() -> None:
    fb = batch([[M] * BL] * 3, rids=["a", "b", "a"])
    seeds = request_seeds(fb, 7)
    assert seeds == [derive_seed(7, rid_key("a")), derive_seed(7, rid_key("b")), derive_seed(7, rid_key("a"))]
    assert seeds[0] != seeds[1] and request_seeds(fb, 8)[0] != seeds[0]
    fb.sampling_info.sampling_seed = torch.tensor([3, -1, 2**63 - 1])  # SGLang's int64 sampling seeds
    assert request_seeds(fb, 7) == [3, 2**64 - 1, 2**63 - 1]
    fb.sampling_info, fb.rids = None, None
    with pytest.raises(RuntimeError, match="rids"):
        request_seeds(fb, 7)


def test_nan_logits_raise() -> None:
    a, fb = algo(), batch([[M] * BL])
    logits = torch.zeros(BL, V)
    logits[1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        a.step(fb, logits, a.init_step_state(fb))
