"""Label-free scores of a decode against the one-token-per-call reference, from the model alone.

- :func:`agreement`: the share of rows whose output (up to its first EOS)
  equals the reference's, for greedy decoding.
- :func:`chain_loglik`: the model's own log-likelihood of an output by the
  chain rule, left to right (call t scores position t with positions < t
  revealed and the rest masked): exact ``log p(x)`` on an oracle, and for any
  MDLM the likelihood of the left-to-right one-token-per-call sampler.
- :func:`self_kl`: per-token ``(sum log q(revealed tokens) - chain_loglik) / G``,
  the path KL measured against the model itself, exact in expectation for
  planners whose choice depends on the state alone (see
  :func:`unmask.oracles.path_kl_status`).
- :func:`sample_js`: mean Jensen-Shannon divergence between two sets of
  samples' pairwise marginals (pairs up to ``max_distance`` apart), the
  distribution-level agreement used when decoding samples (temperature > 0).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from ..canvas import Canvas
from ..denoiser import Denoiser
from ..oracles.pairs import pair_js, sample_pair_marginals
from ..text import first_eos


def truncate_at_eos(generated: Tensor, eos_ids: Sequence[int]) -> list[tuple[int, ...]]:
    """Each row of ``generated [N, G]`` up to and including its first EOS id."""
    eos, out = set(eos_ids), []
    for row in generated.tolist():
        end = first_eos(row, eos)
        out.append(tuple(row if end is None else row[: end + 1]))
    return out


def agreement(generated: Tensor, reference: Tensor, eos_ids: Sequence[int]) -> Tensor:
    """``[N]`` bool: row i's output equals the reference's, both cut after their first EOS."""
    a, b = truncate_at_eos(generated, eos_ids), truncate_at_eos(reference, eos_ids)
    return torch.tensor([x == y for x, y in zip(a, b, strict=True)], dtype=torch.bool)


@torch.no_grad()
def chain_loglik(
    denoiser: Denoiser, prompts: Sequence[Sequence[int]], outputs: Tensor, batch_size: int = 256,
    advance: Callable[[int], None] | None = None,
) -> Tensor:
    """``[N]`` float64: ``sum_t log p(x_t | prompt, x_<t, masks after)`` for each row of ``outputs [N, G]``.

    G denoiser calls per chunk of ``batch_size`` rows; ``advance(calls)`` is
    called after each chunk (for progress bars).
    """
    spec, device = denoiser.spec, denoiser.device
    n, g = outputs.shape
    if len(prompts) != n:
        raise ValueError(f"prompts must hold one prompt per output row ({n}), got {len(prompts)}")
    total = torch.zeros(n, dtype=torch.float64)
    outs = outputs.long().cpu()
    for start in range(0, n, batch_size):
        rows = list(range(start, min(n, start + batch_size)))
        c = Canvas.build([prompts[r] for r in rows], g, spec, device)  # generated columns masked
        ids, target = c.ids.clone(), outs[rows].to(device)  # [n_c, W + G], [n_c, G]
        for t in range(g):
            col = c.width + t
            logits = denoiser(ids, c.attention_mask, c.positions, window=(col, col + 1))[:, 0].float()  # [n_c, V]
            logits[:, spec.mask_id] = float("-inf")
            logp = torch.log_softmax(logits, -1).gather(-1, target[:, t : t + 1]).squeeze(-1)
            total[rows] += logp.double().cpu()
            ids[:, col] = target[:, t]
        if advance is not None:
            advance(g)
    return total


def self_kl(token_logq: Tensor, loglik: Tensor) -> Tensor:
    """``[N]`` per-token path KL against the model: ``(sum_i logq_i - loglik) / G``."""
    return (token_logq.double().cpu().sum(-1) - loglik) / token_logq.shape[-1]


def sample_js(a: Tensor, b: Tensor, num_tokens: int, max_distance: int = 8) -> float:
    """Mean Jensen-Shannon divergence (nats) between the pairwise marginals of samples ``a`` and ``b`` ``[N, G]``."""
    return pair_js(sample_pair_marginals(a, num_tokens, max_distance), sample_pair_marginals(b, num_tokens, max_distance))
