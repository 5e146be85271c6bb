"""Counter-based randomness: every random number is a pure function of where it is used.

A ``torch.Generator`` hands out numbers in the order they are asked for, so a
row's draws would depend on the rows beside it in the batch, on the number of
calls before, and on the device. Here the uniform number for row ``n``,
stream ``s`` (token draws, random orders), call ``c`` within the block and
canvas position ``p`` is a hash of ``(seed_n, s, c, p)``: one number per
position, whatever the vocabulary size (token draws invert the cumulative
distribution, :func:`unmask.sampling.propose`). So:

- a prompt with the same seed gets the same tokens alone or in any batch, in
  any row, with any left padding (positions count from the row's first real
  token), which is what per-request seeds (lm-eval repeats, a server's
  requests) need;
- every tensor-parallel rank and both devices draw the same numbers (integer
  arithmetic is exact on CPU and CUDA);
- drawing needs no generator state, so it can run inside a captured graph.

Row keys are 64 bits, held as two 32-bit lanes. The hash is a Feistel network
on the lane pair whose round function is a 32-bit integer mixer (odd
multipliers below 2^31, so every product of a 32-bit value fits in int64).
Each Feistel round is a bijection of the pair, so two seeds below 2^64 have
distinct keys, and two keys give distinct states at every (stream, call,
position): streams of different seeds never coincide. Uniforms are
``(k + 0.5) / 2^52`` for a 52-bit ``k`` (float64, exact, strictly inside
(0, 1)), or ``(k + 0.5) / 2^24`` for a 24-bit ``k`` (float32, for orders).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .names import SEED_LIMIT

MASK32 = 0xFFFFFFFF
GOLDEN = 0x61C88647  # 2^32 / phi, odd and below 2^31
ROUND_KEYS = (0x2545F491, 0x3C6EF372, 0x68E31DA4, 0x1B873593, 0x5851F42D, 0x4C957F2D)
TOKENS = 1  # stream of the token draws (sampling)
ORDER = 2  # stream of random position orders (random top-k)
CANVAS = 3  # stream of the random tokens at uncommitted positions of a uniform-state canvas


def mix32(x):  # type: ignore[no-untyped-def]
    """A 32-bit integer mixer on Python ints or int64 tensors holding values in [0, 2^32)."""
    x = x ^ (x >> 16)
    x = (x * 0x21F0AAAD) & MASK32
    x = x ^ (x >> 15)
    x = (x * 0x735A2D97) & MASK32
    return x ^ (x >> 15)


def feistel(a, b, rounds: int = 4):  # type: ignore[no-untyped-def]
    """A bijection of the lane pair ``(a, b)`` (32-bit values, Python ints or int64 tensors)."""
    for r in range(rounds):
        a, b = b, a ^ mix32((b + ROUND_KEYS[r % len(ROUND_KEYS)]) & MASK32)
    return a, b


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers, e.g. ``(base seed, request, repeat)``: stable across runs and machines."""
    if not parts or any(not isinstance(p, int) or isinstance(p, bool) for p in parts):
        raise ValueError(f"derive_seed takes one or more ints, got {parts!r}")
    digest = hashlib.sha256(repr(tuple(parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def seed_key(seed: int) -> tuple[int, int]:
    """The 64-bit key of a seed as two 32-bit lanes: a bijection of seeds below 2^64.

    Bits above 64 (seeds are any int >= 0) are folded in 64 at a time between rounds.
    """
    a, b = feistel(seed & MASK32, (seed >> 32) & MASK32)
    rest = seed >> 64
    while rest:
        a, b = feistel(a ^ (rest & MASK32), b ^ ((rest >> 32) & MASK32))
        rest >>= 64
    return a, b


ONE_BELOW = 1.0 - 2.0**-24  # the largest float32 below 1


def to_unit(x: Tensor) -> Tensor:
    """float32 uniforms strictly inside (0, 1) from 32-bit hashes (top 24 bits, centred in their cell).

    The top cell's centre, 1 - 2^-25, rounds to 1.0 in float32; it is held at
    the largest float32 below 1, so a uniform is never exactly 1.
    """
    return (((x >> 8).to(torch.float32) + 0.5) * (2.0**-24)).clamp_max(ONE_BELOW)


def to_unit64(hi: Tensor, lo: Tensor) -> Tensor:
    """float64 uniforms ``(k + 0.5) / 2^52`` from two 32-bit hashes, ``k`` = 32 bits of ``hi``, 20 of ``lo``.

    ``k + 0.5`` has at most 53 significant bits, so every value is exact and
    lies in ``[2^-53, 1 - 2^-53]``.
    """
    k = (hi << 20) | (lo >> 12)  # [0, 2^52)
    return (k.to(torch.float64) + 0.5) * 2.0**-52


@dataclass(frozen=True)
class Noise:
    """The random source of one generation: one 64-bit key per row."""

    keys: Tensor  # [N, 2] int64: the two 32-bit lanes of each row's key

    @classmethod
    def from_seeds(cls, seeds: Sequence[int], device: torch.device | str = "cpu") -> Noise:
        for i, s in enumerate(seeds):
            if not isinstance(s, int) or isinstance(s, bool) or not 0 <= s < SEED_LIMIT:
                raise ValueError(f"seeds[{i}] must be an int in [0, 2^63), got {s!r}")
        keys = [seed_key(int(s)) for s in seeds]
        return cls(torch.tensor(keys, dtype=torch.long, device=device).reshape(len(keys), 2))

    def at(self, call: int, positions: Tensor) -> CallNoise:
        """The source for call ``call`` (within its block) over canvas positions ``[N, L]``."""
        return CallNoise(self.keys, call, positions)


@dataclass(frozen=True)
class CallNoise:
    """Uniforms for one call, one per (row, position): ``uniform(stream)`` float32, ``uniform64(stream)`` float64."""

    keys: Tensor  # [N, 2]
    call: int
    positions: Tensor  # [N, L] long: canvas positions (count from each row's first real token)

    def _hash(self, stream: int) -> tuple[Tensor, Tensor]:
        """Two 32-bit lanes ``[N, L]``: a bijection of the row key for each (stream, call, position)."""
        tag = mix32(mix32((stream * 0x10001 + 0x3C6EF372) & MASK32) ^ (self.call & MASK32))
        a, b = feistel(self.keys[:, 0] ^ tag, self.keys[:, 1], rounds=2)  # [N]
        p = mix32((self.positions.long() * GOLDEN) & MASK32)  # [N, L]; a bijection of the position mod 2^32
        return feistel(a.unsqueeze(-1) ^ p, b.unsqueeze(-1).expand_as(p), rounds=4)

    def uniform(self, stream: int) -> Tensor:
        """``[N, L]`` float32 uniforms in (0, 1) on a 2^-24 grid (random orders)."""
        return to_unit(self._hash(stream)[0])

    def uniform64(self, stream: int) -> Tensor:
        """``[N, L]`` float64 uniforms in (0, 1) on a 2^-52 grid (token draws)."""
        hi, lo = self._hash(stream)
        return to_unit64(hi, lo)


def uniform_tokens(noise: CallNoise, vocab_size: int) -> Tensor:
    """Uniform tokens ``[N, L]`` for the positions that enter a call uncommitted (uniform-state corruption).

    ``floor(u * V)`` of a float64 uniform of stream ``CANVAS`` on a 2^-52 grid:
    every token has probability ``1/V`` up to ``V * 2^-52``.
    """
    u = noise.uniform64(CANVAS)
    return (u * vocab_size).long().clamp_max(vocab_size - 1)  # u < 1, so the clamp only guards rounding
