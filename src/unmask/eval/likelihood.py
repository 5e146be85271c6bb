"""Log-likelihood of a continuation under a masked diffusion model: LLaDA's ELBO estimator and greedy check.

An MDLM gives no exact ``log p(continuation | context)``; it gives the ELBO
(Nie et al. 2025, Eq. 6 / Appendix B.6):

    log p(c | x) >= E_{l ~ U{1..L}} E_{M ~ l random positions of c}
                     [ (L / l) * sum_{i in M} log p(c_i | x, c with M masked) ]

:func:`mc_loglikelihood` averages ``mc_num`` draws per request; the context is
never masked; draws of many requests share batched denoiser calls. The masked
counts ``l`` of a request's draws are stratified by default (draw k takes its
``l`` from the k-th of ``mc_num`` equal slices of the range, as LLaDA's
reference ``get_log_likelihood`` spreads them over its batch): still unbiased,
with less variance than independent draws. Every request's draws come from its
own generator, seeded by the request's tokens and ``seed``, so the estimate
does not depend on batching or data-parallel sharding.

Block-diffusion models (SDAR, Fast-dLLM v2, LLaDA2: block-causal attention,
blocks of ``m`` positions counted from each row's first token) factor the
likelihood over their blocks, ``log p(c | x) = sum_b log p(c_b | x, c_<b)``,
and were trained on each block's masked-diffusion ELBO with the blocks before
it clean (Arriola et al. 2025, BD3-LM). Masking positions anywhere in ``c`` at
once would condition later blocks on a corrupted past the model never saw, so
for them each (context, continuation) pair is cut at the model's block
boundaries (:func:`block_pairs`): block b's continuation tokens are scored
with ``x`` and ``c_<b`` clean as context (the context's tail in the first block
stays, as in generation), by the estimator above, and the blocks' ELBOs are
summed; the greedy check is likewise block by block (each block's greedy
completion given the clean blocks before it: all of them greedy iff
generating block by block gives ``c``).

``is_greedy`` (:func:`greedy_check`), two modes:

- ``"reveal"`` (default, as the LLaDA/DUS reference harness): start from the
  fully masked continuation and reveal, one call at a time, the most confident
  masked position with its argmax token; greedy iff every revealed token
  matches. Costs up to L calls per request.
- ``"argmax"``: one call on the fully masked continuation; greedy iff the argmax
  at every continuation position is the continuation token.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

import torch
from torch import Tensor

from ..canvas import Canvas
from ..denoiser import Denoiser, TokenSpec
from ..guidance import Guided

Pair = tuple[Sequence[int], Sequence[int]]  # (context ids, continuation ids)
T = TypeVar("T")


def _request_seed(pair: Pair, seed: int) -> int:
    digest = hashlib.sha256(repr((list(pair[0]), list(pair[1]), seed)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def mask_counts(length: int, mc_num: int, generator: torch.Generator, stratified: bool = True) -> Tensor:
    """Masked counts ``l`` in ``1..length`` ``[mc_num]`` for the ``mc_num`` draws of one request.

    Independent: ``l_k ~ U{1..L}``. Stratified: ``u_k`` uniform on the k-th of
    ``mc_num`` equal slices of ``[0, 1)`` and ``l_k = floor(u_k L) + 1``. The
    slices together make up ``[0, 1)``, so the mean over k of ``E f(l_k)`` is
    ``E_{l ~ U{1..L}} f(l)`` (unbiased for any ``mc_num`` and ``L``), and the
    variance of the mean is the within-slice variance only.
    """
    if not stratified:
        return torch.randint(1, length + 1, (mc_num,), generator=generator)
    u = (torch.arange(mc_num, dtype=torch.float64) + torch.rand(mc_num, generator=generator, dtype=torch.float64)) / mc_num
    return (u * length).floor().long().clamp_(max=length - 1) + 1


def draw_masks(
    length: int, mc_num: int, generator: torch.Generator, stratified: bool = True
) -> tuple[Tensor, Tensor]:
    """``mc_num`` masks ``[mc_num, length]`` over a continuation, and the masked counts ``l`` ``[mc_num]``."""
    counts = mask_counts(length, mc_num, generator, stratified)
    order = torch.rand(mc_num, length, generator=generator).argsort(-1)  # a random permutation per draw
    ranks = order.argsort(-1)
    return ranks < counts.unsqueeze(-1), counts


def _draws(
    pairs: Sequence[Pair], order: list[int], mc_num: int, seed: int, mask_id: int, stratified: bool
) -> Iterator[tuple[int, list[int], Tensor, int]]:
    """Rows ``(pair index, noisy canvas, continuation mask, l)``, made lazily, pair by pair."""
    for p in order:
        ctx, cont = pairs[p]
        gen = torch.Generator().manual_seed(_request_seed((ctx, cont), seed))
        masks, counts = draw_masks(len(cont), mc_num, gen, stratified)
        for d in range(mc_num):
            noisy = [mask_id if m else t for t, m in zip(cont, masks[d].tolist(), strict=True)]
            yield p, list(ctx) + noisy, masks[d], int(counts[d])


def _chunks(rows: Iterable[T], size: int) -> Iterator[list[T]]:
    chunk: list[T] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _canvas(rows: list[list[int]], spec: TokenSpec, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Left-padded ``[N, T]`` ids, attention mask and position ids (the loop's :class:`Canvas`, nothing generated)."""
    c = Canvas.build(rows, 0, spec, device)
    return c.ids, c.attention_mask, c.positions


