"""The server's settings: batching limits, request defaults and the served model's name, validated once."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..engine import EngineConfig
from ..planners import parse_planner


def _positive_int(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


@dataclass(frozen=True)
class ServeSettings:
    """How ``unmask serve`` batches and what a request gets when it leaves a field out.

    The engine runs at most ``max_batch`` rows per denoiser call, whatever
    their settings; a request joins at the next step when its rows fit and,
    for cached requests, key/value slots are free (the arena is sized from
    ``kv_memory``: a fraction of free GPU memory or bytes, None for the
    default, with slots of ``max_length`` columns, None for the model's
    length up to 2048); at most ``queue_limit`` requests wait (more get 503);
    a request not answered within ``timeout_s`` of its arrival gets 504 and
    its rows leave the engine.
    ``max_tokens``, ``block_length`` and ``planner`` are the defaults of the
    request fields of the same names.

    Client limits (:mod:`.guard`): bodies over ``max_request_bytes`` get 413;
    at most ``max_connections`` connections are open; a connection has
    ``read_timeout_s`` to send a request's headers (and its body once the
    headers are in), and is closed after that long idle; on SIGTERM the server
    waits at most ``shutdown_timeout_s`` for requests in flight. ``api_key``:
    requests need ``Authorization: Bearer <key>`` (all but ``/health`` and
    ``/``). ``allowed_hosts``: the ``Host`` names answered (None or ``"*"``:
    any); ``allowed_origins``: web origins allowed besides the page's own
    (``"*"``: any).
    """

    model_name: str = "tiny-arith"
    max_batch: int = 32
    queue_limit: int = 256
    timeout_s: float = 60.0
    max_tokens: int = 32
    block_length: int = 32
    planner: str = "dilated"
    compile: bool = False
    kv_memory: float | int | None = None
    max_length: int | None = None
    # limits on clients (enforced by .guard)
    max_request_bytes: int = 4 * 1024 * 1024
    max_connections: int = 512
    read_timeout_s: float = 10.0
    shutdown_timeout_s: float = 30.0
    api_key: str | None = field(default=None, repr=False)
    allowed_hosts: tuple[str, ...] | None = None
    allowed_origins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.model_name, str) or not self.model_name.strip():
            raise ValueError(f"model_name must be a non-empty string, got {self.model_name!r}")
        for name in ("max_batch", "queue_limit", "max_tokens", "block_length"):
            _positive_int(name, getattr(self, name))
        for name, low in (("timeout_s", 1e-3),):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value < math.inf:
                raise ValueError(f"{name} must be a finite number >= {low:g}, got {value!r}")
        if not isinstance(self.compile, bool):
            raise ValueError(f"compile must be True or False, got {self.compile!r}")
        EngineConfig(max_rows=self.max_batch, kv_memory=self.kv_memory, max_length=self.max_length)  # checks both
        self._check_limits()
        planner = parse_planner(self.planner)  # a bad default planner is refused before the model is loaded
        try:  # and one that cannot run the default request (e.g. interleave(k=64) on blocks of 32)
            planner.check(self.default_gen_length, self.default_block_length)
        except ValueError as err:
            raise ValueError(f"planner {self.planner!r} cannot run the default request (max_tokens={self.max_tokens}, "
                             f"block_length={self.default_block_length}): {err}") from None

    @property
    def default_block_length(self) -> int:
        """The block length of a request that gives none (a default max_tokens shorter than a block is one block)."""
        return min(self.block_length, self.max_tokens)

    @property
    def default_gen_length(self) -> int:
        """The canvas a request without ``max_tokens`` needs: the default max_tokens in whole blocks."""
        block = self.default_block_length
        return -(-self.max_tokens // block) * block

    def check_model(self, max_length: int | None, prompt_tokens: int = 1) -> None:
        """Refuse, at start-up, a default ``max_tokens`` whose canvas leaves no room for a prompt of
        ``prompt_tokens`` (one token, plus a BOS where the model adds one) within the model's ``max_length``;
        otherwise every request without ``max_tokens`` would fail."""
        if max_length is None or self.default_gen_length + prompt_tokens <= max_length:
            return
        room = max_length - prompt_tokens
        fits = room if room <= self.block_length else room // self.block_length * self.block_length
        raise ValueError(f"max_tokens: the default {self.max_tokens} needs a canvas of {self.default_gen_length} "
                         f"(whole blocks of {self.default_block_length}), which leaves no room for a prompt of "
                         f"{prompt_tokens} token(s) within the model's maximum length {max_length}; the most that fits "
                         f"is {fits}" if fits >= 1 else f"max_tokens: the model's maximum length {max_length} leaves "
                         f"no room for generation after a prompt of {prompt_tokens} token(s)")

    def _check_limits(self) -> None:
        for name in ("max_request_bytes", "max_connections"):
            _positive_int(name, getattr(self, name))
        for name in ("read_timeout_s", "shutdown_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
        key = self.api_key
        if key is not None and (not isinstance(key, str) or not key or not key.isascii() or not key.isprintable()
                                or " " in key):
            raise ValueError("api_key must be a non-empty string of printable ASCII without spaces")
        for name in ("allowed_hosts", "allowed_origins"):
            value = getattr(self, name)
            if value is None and name == "allowed_hosts":
                continue
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v.strip() for v in value) \
                    or (name == "allowed_hosts" and not value):
                raise ValueError(f"{name} must be a list of non-empty names ('*' for any), got {value!r}")
            tidy = (v.strip().lower() for v in value)  # "[::1]" -> "::1"; "http://host:3000/" -> "http://host:3000"
            object.__setattr__(self, name, tuple(v.strip("[]") if name == "allowed_hosts" else v.rstrip("/") for v in tidy))
