"""Request bodies of the OpenAI-compatible endpoints, their parsing, and OpenAI's error shape.

Bodies are parsed by hand (bad JSON is a 400 in OpenAI's shape, not
FastAPI's 422) and checked by pydantic in strict mode: a string is not a
number, ``1.0`` is not an int, unknown fields are refused. OpenAI fields that
masked diffusion decoding has no use for (``logprobs``, penalties, tools) are
accepted only at their neutral values. The unmask fields (``planner``,
``block_length``, ``cache``, ``cfg_scale``, ``top_k``, ``reveal_events``) sit
beside the OpenAI ones in the same body. Every error is an :class:`ApiError`
whose ``param`` names the field.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError


class ApiError(Exception):
    """An HTTP error answered in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error", headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_request(message: str, param: str | None, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param, code)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class StreamOptions(_Strict):
    include_usage: bool = False


class _Request(_Strict):
    """Fields common to both endpoints: OpenAI's decoding fields, then unmask's."""

    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    # unmask fields
    planner: str | None = None
    block_length: int | None = None
    cache: str | None = None
    cfg_scale: float | None = None
    top_k: int | None = None
    reveal_events: bool = False


class CompletionRequest(_Request):
    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool | None = None
    best_of: int | None = None
    suffix: str | None = None
    logprobs: int | None = None


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    @property
    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class ChatRequest(_Request):
    messages: list[ChatMessage]
    max_completion_tokens: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None


# OpenAI fields accepted only at a value that asks for nothing the server does not do
NEUTRAL: dict[str, tuple[Any, ...]] = {
    "echo": (False,), "best_of": (1,), "suffix": ("",), "logprobs": (False,), "top_logprobs": (0,),
    "frequency_penalty": (0.0,), "presence_penalty": (0.0,), "logit_bias": ({},), "tools": ([],),
    "tool_choice": ("none",), "response_format": ({"type": "text"},), "parallel_tool_calls": (True, False),
}
# fields whose pydantic errors come once per alternative type: one plain sentence instead
UNIONS = {
    "prompt": "prompt must be a string, a list of strings, a list of token ids or a list of token-id lists",
    "stop": "stop must be a string or a list of strings",
    "content": "content must be a string or a list of {\"type\": \"text\", \"text\": ...} parts",
    "tool_choice": "tool_choice must be \"none\" (tools are not supported)",
}


MAX_DEPTH = 32  # OpenAI's bodies nest a few levels (messages[i].content[j].text); tools' schemas more
_SURROGATE = re.compile("[\ud800-\udfff]")


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def _check_text(text: str, path: str) -> None:
    match = _SURROGATE.search(text)
    if match is not None:
        raise bad_request(f"{path or 'the request body'} holds a lone UTF-16 surrogate ({ascii(match.group())} at "
                          f"character {match.start()}): text must be valid Unicode", path or None)


def _check_tree(data: Any) -> None:
    """Refuse bodies nested deeper than ``MAX_DEPTH`` and strings holding lone surrogates, naming the field.

    JSON may escape half of a UTF-16 pair (``"\\ud800"``); Python decodes it to a
    lone surrogate, which no tokenizer can encode. The walk uses its own stack,
    so no depth reaches Python's recursion limit.
    """
    stack: list[tuple[Any, str, int]] = [(data, "", 1)]
    while stack:
        value, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise bad_request(f"the request body nests deeper than {MAX_DEPTH} levels", None, "invalid_json")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, child in items:
            if isinstance(key, str):
                _check_text(key, path)
                name = f"{path}.{key}" if path else key
            else:
                name = f"{path}[{key}]"
            if isinstance(child, str):
                _check_text(child, name)
            elif isinstance(child, (dict, list)):
                stack.append((child, name, depth + 1))


def read_json(raw: bytes) -> dict[str, Any]:
    """The JSON object of a request body; ``ApiError`` 400 for anything else (too deep, lone surrogates too)."""
    try:
        data = json.loads(raw, parse_constant=_reject_constant)
    except RecursionError:
        raise bad_request(f"the request body nests deeper than {MAX_DEPTH} levels", None, "invalid_json") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise bad_request(f"the request body is not valid JSON: {err}", None, "invalid_json") from None
    if not isinstance(data, dict):
        raise bad_request(f"the request body must be a JSON object, got {type(data).__name__}", None, "invalid_json")
    _check_tree(data)
    return data


def _param(loc: tuple[int | str, ...]) -> tuple[str, str | None]:
    """A dotted field name from a pydantic error location, and the union hint of its last field if any."""
    name, hint = "", None
    for part in loc:
        if isinstance(part, int):
            name += f"[{part}]"
            continue
        name += f".{part}" if name else part
        if part in UNIONS:
            hint = UNIONS[part]
            break
    return name, hint


def to_api_error(err: ValidationError, model: type[BaseModel]) -> ApiError:
    """The first pydantic error as a 400 that names its field."""
    first = err.errors()[0]
    param, hint = _param(tuple(first["loc"]))
    kind = first["type"]
    if kind == "extra_forbidden":
        known = ", ".join(model.model_fields)
        return bad_request(f"unknown field {param!r}: this endpoint takes {known}", param, "unknown_field")
    if kind == "missing":
        return bad_request(f"{param} is required", param, "missing_field")
    message = hint.replace(hint.split()[0], param, 1) if hint else f"{param}: {first['msg']}"
    if not hint and "input" in first and kind.endswith("_type"):
        message += f", got {json.dumps(first['input'])[:80]}"
    return bad_request(message, param, "invalid_type" if kind.endswith("_type") or hint else "invalid_value")


def parse_request(data: dict[str, Any], model: type[_Request]) -> Any:
    """Validate a body against ``model`` (strict), then refuse non-neutral unsupported fields."""
    try:
        req = model.model_validate(data)
    except ValidationError as err:
        raise to_api_error(err, model) from None
    for name, allowed in NEUTRAL.items():
        value = getattr(req, name, None)
        if value is not None and not any(type(value) is type(a) and value == a for a in allowed):  # 0 is not False
            raise bad_request(f"{name}={value!r} is not supported by unmask serve: leave it out"
                              + (f" or set it to {allowed[0]!r}" if len(allowed) == 1 else ""), name, "unsupported_field")
    return req
