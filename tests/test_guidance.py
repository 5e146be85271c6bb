"""Classifier-free guidance with -inf logits: impossible tokens stay impossible, nothing becomes NaN."""

import torch

from unmask import Denoiser, GenerationConfig, TokenSpec, generate
from unmask.guidance import guide

INF = float("-inf")


def test_guide_keeps_minus_inf_and_never_gives_nan():
    cond = torch.tensor([[[0.0, INF, 1.0, 2.0, INF]]])
    uncond = torch.tensor([[[-1.0, 0.0, INF, 1.0, INF]]])
    g = guide(cond, uncond, 1.5)
    # finite pair: the formula; c = -inf: -inf; u = -inf only: the conditional logit; both -inf: -inf
    assert g.tolist() == [[[-1.0 + 2.5 * 1.0, INF, 1.0, 1.0 + 2.5 * 1.0, INF]]]
    assert not bool(g.isnan().any())
    # the formula itself gives NaN where u = -inf, which is what guide() must avoid
    assert bool((uncond + 2.5 * (cond - uncond)).isnan().any())


def test_guide_takes_a_scale_per_row():
    cond = torch.tensor([[[0.0, 1.0, INF]], [[0.0, 1.0, 3.0]]])
    uncond = torch.tensor([[[0.0, 0.0, 0.0]], [[INF, 0.5, 0.0]]])
    scale = torch.tensor([0.0, 2.0]).view(2, 1, 1)
    g = guide(cond, uncond, scale)
    assert g.tolist() == [[[0.0, 1.0, INF]], [[0.0, 0.5 + 3.0 * 0.5, 9.0]]]
    assert torch.equal(guide(cond[1:], uncond[1:], 2.0), g[1:])


class PromptBlind(Denoiser):
    """Token 3 is impossible without the prompt (its unconditional logit is -inf) and likely with it."""

    def __init__(self) -> None:
        self.spec = TokenSpec(mask_id=7, eos_ids=(6,), pad_id=0, vocab_size=8)

    def __call__(self, input_ids, attention_mask, position_ids, window=None):
        n, t = input_ids.shape
        z = torch.zeros(n, t, 8)
        z[..., 1] = 1.0
        z[..., 3] = torch.where(input_ids[:, :1] == self.spec.mask_id, INF, 2.0).expand(n, t)  # prompt masked: -inf
        lo, hi = window or (0, t)
        return z[:, lo:hi]


def test_generate_with_guidance_and_a_token_impossible_only_without_the_prompt():
    """u + (s + 1)(c - u) is NaN for token 3 and generation used to stop with a NaN error; now it takes c."""
    for planner in ("topk(steps=4)", "dilated"):
        cfg = GenerationConfig(gen_length=4, block_length=4, planner=planner, cfg_scale=1.0, early_exit=False)
        out = generate(PromptBlind(), [[1, 2]], cfg)
        # guided logits: token 1 -> 1 + 2 * (1 - 1) = 1, token 3 -> its conditional logit 2, the others 0
        assert out.generated.tolist() == [[3, 3, 3, 3]]
        sampled = generate(PromptBlind(), [[1, 2]], GenerationConfig(
            gen_length=4, block_length=4, planner=planner, cfg_scale=1.0, sampling={"temperature": 1.0}, seed=3))
        assert sampled.generated.shape == (1, 4) and bool(torch.isfinite(sampled.trace.token_logq).all())
