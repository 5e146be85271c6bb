"""A slow-mixing hidden Markov model oracle: long-range dependence with exact posteriors."""

from __future__ import annotations

import torch
from torch import Tensor

from .markov import DTYPE, ChainOracle, check_concentration, check_int, check_table, dirichlet


class HMMOracle(ChainOracle):
    """Hidden Markov model with ``num_states`` sticky states emitting ``vocab_size`` tokens.

    z_0 ~ Dirichlet initial, z_t = z_{t-1} with probability ``persistence``,
    else a state drawn from that row's Dirichlet(``concentration``) over the
    other states; x_t ~ Dirichlet(``concentration``) emission row of z_t. With
    ``persistence`` near 1 the hidden state mixes slowly, so tokens far apart
    stay dependent: the hard case for planners that reveal distant positions
    together. Posteriors by forward-backward (Rabiner 1989).
    """

    def __init__(
        self,
        num_states: int,
        vocab_size: int,
        persistence: float = 0.9,
        concentration: float = 0.3,
        seed: int = 0,
        eos_id: int | None = None,
    ) -> None:
        check_int("num_states", num_states, 2)
        if not isinstance(persistence, (int, float)) or not 0.0 <= persistence < 1.0:
            raise ValueError(f"persistence must be in [0, 1), got {persistence!r}")
        check_concentration(concentration)
        self._setup_spec(vocab_size, eos_id)
        check_table(f"HMMOracle(num_states={num_states}, vocab_size={vocab_size})",
                    max(num_states * num_states, num_states * vocab_size), "num_states x max(num_states, vocab_size)")
        k, g = num_states, torch.Generator().manual_seed(seed)
        self.num_states, self.persistence, self.concentration, self.seed = k, float(persistence), float(concentration), seed
        self.initial = dirichlet((k,), concentration, g)  # [K]
        off = dirichlet((k, k - 1), concentration, g) * (1.0 - persistence)  # [K, K-1] moves to other states
        trans = torch.zeros(k, k, dtype=DTYPE)
        others = ~torch.eye(k, dtype=torch.bool)
        trans[others] = off.reshape(-1)  # row-major fill skips the diagonal, row by row
        self.transition = trans + persistence * torch.eye(k, dtype=DTYPE)  # [K, K]
        self.emission = dirichlet((k, vocab_size), concentration, g)  # [K, V]
        self.state_emit = self.emission

    def __repr__(self) -> str:
        return (
            f"HMMOracle(num_states={self.num_states}, vocab_size={self.num_tokens}, persistence={self.persistence}, "
            f"concentration={self.concentration}, seed={self.seed})"
        )

    def forward_step(self, alpha: Tensor) -> Tensor:
        return alpha @ self.transition

    def backward_step(self, beta: Tensor) -> Tensor:
        return beta @ self.transition.T

    def sample(self, n: int, length: int, generator: torch.Generator | None = None) -> Tensor:
        """Exact ancestral samples ``[n, length]`` long (hidden states drawn and discarded)."""
        check_int("n", n, 1)
        check_int("length", length, 0)
        out = torch.zeros(n, length, dtype=torch.long)
        z = torch.zeros(n, dtype=torch.long)
        for t in range(length):
            probs = self.initial.expand(n, -1) if t == 0 else self.transition[z]
            z = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
            out[:, t] = torch.multinomial(self.emission[z], 1, generator=generator).squeeze(-1)
        return out
