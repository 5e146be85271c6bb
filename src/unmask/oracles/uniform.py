"""Exact posteriors of a chain oracle given a uniform-state noisy canvas.

Uniform-state discrete diffusion (Austin et al. 2021, "Structured denoising
diffusion models in discrete state-spaces", D3PM *uniform*; Sahoo et al. 2025,
"The Diffusion Duality") corrupts each token independently: the observed
token ``y_i`` equals the true token with probability ``(1 - eps_i) + eps_i / V``
and is any other given token with probability ``eps_i / V``, i.e.

    p(y_i | x_i) = (1 - eps_i) [y_i = x_i] + eps_i / V.

``eps_i = 0`` is a clean position (prompt, or a commit the denoiser is told
about), ``eps_i = 1`` a freshly re-drawn one (uniform whatever ``x_i``: no
information), values in between a shared noise level. For a chain oracle
(Markov chain or HMM over hidden states ``s``, tokens emitted by
``state_emit[s, v]``) the observation of a state is the noise-mixed emission

    e_i(s) = sum_v state_emit[s, v] p(y_i | v) = (1 - eps_i) state_emit[s, y_i] + eps_i / V,

so the exact posterior of every position given the whole canvas is a scaled
forward-backward (Rabiner 1989, Sec. III.A) with that emission, followed by
the per-position token step p(x_i = v | y) ∝ sum_s a_i(s) b_i(s) state_emit[s, v] p(y_i | v),
with ``a_i`` the forward message *before* position ``i``'s observation and
``b_i`` the backward message. :meth:`UniformOracle.blind` is the exact
posterior of a denoiser that is told no noise level (DiffusionGemma's decoder
sees token ids and its own previous prediction, neither a committed flag nor
a time): a mixture over a prior on a shared level,
p(x_i | y) = sum_t w_t(y) p(x_i | y, eps_t), w_t(y) ∝ prior_t p(y | eps_t).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .markov import DTYPE, ChainOracle


def _as_eps(eps: float | Tensor, shape: tuple[int, int]) -> Tensor:
    """``eps`` (a float, ``[N]`` per canvas or ``[N, T]`` per position) as ``[N, T]`` float64, checked."""
    if isinstance(eps, bool) or not isinstance(eps, (int, float, Tensor)):
        raise ValueError(f"eps must be a float or a tensor of noise levels in [0, 1], got {type(eps).__name__}")
    e = torch.as_tensor(eps, dtype=DTYPE).cpu()
    if e.dim() == 1:
        if e.shape[0] != shape[0]:
            raise ValueError(f"eps of shape [N] must have N = {shape[0]} (one level per canvas), got {e.shape[0]}")
        e = e.unsqueeze(-1)
    elif e.dim() > 2 or (e.dim() == 2 and tuple(e.shape) != shape):
        raise ValueError(f"eps must be a float, [N] or [N, T] = {list(shape)}, got shape {list(e.shape)}")
    if torch.isnan(e).any() or (e < 0).any() or (e > 1).any():
        raise ValueError("eps must hold noise levels in [0, 1]")
    return e.expand(shape)


class UniformOracle:
    """Exact denoiser of a chain oracle for uniform-state noise: log p(x_i = v | noisy canvas).

    ``chain`` is any :class:`~unmask.oracles.ChainOracle` (order-1 or order-2
    Markov chain, HMM); tokens are ``0 .. V-1`` (no mask id: a uniform-state
    canvas holds real tokens everywhere). Calls are batched over canvases,
    CPU, float64.
    """

    def __init__(self, chain: ChainOracle) -> None:
        if not isinstance(chain, ChainOracle):
            raise ValueError(f"chain must be a ChainOracle (MarkovOracle, HMMOracle), got {type(chain).__name__}")
        self.chain = chain
        self.num_tokens = chain.num_tokens

    def __repr__(self) -> str:
        return f"UniformOracle({self.chain!r})"

    def _check_tokens(self, tokens: Tensor) -> Tensor:
        if not isinstance(tokens, Tensor) or tokens.dim() != 2:
            raise ValueError(f"tokens must be a [N, T] tensor of token ids, got {getattr(tokens, 'shape', tokens)!r}")
        ids = tokens.long().cpu()
        if ((ids < 0) | (ids >= self.num_tokens)).any():
            raise ValueError(f"tokens must hold token ids in [0, {self.num_tokens}) (no mask id in a uniform-state canvas)")
        return ids

    def posterior(self, tokens: Tensor, eps: float | Tensor) -> tuple[Tensor, Tensor]:
        """Token posteriors ``[N, T, V]`` and ``log p(y | eps) [N]`` of canvases ``tokens [N, T]``.

        ``eps``: one level for all (float), one per canvas (``[N]``) or one per
        position (``[N, T]``), each in ``[0, 1]``.
        """
        ids = self._check_tokens(tokens)
        n, t_len = ids.shape
        e = _as_eps(eps, (n, t_len))
        v, ch = self.num_tokens, self.chain
        if t_len == 0:
            return torch.zeros(n, 0, v, dtype=DTYPE), torch.zeros(n, dtype=DTYPE)
        ev = (1 - e).unsqueeze(-1) * ch.state_emit.T[ids] + (e / v).unsqueeze(-1)  # [N, T, S]: e_i(s)
        s_len = ev.shape[-1]
        prior = torch.empty(n, t_len, s_len, dtype=DTYPE)  # a_i: forward message before observation i
        logz = torch.zeros(n, dtype=DTYPE)
        a = ch.initial.unsqueeze(0).expand(n, -1)
        for t in range(t_len):
            if t:
                a = ch.forward_step(a)
            prior[:, t] = a
            a = a * ev[:, t]
            c = a.sum(-1, keepdim=True)
            logz += c.squeeze(-1).log()
            a = a / c
        w = torch.empty_like(prior)  # a_i(s) b_i(s)
        b = torch.ones(n, s_len, dtype=DTYPE)
        for t in range(t_len - 1, -1, -1):
            if t < t_len - 1:
                b = ch.backward_step(b * ev[:, t + 1])
                b = b / b.sum(-1, keepdim=True)
            w[:, t] = prior[:, t] * b
        noise = (e / v).unsqueeze(-1).expand(n, t_len, v).clone()  # p(y_i | x_i = v)
        noise.scatter_add_(-1, ids.unsqueeze(-1), (1 - e).unsqueeze(-1))
        post = (w @ ch.state_emit) * noise  # [N, T, V]
        return post / post.sum(-1, keepdim=True), logz

    def __call__(self, tokens: Tensor, eps: float | Tensor) -> Tensor:
        """Log-posterior logits ``[N, T, V]`` (``-inf`` where the posterior is 0, e.g. clean positions)."""
        return self.posterior(tokens, eps)[0].log()

    def blind(self, tokens: Tensor, levels: Tensor, weights: Tensor | None = None, clean: Tensor | None = None) -> Tensor:
        """Log posteriors ``[N, T, V]`` of a denoiser told no noise level: a mixture over a shared level.

        ``levels [K]`` are the noise levels of the prior (in ``[0, 1]``),
        ``weights [K]`` their prior probabilities (uniform if None); ``clean
        [N, T]`` bool marks positions known clean whatever the level (a prompt),
        None for none. Exact for a denoiser trained on this prior over levels.
        """
        ids = self._check_tokens(tokens)
        n, t_len = ids.shape
        lv = torch.as_tensor(levels, dtype=DTYPE).reshape(-1)
        if lv.numel() == 0 or torch.isnan(lv).any() or (lv < 0).any() or (lv > 1).any():
            raise ValueError("levels must be a non-empty list of noise levels in [0, 1]")
        k = lv.numel()
        wt = torch.full((k,), 1.0 / k, dtype=DTYPE) if weights is None else torch.as_tensor(weights, dtype=DTYPE).reshape(-1)
        if wt.numel() != k or torch.isnan(wt).any() or (wt < 0).any() or float(wt.sum()) <= 0:
            raise ValueError(f"weights must be {k} non-negative prior probabilities with a positive sum, one per level")
        cl = torch.zeros(n, t_len, dtype=torch.bool) if clean is None else clean.bool().cpu()
        if tuple(cl.shape) != (n, t_len):
            raise ValueError(f"clean must be a [N, T] = {[n, t_len]} bool mask, got shape {list(cl.shape)}")
        eps = torch.where(cl.unsqueeze(0), torch.zeros((), dtype=DTYPE), lv.view(k, 1, 1)).reshape(k * n, t_len)
        post, logz = self.posterior(ids.repeat(k, 1), eps)
        logw = wt.log().view(k, 1) + logz.view(k, n)  # log prior_t + log p(y | eps_t)
        mix = torch.softmax(logw, 0)  # [K, N]: p(level t | y)
        return (mix.view(k, n, 1, 1) * post.view(k, n, t_len, -1)).sum(0).log()
