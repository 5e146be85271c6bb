"""From a validated request to a :class:`Plan`: prompt ids, one GenerationConfig, one seed per row.

Everything a request can get wrong is found here, per request and before it
joins a batch, by the library's own checks (``parse_planner``,
``SamplingParams``, ``GenerationConfig``, the loop's prompt check) with each
message put in terms of the request's field names. So no request can fail a
batch it shares with others.

Canvas length: the denoiser fills a canvas of whole blocks, so ``max_tokens``
is rounded up to a multiple of the block length (``block_length``, or
``max_tokens`` itself when the request gives none and it is below the server's
default; on a block-causal model, its own block when that default does not
divide it) and the answer is cut at ``max_tokens`` tokens. A request that
names no cache gets ``auto``: the committed cache on block-causal models,
none on the others. Requests batch
together only when their configs are equal (same canvas, planner, sampling,
cache, guidance), which keeps each row's tokens those it would get alone.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..config import GenerationConfig
from ..denoiser import Denoiser
from ..engine.request import check_prompts
from ..names import SEED_LIMIT
from ..noise import derive_seed
from ..planners import parse_planner
from ..sampling import SamplingParams
from .schemas import ApiError, ChatRequest, CompletionRequest, bad_request
from .settings import ServeSettings

MAX_STOP = 4  # OpenAI's limit on stop strings
# the library's field names (first word of its ValueError messages) in the request's terms
LIBRARY_FIELDS = {"gen_length": "max_tokens", "block_length": "block_length", "cfg_scale": "cfg_scale",
                  "cache": "cache", "temperature": "temperature", "top_p": "top_p", "top_k": "top_k"}


@dataclass(frozen=True)
class Plan:
    """One request, ready to join a batch: rows are prompt-major (prompt i's n choices are rows i*n .. i*n+n-1)."""

    kind: str  # "completion" or "chat"
    prompts: list[list[int]]
    n: int
    config: GenerationConfig  # the batching key: canvas length, planner, sampling, cache, guidance (no seed, no stop)
    max_tokens: int
    stop: tuple[str, ...]
    seeds: list[int]  # one per row
    stream: bool
    reveal: bool  # stream each call's revealed positions
    include_usage: bool

    @property
    def rows(self) -> list[list[int]]:
        return [p for p in self.prompts for _ in range(self.n)]


@dataclass
class Served:
    """What plans are built against: the model, its tokenizer and the server's settings."""

    denoiser: Denoiser
    tokenizer: Any
    settings: ServeSettings

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))


def _library_error(err: ValueError, default: str | None) -> ApiError:
    """A library ``ValueError`` as a 400 naming the request field its message starts with."""
    match = re.match(r"\w+", str(err))
    word = match.group(0) if match else ""
    param = "planner" if word == "planner" else LIBRARY_FIELDS.get(word, default)
    message = str(err).replace("gen_length", "max_tokens (rounded up to whole blocks)", 1)
    return bad_request(message if param and message.startswith(param) else f"{param}: {message}", param)


def _stop(stop: str | list[str] | None) -> tuple[str, ...]:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > MAX_STOP or any(not s for s in stops):
        raise bad_request(f"stop must hold at most {MAX_STOP} non-empty strings, got {stops!r}", "stop")
    return tuple(stops)


def default_block(block_length: int, max_tokens: int, model_block: int | None) -> int:
    """The block of a request that names none: the server's default (at most ``max_tokens``), or on a block-causal
    model whose block it does not divide (which the loop refuses), the model's own block."""
    block = min(block_length, max_tokens)
    return model_block if model_block is not None and model_block % block else block


