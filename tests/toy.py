"""A tiny bidirectional toy denoiser for loop tests: padding-invariant, counts its calls."""

from __future__ import annotations

import torch
from torch import Tensor

from unmask import Denoiser, TokenSpec
from unmask.denoiser import select_window


class ToyDenoiser(Denoiser):
    """logits[i] = E[x_i] + sum_j decay^|pos_i - pos_j| F[x_j] over real (unpadded) positions j.

    Depends only on real tokens and their positions, so a left-padded row gives
    the same logits as the row alone. ``vocab - 1`` is the mask id and
    ``vocab - 2`` the EOS id.
    """

    def __init__(self, vocab: int = 24, seed: int = 0, max_length: int | None = None, eos_bias: float = 0.0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.spec = TokenSpec(mask_id=vocab - 1, eos_ids=(vocab - 2,), pad_id=0, vocab_size=vocab, max_length=max_length)
        self.E = torch.randn(vocab, vocab, generator=g, dtype=torch.float64)
        self.F = 0.5 * torch.randn(vocab, vocab, generator=g, dtype=torch.float64)
        self.E[:, vocab - 2] += eos_bias
        self.calls = 0

    def __call__(self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, window=None) -> Tensor:
        self.calls += 1
        rel = (position_ids[:, :, None] - position_ids[:, None, :]).abs().double()  # [N, T, T]
        w = 0.7**rel * attention_mask[:, None, :].double()  # padded keys contribute nothing
        return select_window((self.E[input_ids] + w @ self.F[input_ids]).float(), window)  # [N, T, V]
