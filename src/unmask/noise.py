"""Counter-based randomness: every random number is a pure function of where it is used.

A ``torch.Generator`` hands out numbers in the order they are asked for, so a
row's draws would depend on the rows beside it in the batch, on the number of
calls before, and on the device. Here the uniform number for row ``n``,
stream ``s`` (token draws, random orders), call ``c`` within the block,
canvas position ``p`` and index ``v`` (the vocabulary id for token draws) is a
hash of ``(seed_n, s, c, p, v)``. So:

- a prompt with the same seed gets the same tokens alone or in any batch, in
  any row, with any left padding (positions count from the row's first real
  token), which is what per-request seeds (lm-eval repeats, a server's
  requests) need;
- every tensor-parallel rank and both devices draw the same numbers (integer
  arithmetic is exact on CPU and CUDA);
- drawing needs no generator state, so it can run inside a captured graph.

The hash is two rounds of a 32-bit integer mixer (odd multipliers below 2^31,
so every product of a 32-bit value fits in int64), applied to a Weyl sequence
over ``v`` offset by a per-position key. Uniforms take the top 24 bits:
``(x + 0.5) / 2^24``, exact in float32 and strictly inside (0, 1).
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
TOKENS = 1  # stream of the token draws (sampling)
ORDER = 2  # stream of random position orders (random top-k)


def mix32(x):  # type: ignore[no-untyped-def]
    """A 32-bit integer mixer on Python ints or int64 tensors holding values in [0, 2^32)."""
    x = x ^ (x >> 16)
    x = (x * 0x21F0AAAD) & MASK32
    x = x ^ (x >> 15)
    x = (x * 0x735A2D97) & MASK32
    return x ^ (x >> 15)


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers, e.g. ``(base seed, request, repeat)``: stable across runs and machines."""
    if not parts or any(not isinstance(p, int) or isinstance(p, bool) for p in parts):
        raise ValueError(f"derive_seed takes one or more ints, got {parts!r}")
    digest = hashlib.sha256(repr(tuple(parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def seed_key(seed: int) -> int:
    """The 32-bit key of a (64-bit) seed."""
    return mix32(mix32((seed & MASK32) ^ 0x2545F491) ^ ((seed >> 32) & MASK32))


ONE_BELOW = 1.0 - 2.0**-24  # the largest float32 below 1


def to_unit(x: Tensor) -> Tensor:
    """float32 uniforms strictly inside (0, 1) from 32-bit hashes (top 24 bits, centred in their cell).

    The top cell's centre, 1 - 2^-25, rounds to 1.0 in float32; it is held at
    the largest float32 below 1, because a uniform of exactly 1 makes the
    exponential race of :func:`unmask.sampling.propose` pick its token
    whatever its probability, even one at -inf (the mask, a truncated token).
    """
    return (((x >> 8).to(torch.float32) + 0.5) * (2.0**-24)).clamp_max(ONE_BELOW)


@dataclass(frozen=True)
class Noise:
    """The random source of one generation: one key per row."""

    keys: Tensor  # [N] int64, 32-bit row keys

    @classmethod
    def from_seeds(cls, seeds: Sequence[int], device: torch.device | str = "cpu") -> Noise:
        for i, s in enumerate(seeds):
            if not isinstance(s, int) or isinstance(s, bool) or not 0 <= s < SEED_LIMIT:
                raise ValueError(f"seeds[{i}] must be an int in [0, 2^63), got {s!r}")
        return cls(torch.tensor([seed_key(int(s)) for s in seeds], dtype=torch.long, device=device))

    def at(self, call: int, positions: Tensor) -> CallNoise:
        """The source for call ``call`` (within its block) over canvas positions ``[N, L]``."""
        return CallNoise(self.keys, call, positions)


@dataclass(frozen=True)
class CallNoise:
    """Uniforms for one call: ``uniform(stream)`` is ``[N, L]``, ``uniform(stream, width)`` ``[N, L, width]``."""

    keys: Tensor  # [N]
    call: int
    positions: Tensor  # [N, L] long: canvas positions (count from each row's first real token)

    def uniform(self, stream: int, width: int | None = None) -> Tensor:
        k = mix32(self.keys ^ mix32(mix32(stream * 0x10001 + 0x3C6EF372) ^ self.call))  # [N]
        kp = mix32((self.positions.long() * GOLDEN + k.unsqueeze(-1)) & MASK32)  # [N, L]
        if width is None:
            return to_unit(mix32(kp ^ 0x68E31DA4))
        v = torch.arange(width, dtype=torch.long, device=kp.device) * GOLDEN  # [V]
        x = mix32((v + kp.unsqueeze(-1)) & MASK32)  # [N, L, V]
        return to_unit(mix32(x ^ kp.unsqueeze(-1)))