def _config(req: CompletionRequest | ChatRequest, max_tokens: int, served: Served) -> GenerationConfig:
    """The batching key; each library check reports the request field it concerns."""
    s = served.settings
    try:
        planner = parse_planner(req.planner if req.planner is not None else s.planner)
    except ValueError as err:
        message = str(err)
        raise bad_request(message if message.startswith("planner") else f"planner: {message}", "planner") from None
    try:
        sampling = SamplingParams(temperature=0.0 if req.temperature is None else req.temperature,
                                  top_p=1.0 if req.top_p is None else req.top_p, top_k=req.top_k)
    except ValueError as err:
        raise _library_error(err, None) from None
    block = req.block_length if req.block_length is not None else default_block(s.block_length, max_tokens,
                                                                                  served.denoiser.attention_block)
    if block < 1:
        raise bad_request(f"block_length must be a positive int, got {block}", "block_length")
    cache = "auto" if req.cache is None else req.cache  # auto: the committed cache on block-causal models, else none
    if cache not in ("none", "auto") and not served.denoiser.can_cache():
        raise bad_request(f"cache={cache!r} needs a model with a key/value cache; this one has none: use 'none'", "cache")
    try:
        return GenerationConfig(gen_length=-(-max_tokens // block) * block, block_length=block, planner=planner,
                                sampling=sampling, cfg_scale=0.0 if req.cfg_scale is None else req.cfg_scale,
                                cache=cache, compile=s.compile)
    except ValueError as err:
        raise _library_error(err, "planner") from None


def _max_tokens(req: CompletionRequest | ChatRequest, served: Served) -> int:
    name, value = "max_tokens", req.max_tokens
    if isinstance(req, ChatRequest) and req.max_completion_tokens is not None:
        if value is not None:
            raise bad_request("give max_tokens or max_completion_tokens, not both", "max_completion_tokens")
        name, value = "max_completion_tokens", req.max_completion_tokens
    if value is None:
        return served.settings.max_tokens
    limit = served.denoiser.spec.max_length
    if value < 1 or (limit is not None and value > limit):
        raise bad_request(f"{name} must be an int in [1, {limit}] (the model's length), got {value}"
                          if limit is not None else f"{name} must be a positive int, got {value}", name)
    return value


def _check_lengths(prompts: list[list[int]], config: GenerationConfig, max_tokens: int, served: Served, param: str) -> None:
    limit = served.denoiser.spec.max_length
    for i, p in enumerate(prompts):
        total = len(p) + config.gen_length
        if limit is not None and total > limit:
            where = f"{param}[{i}]" if len(prompts) > 1 else param
            raise ApiError(400, f"this model's maximum length is {limit} tokens; {where} has {len(p)} and "
                           f"max_tokens={max_tokens} needs a canvas of {config.gen_length} (whole blocks of "
                           f"{config.block_length}): {total}. Shorten the prompt or lower max_tokens.", param,
                           "context_length_exceeded")
    mask = served.denoiser.spec.mask_id
    for i, p in enumerate(prompts):
        if mask in p:
            raise bad_request(f"{param} holds the mask token (id {mask}): a prompt cannot contain masks", param)
    try:
        check_prompts(prompts, config, served.denoiser.spec)
    except ValueError as err:
        raise bad_request(f"{param}: {err}", param) from None


def build_plan(req: CompletionRequest | ChatRequest, served: Served, encode: Callable[[], list[list[int]]]) -> Plan:
    """Check a parsed request field by field, then its prompts (``encode()``, called once the fields are good)."""
    param = "messages" if isinstance(req, ChatRequest) else "prompt"
    if req.model is not None and req.model != served.settings.model_name:
        raise ApiError(404, f"the model {req.model!r} does not exist: this server serves {served.settings.model_name!r}",
                       "model", "model_not_found")
    if req.seed is not None and not 0 <= req.seed < SEED_LIMIT:
        raise bad_request(f"seed must be an int in [0, 2^63), got {req.seed}", "seed")
    if req.reveal_events and not req.stream:
        raise bad_request("reveal_events needs stream=true (the events are server-sent)", "reveal_events")
    if req.stream_options is not None and not req.stream:
        raise bad_request("stream_options needs stream=true", "stream_options")
    max_tokens = _max_tokens(req, served)
    config = _config(req, max_tokens, served)
    stop = _stop(req.stop)
    if req.n < 1 or req.n > served.settings.max_batch:
        raise bad_request(f"n must be an int in [1, {served.settings.max_batch}] (the server's batch), got {req.n}", "n")
    prompts = encode()
    rows = len(prompts) * req.n
    if rows > served.settings.max_batch:
        raise bad_request(f"n={req.n} times {len(prompts)} prompts is {rows} rows, over the server's batch of "
                          f"{served.settings.max_batch}", "n")
    _check_lengths(prompts, config, max_tokens, served, param)
    base = req.seed if req.seed is not None else secrets.randbits(62)
    return Plan(kind="chat" if isinstance(req, ChatRequest) else "completion", prompts=prompts, n=req.n, config=config,
                max_tokens=max_tokens, stop=stop, seeds=[derive_seed(base, k) for k in range(rows)], stream=req.stream,
                reveal=req.reveal_events,
                include_usage=bool(req.stream_options and req.stream_options.include_usage))
