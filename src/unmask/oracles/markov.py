"""Exact oracle denoisers on Markov chains, and the forward-backward engine they share.

A chain oracle is a sequence model whose posterior marginals given any pattern
of observed and masked positions are computed exactly by forward-backward
(Rabiner 1989, "A tutorial on hidden Markov models", Sec. III.A, with
per-step scaling), so a sampler's error can be measured against the truth.

Token ids of every oracle here: ``0 .. V-1`` are the real tokens, ``V`` is the
mask id and ``V + 1`` a dedicated EOS id the chain never emits (unless
``eos_id`` names a real token), so ``spec.vocab_size = V + 2`` and the mask and
EOS columns of the logits are ``-inf``. With the default EOS, generation with
``early_exit`` never stops early, which is right for an oracle.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..denoiser import Denoiser, TokenSpec, Window, select_window

DTYPE = torch.float64
FLOOR = 1e-12  # smallest probability of any parameter, so every sequence has p > 0


def dirichlet(shape: tuple[int, ...], concentration: float, generator: torch.Generator) -> Tensor:
    """Rows drawn from a symmetric Dirichlet(``concentration``) over the last dim, floored at ``FLOOR``."""
    gam = torch._standard_gamma(torch.full(shape, float(concentration), dtype=DTYPE), generator=generator)
    p = gam / gam.sum(-1, keepdim=True)
    p = torch.nan_to_num(p, nan=1.0 / shape[-1]).clamp_min(FLOOR)  # all-zero draws: uniform
    return p / p.sum(-1, keepdim=True)


def check_int(name: str, value: object, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


MAX_TABLE = 2**26  # entries of an oracle's largest dense float64 table (512 MiB)


def check_table(what: str, entries: int, largest: str) -> None:
    """Refuse an oracle whose exact tables would not fit in memory, before allocating them."""
    if entries > MAX_TABLE:
        raise ValueError(f"{what}: its exact tables need {entries:.3g} float64 entries ({8 * entries / 2**30:.3g} GiB); "
                         f"the exact oracles hold at most 2^26 ({largest})")


def check_concentration(value: object) -> None:
    if not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise ValueError(f"concentration must be a finite number > 0, got {value!r}")


class ChainOracle(Denoiser):
    """Base of the exact oracles: a first-order chain over ``S`` hidden states that emit tokens.

    Subclasses set ``initial [S]`` (state distribution at the first real
    position), ``state_emit [S, V]`` (p(token | state); one-hot for plain Markov
    chains) and implement the two message steps. ``__call__`` implements the
    :class:`~unmask.denoiser.Denoiser` protocol: log p(x_i = v | observed tokens)
    for every position, exactly. Runs on CPU in float64; keeps the last call's
    forward messages to reuse their unchanged prefix (see ``_forward``).
    """

    spec: TokenSpec
    num_tokens: int  # V, the real tokens
    initial: Tensor  # [S]
    state_emit: Tensor  # [S, V]

    def _setup_spec(self, vocab_size: int, eos_id: int | None) -> None:
        check_int("vocab_size", vocab_size, 2)
        if eos_id is not None and (not isinstance(eos_id, int) or not 0 <= eos_id < vocab_size):
            raise ValueError(f"eos_id must be None (a dedicated id) or a token id in [0, {vocab_size}), got {eos_id!r}")
        self.num_tokens = vocab_size
        eos = vocab_size + 1 if eos_id is None else eos_id
        self.spec = TokenSpec(mask_id=vocab_size, eos_ids=(eos,), pad_id=0, vocab_size=vocab_size + 2)

    # --- message steps (subclasses) ---------------------------------------------------------
    def forward_step(self, alpha: Tensor) -> Tensor:
        """``[N, S] -> [N, S]``: sum_s alpha(s) A(s, s')."""
        raise NotImplementedError

    def backward_step(self, beta: Tensor) -> Tensor:
        """``[N, S] -> [N, S]``: sum_s' A(s, s') beta(s')."""
        raise NotImplementedError

    # --- exact inference ----------------------------------------------------------------------
    def _evidence(self, tokens: Tensor, observed: Tensor) -> Tensor:
        """``[N, T, S]``: p(observed token | state), 1 at masked positions."""
        lik = self.state_emit.T[tokens.clamp(0, self.num_tokens - 1)]  # [N, T, S]
        return torch.where(observed.unsqueeze(-1), lik, torch.ones((), dtype=DTYPE))

    def _emit_powers(self, k: int) -> Tensor:
        """``[k, V, S]``: entry ``[j, v, s]`` = p(token v at j + 1 steps ahead | state s now), cached."""
        powers = getattr(self, "_powers", None)
        if powers is None or powers.shape[0] < k:
            m, rows = self.state_emit.T.contiguous(), []  # [V, S]
            for _ in range(k):
                m = self.backward_step(m)  # A^(j+1) state_emit, transposed
                rows.append(m)
            self._powers = powers = torch.stack(rows)
        return powers[:k]

    def _forward(self, tokens: Tensor, observed: Tensor, stop: int) -> tuple[Tensor, Tensor]:
        """Normalised forward messages ``[N, stop, S]`` and log normalisers ``[N, stop]``.

        The messages of the longest column prefix whose observations equal the
        previous call's are reused (exact: they depend on nothing else), so a
        generation loop only recomputes from the block it is working on.
        """
        n, s_len = tokens.shape[0], self.initial.shape[0]
        alpha = torch.empty(n, stop, s_len, dtype=DTYPE)
        logc = torch.empty(n, stop, dtype=DTYPE)
        start, cache = 0, getattr(self, "_fwd_cache", None)
        if cache is not None and cache[0].shape[0] == n:
            c_tok, c_obs, c_alpha, c_logc = cache
            m = min(c_tok.shape[1], stop)
            same = (c_obs[:, :m] == observed[:, :m]) & (~observed[:, :m] | (c_tok[:, :m] == tokens[:, :m]))
            diff = (~same.all(0)).nonzero()
            start = int(diff[0]) if diff.numel() else m
            alpha[:, :start], logc[:, :start] = c_alpha[:, :start], c_logc[:, :start]
        ev = self._evidence(tokens[:, start:stop], observed[:, start:stop])  # [N, stop - start, S]
        a = alpha[:, start - 1] if start else self.initial.unsqueeze(0)
        for t in range(start, stop):
            a = (self.forward_step(a) if t else a) * ev[:, t - start]
            c = a.sum(-1, keepdim=True)  # [N, 1]: p(x_t obs | x_<t obs)
            a = a / c
            alpha[:, t], logc[:, t] = a, c.squeeze(-1).log()
        self._fwd_cache = (tokens[:, :stop].clone(), observed[:, :stop].clone(), alpha, logc)
        return alpha, logc

    def forward_backward(self, tokens: Tensor, observed: Tensor, posterior: bool = True) -> tuple[Tensor | None, Tensor]:
        """Scaled forward-backward on rows that start at column 0 (no padding).

        ``tokens [N, T]`` long, ``observed [N, T]`` bool (False = summed over).
        Returns the token posteriors ``[N, T, V]`` (one-hot at observed
        positions; None if ``posterior`` is False) and ``log p(observed) [N]``.
        Columns after the batch's last observation need no backward pass (beta
        = 1) and get their marginals from cached powers of the transition.
        """
        n, t_len = tokens.shape
        v, s_len = self.num_tokens, self.initial.shape[0]
        if t_len == 0:
            return (torch.zeros(n, 0, v, dtype=DTYPE) if posterior else None), torch.zeros(n, dtype=DTYPE)
        cols = observed.any(0).nonzero()
        stop = (int(cols.max()) if cols.numel() else 0) + 1  # stepwise columns [0, stop)
        alpha, logc = self._forward(tokens, observed, stop)  # [N, stop, S], [N, stop]
        if not posterior:
            return None, logc.sum(-1)
        post = torch.zeros(n, t_len, v, dtype=DTYPE)
        masked_cols = (~observed[:, :stop]).any(0).nonzero()
        if masked_cols.numel():  # gamma = alpha * beta over [first, stop), backward from stop - 1
            first = int(masked_cols[0])
            ev = self._evidence(tokens[:, first:stop], observed[:, first:stop])  # [N, stop - first, S]
            beta = torch.ones(n, stop - first, s_len, dtype=DTYPE)
            b = beta[:, -1]
            for t in range(stop - first - 2, -1, -1):
                b = self.backward_step(b * ev[:, t + 1])
                b = b / b.sum(-1, keepdim=True)
                beta[:, t] = b
            gamma = alpha[:, first:] * beta
            post[:, first:stop] = (gamma / gamma.sum(-1, keepdim=True)) @ self.state_emit
        if stop < t_len:  # nothing observed from here on: p(x_{stop-1+j}) = alpha_{stop-1} A^j emit
            k = t_len - stop
            pw = self._emit_powers(k).reshape(k * v, s_len)  # [k V, S]
            post[:, stop:] = (alpha[:, stop - 1] @ pw.T).view(n, k, v)
        onehot = torch.zeros_like(post).scatter_(-1, tokens.clamp(0, v - 1).unsqueeze(-1), 1.0)
        return torch.where(observed.unsqueeze(-1), onehot, post), logc.sum(-1)

    def __call__(
        self, input_ids: Tensor, attention_mask: Tensor, position_ids: Tensor, window: Window | None = None
    ) -> Tensor:
        """Exact log-posterior logits ``[N, T, V + 2]`` (the Denoiser protocol; columns ``window`` only if given).

        Left padding (``attention_mask`` False) is excluded: each row's chain
        starts at its first real position. Masked positions get log p(x_i = v |
        observed), observed ones a one-hot log distribution, padding zeros over
        the real tokens; mask and EOS columns are ``-inf``. ``position_ids`` is
        not needed (the chains are homogeneous) and is ignored.
        """
        n, t_len = input_ids.shape
        if attention_mask.shape != (n, t_len):
            raise ValueError(f"attention_mask must have shape {(n, t_len)}, got {tuple(attention_mask.shape)}")
        am = attention_mask.bool().cpu()
        if t_len > 1 and (am[:, 1:].long() < am[:, :-1].long()).any():
            raise ValueError("attention_mask must be False only on left padding (real tokens contiguous up to the end)")
        ids = input_ids.long().cpu()
        masked = ids == self.spec.mask_id
        bad = am & ~masked & ((ids < 0) | (ids >= self.num_tokens))
        if bad.any():
            raise ValueError(
                f"input_ids hold id {int(ids[bad][0])}: real positions must hold a token in [0, {self.num_tokens}) "
                f"or the mask id {self.spec.mask_id}"
            )
        if t_len == 0:
            return torch.zeros(n, 0, self.spec.vocab_size, dtype=DTYPE, device=input_ids.device)
        pad = (~am).sum(-1, keepdim=True)  # [N, 1]
        cols = torch.arange(t_len).unsqueeze(0)  # [1, T]
        to_left = (cols + pad) % t_len  # aligned column j reads original column j + pad
        ids_al, real_al = ids.gather(1, to_left), am.gather(1, to_left)
        observed = real_al & (ids_al != self.spec.mask_id)  # wrapped padding lands at the end, unobserved
        post, _ = self.forward_backward(ids_al, observed)
        assert post is not None
        logp = post.clamp_min(0).log()  # [N, T, V]; one-hot (0 / -inf) at observed positions
        back = (cols - pad) % t_len  # original column t reads aligned column t - pad
        logp = logp.gather(1, back.unsqueeze(-1).expand_as(logp))
        logp = torch.where(am.unsqueeze(-1), logp, torch.zeros((), dtype=DTYPE))  # padding: uniform
        special = torch.full((n, t_len, 2), float("-inf"), dtype=DTYPE)  # mask, dedicated EOS
        return select_window(torch.cat([logp, special], -1), window).to(input_ids.device)

    def _check_sequences(self, sequences: Tensor) -> Tensor:
        if sequences.dim() != 2:
            raise ValueError(f"sequences must be [n, length], got shape {tuple(sequences.shape)}")
        seq = sequences.long().cpu()
        if ((seq < 0) | (seq >= self.num_tokens)).any():
            raise ValueError(f"sequences must hold token ids in [0, {self.num_tokens})")
        return seq

    def log_prob(self, sequences: Tensor) -> Tensor:
        """Exact joint log-likelihood ``[n]`` (float64) of ``sequences [n, length]`` (forward algorithm)."""
        seq = self._check_sequences(sequences)
        return self.forward_backward(seq, torch.ones_like(seq, dtype=torch.bool), posterior=False)[1]


class MarkovOracle(ChainOracle):
    """A random Markov chain of order 1 or 2 over ``vocab_size`` tokens, with exact posteriors.

    Order 1: x_0 ~ pi, x_t ~ A[x_{t-1}]. Order 2: x_0 ~ pi, x_1 ~ A1[x_0],
    x_t ~ A2[x_{t-2}, x_{t-1}], run as a first-order chain over pair states
    (x_{t-1}, x_t) with a BOS previous token at t = 0. Every distribution is
    a row of a symmetric Dirichlet(``concentration``) draw (small = peaked,
    strongly dependent tokens) from ``torch.Generator().manual_seed(seed)``.
    """

    def __init__(
        self, vocab_size: int, order: int = 1, concentration: float = 0.3, seed: int = 0, eos_id: int | None = None
    ) -> None:
        if order not in (1, 2):
            raise ValueError(f"order must be 1 or 2, got {order!r}")
        check_concentration(concentration)
        self._setup_spec(vocab_size, eos_id)
        v, g = vocab_size, torch.Generator().manual_seed(seed)
        check_table(f"MarkovOracle(vocab_size={v}, order={order})", v**2 if order == 1 else (v + 1) * v * v,
                    "vocab_size <= 8192 for order 1, <= 406 for order 2")
        self.order, self.concentration, self.seed = order, float(concentration), seed
        self.pi = dirichlet((v,), concentration, g)  # [V] p(x_0)
        self.first = dirichlet((v, v), concentration, g)  # [V, V] p(x_t | x_{t-1}); order 2: p(x_1 | x_0)
        if order == 1:
            self.initial, self.state_emit = self.pi, torch.eye(v, dtype=DTYPE)
        else:
            self.second = dirichlet((v, v, v), concentration, g)  # [V, V, V] p(x_t | x_{t-2}, x_{t-1})
            # pair state (p, c) -> index p * V + c, p in 0..V (V = BOS); steps (p, b) -> (b, c)
            self._pair = torch.cat([self.second, self.first.unsqueeze(0)], 0)  # [V + 1, V, V] p(c | p, b)
            self._pair_bcp = self._pair.permute(1, 2, 0).contiguous()  # [V, V, V + 1]: (b, c, p)
            self.initial = torch.zeros(v + 1, v, dtype=DTYPE)
            self.initial[v] = self.pi
            self.initial = self.initial.reshape(-1)  # [(V + 1) V]
            self.state_emit = torch.eye(v, dtype=DTYPE).repeat(v + 1, 1)  # state (p, c) emits c

    def __repr__(self) -> str:
        return f"MarkovOracle(vocab_size={self.num_tokens}, order={self.order}, concentration={self.concentration}, seed={self.seed})"

    def forward_step(self, alpha: Tensor) -> Tensor:
        if self.order == 1:
            return alpha @ self.first
        v = self.num_tokens
        new = (alpha.view(-1, v + 1, v, 1) * self._pair).sum(1)  # [N, V, V]: states (b, c), summed over p
        return torch.cat([new, new.new_zeros(new.shape[0], 1, v)], 1).reshape(alpha.shape)  # BOS row stays 0

    def backward_step(self, beta: Tensor) -> Tensor:
        if self.order == 1:
            return beta @ self.first.T
        v = self.num_tokens
        nxt = beta.view(-1, v + 1, v)[:, :v].transpose(0, 1)  # [V, N, V]: successor states (b, c), b first
        out = torch.bmm(nxt, self._pair_bcp)  # [V, N, V + 1]: (b, n, p), summed over c
        return out.permute(1, 2, 0).reshape(beta.shape)  # [N, (V + 1) V]

    def sample(self, n: int, length: int, generator: torch.Generator | None = None) -> Tensor:
        """Exact ancestral samples ``[n, length]`` long."""
        check_int("n", n, 1)
        check_int("length", length, 0)
        out = torch.zeros(n, length, dtype=torch.long)
        for t in range(length):
            if t == 0:
                probs = self.pi.expand(n, -1)
            elif t == 1 or self.order == 1:
                probs = self.first[out[:, t - 1]]
            else:
                probs = self.second[out[:, t - 2], out[:, t - 1]]
            out[:, t] = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        return out

    def log_prob(self, sequences: Tensor) -> Tensor:
        """Exact joint log-likelihood ``[n]`` float64, by the chain rule."""
        seq = self._check_sequences(sequences)
        n, length = seq.shape
        lp = torch.zeros(n, dtype=DTYPE)
        if length == 0:
            return lp
        lp += self.pi[seq[:, 0]].log()
        if self.order == 1:
            return lp + self.first[seq[:, :-1], seq[:, 1:]].log().sum(-1)
        if length > 1:
            lp += self.first[seq[:, 0], seq[:, 1]].log()
        return lp + self.second[seq[:, :-2], seq[:, 1:-1], seq[:, 2:]].log().sum(-1)