def _call(denoiser: Denoiser, ids: Tensor, att: Tensor, pos: Tensor, prompt: Tensor, cfg_scale: float) -> Tensor:
    model = Guided(denoiser, prompt, cfg_scale) if cfg_scale > 0 else denoiser
    return model(ids, att, pos)


def block_pairs(pairs: Sequence[Pair], block: int) -> tuple[list[Pair], list[int]]:
    """Each pair cut at the model's block boundaries: ``(x + c_<b, c_b)`` per block b holding continuation tokens
    (positions from the row's first token, blocks of ``block``), and the index of the pair each piece belongs to."""
    out: list[Pair] = []
    owner: list[int] = []
    for p, (ctx, cont) in enumerate(pairs):
        row, start = list(ctx) + list(cont), len(ctx)
        while start < len(row):
            end = min((start // block + 1) * block, len(row))
            out.append((row[:start], row[start:end]))
            owner.append(p)
            start = end
    return out, owner


def _block_causal(denoiser: Denoiser, cfg_scale: float) -> int | None:
    """The model's attention block (None: bidirectional); guidance is refused with it (``ValueError``)."""
    block = getattr(denoiser, "attention_block", None)
    if block is not None and cfg_scale > 0:
        raise ValueError(f"cfg_scale={cfg_scale} is not supported by the block-diffusion likelihood (its pieces take "
                         "earlier continuation blocks as context, which guidance would mask as prompt); use cfg_scale=0")
    return block


@torch.no_grad()
def mc_loglikelihood(
    denoiser: Denoiser,
    pairs: Sequence[Pair],
    mc_num: int,
    batch_size: int,
    seed: int = 0,
    cfg_scale: float = 0.0,
    on_batch: Callable[[int], None] | None = None,
    stratified: bool = True,
) -> tuple[list[float], int]:
    """ELBO estimate of ``log p(continuation | context)`` per pair, and the number of batched calls.

    ``batch_size`` is the number of draws (rows) per denoiser call; ``on_batch``
    is called with the number of rows after each call (for progress bars);
    ``stratified``: the masked counts of a request's draws are stratified
    (:func:`mask_counts`), as in LLaDA's ``get_log_likelihood``, instead of independent.
    Block-causal models: the sum of the blocks' ELBOs (module docstring).
    """
    for p, (_, cont) in enumerate(pairs):
        if len(cont) == 0:
            raise ValueError(f"continuation {p} is empty: nothing to score")
    block = _block_causal(denoiser, cfg_scale)
    if block is not None:
        pieces, owner = block_pairs(pairs, block)
        lls, calls = _mc_loglikelihood(denoiser, pieces, mc_num, batch_size, seed, cfg_scale, on_batch, stratified)
        sums = [0.0] * len(pairs)
        for p, ll in zip(owner, lls, strict=True):
            sums[p] += ll
        return sums, calls
    return _mc_loglikelihood(denoiser, pairs, mc_num, batch_size, seed, cfg_scale, on_batch, stratified)


def _mc_loglikelihood(denoiser: Denoiser, pairs: Sequence[Pair], mc_num: int, batch_size: int, seed: int,
                      cfg_scale: float, on_batch: Callable[[int], None] | None, stratified: bool) -> tuple[list[float], int]:
    spec, device = denoiser.spec, denoiser.device
    totals = torch.zeros(len(pairs), dtype=torch.float32, device=device)  # summed on device: one sync at the end
    calls = 0
    order = sorted(range(len(pairs)), key=lambda p: -(len(pairs[p][0]) + len(pairs[p][1])))  # similar lengths batch
    for chunk in _chunks(_draws(pairs, order, mc_num, seed, spec.mask_id, stratified), batch_size):
        ids, att, pos = _canvas([c for _, c, _, _ in chunk], spec, device)
        width = ids.shape[1]
        prompt = att.clone()
        for i, (_, _, mask, _) in enumerate(chunk):
            prompt[i, width - mask.numel() :] = False  # the continuation is not prompt (for guidance)
        logits = _call(denoiser, ids, att, pos, prompt, cfg_scale)  # [N, T, V]
        calls += 1
        for i, (p, _, mask, count) in enumerate(chunk):  # row by row: at most L x V floats at a time
            cols = torch.nonzero(mask).squeeze(-1)  # masked continuation offsets [l]
            target = torch.tensor(pairs[p][1], dtype=torch.long)[cols].to(logits.device)
            logp = torch.log_softmax(logits[i, (cols + width - mask.numel()).to(logits.device)].float(), dim=-1)
            totals[p] += logp.gather(-1, target.unsqueeze(-1)).sum() * (mask.numel() / count)
        if on_batch is not None:
            on_batch(len(chunk))
    return (totals / mc_num).tolist(), calls


@torch.no_grad()
def greedy_check(
    denoiser: Denoiser, pairs: Sequence[Pair], mode: str, batch_size: int, cfg_scale: float = 0.0
) -> tuple[list[bool], list[int], int]:
    """Whether each continuation is the greedy completion; calls per pair; batched calls made (block-causal
    models: block by block, module docstring)."""
    if mode == "none":
        return [False] * len(pairs), [0] * len(pairs), 0
    block = _block_causal(denoiser, cfg_scale)
    if block is not None:
        pieces, owner = block_pairs(pairs, block)
        ok, piece_nfe, calls = _greedy_check(denoiser, pieces, mode, batch_size, cfg_scale)
        greedy, nfe = [True] * len(pairs), [0] * len(pairs)
        for p, g, n in zip(owner, ok, piece_nfe, strict=True):
            greedy[p] &= g
            nfe[p] += n
        return greedy, nfe, calls
    return _greedy_check(denoiser, pairs, mode, batch_size, cfg_scale)


def _greedy_check(denoiser: Denoiser, pairs: Sequence[Pair], mode: str, batch_size: int,
                  cfg_scale: float) -> tuple[list[bool], list[int], int]:
    spec, device = denoiser.spec, denoiser.device
    greedy = [True] * len(pairs)
    nfe = [0] * len(pairs)
    calls = 0
    for start in range(0, len(pairs), batch_size):
        idx = list(range(start, min(start + batch_size, len(pairs))))
        conts = [list(pairs[p][1]) for p in idx]
        ids, att, pos = _canvas([list(pairs[p][0]) + [spec.mask_id] * len(c) for p, c in zip(idx, conts)], spec, device)
        width = ids.shape[1]
        target = torch.full_like(ids, -1)
        for i, c in enumerate(conts):
            target[i, width - len(c) :] = torch.tensor(c, dtype=torch.long)
        prompt = att & (target < 0)
        alive = torch.ones(len(idx), dtype=torch.bool, device=device)  # rows still being checked
        while bool(alive.any()):
            masked = (ids == spec.mask_id) & (target >= 0) & alive.unsqueeze(-1)  # [N, T]
            logits = _call(denoiser, ids, att, pos, prompt, cfg_scale).float()  # [N, T, V]
            calls += 1
            for i in torch.nonzero(alive).squeeze(-1).tolist():
                nfe[idx[i]] += 1
            logits[..., spec.mask_id] = float("-inf")
            probs, argmax = logits.softmax(-1).max(-1)  # [N, T]
            if mode == "argmax":
                ok = ((argmax == target) | (target < 0)).all(-1)
                for i in torch.nonzero(alive).squeeze(-1).tolist():
                    greedy[idx[i]] = bool(ok[i])
                break
            best = torch.where(masked, probs, -1.0).argmax(-1)  # [N]: most confident masked position
            rows = torch.arange(len(idx), device=device)
            wrong = alive & (argmax[rows, best] != target[rows, best])
            for i in torch.nonzero(wrong).squeeze(-1).tolist():
                greedy[idx[i]] = False
            ids[rows[alive], best[alive]] = argmax[rows[alive], best[alive]]
            alive &= ~wrong & ((ids == spec.mask_id) & (target >= 0)).any(-1)
    return greedy, nfe, calls
