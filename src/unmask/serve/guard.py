"""What a client must do before a request reaches a route, and how long it may take.

:class:`RequestGuard` (ASGI middleware, in this order; each refusal is an
OpenAI-shaped error counted in ``/metrics``):

1. ``Host`` must name the server (``allowed_hosts``; the CLI derives them from
   the bound address) and a browser's ``Origin`` must be the page's own origin
   or one of ``allowed_origins``: 403. Together these stop a web page, by a
   cross-site request or by DNS rebinding, from driving a server on loopback
   (the defence Jupyter and Django's ``ALLOWED_HOSTS`` use).
2. With an ``api_key``, every route but ``/health`` and the playground page
   ``/`` needs ``Authorization: Bearer <key>`` (as vLLM and SGLang do): 401.
3. A POST must be ``Content-Type: application/json``: 415 (a form or
   ``text/plain`` POST is what a page may send without asking the server first).
4. The body must fit ``max_request_bytes`` (413, before reading it when
   ``Content-Length`` says so) and arrive within ``read_timeout_s`` of the
   headers (408; h11 has no body timeout of its own). Both close the connection.

:func:`protocol_class` extends uvicorn's h11 protocol: a connection must send
a request's headers within ``read_timeout_s`` of opening (or of its previous
answer), else it is closed, and at most ``max_connections`` are open at once
(one more is answered 503 and closed at once, so idle sockets cannot exhaust
file descriptors). :func:`uvicorn_options` gathers these for ``uvicorn.run``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from typing import Any
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .metrics import Metrics
from .schemas import ApiError
from .settings import ServeSettings

OPEN_PATHS = frozenset({"/health", "/"})  # answered without an API key
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def default_allowed_hosts(bind: str) -> tuple[str, ...] | None:
    """The ``Host`` names a server bound to ``bind`` accepts: loopback names on loopback, any on every interface."""
    name = bind.strip("[]").lower()
    if name in ("", "0.0.0.0", "::"):
        return None
    if name in LOOPBACK_NAMES or name.startswith("127."):
        return tuple(dict.fromkeys((*LOOPBACK_NAMES, name)))
    return (name,)


def host_name(host: str) -> str:
    """The name part of a ``Host`` header: ``[::1]:8000`` -> ``::1``, ``Localhost.:80`` -> ``localhost``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


async def send_error(send: Send, err: ApiError, close: bool = False) -> None:
    """Answer ``err`` in OpenAI's shape; ``close`` ends the connection (the body was not read)."""
    body = json.dumps(err.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in err.headers.items()]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodyTooLarge(Exception):
    pass


class RequestGuard:
    """ASGI middleware: host and origin, API key, content type, body size and body deadline (module docstring)."""

    def __init__(self, app: ASGIApp, settings: ServeSettings) -> None:
        self.app, self.settings = app, settings

    def refusal(self, scope: Scope) -> ApiError | None:
        """Why the request's headers alone refuse it, or None."""
        s = self.settings
        host = _header(scope, b"host")
        if host is not None and s.allowed_hosts is not None and "*" not in s.allowed_hosts \
                and host_name(host) not in s.allowed_hosts:
            return ApiError(403, f"the Host header {host!r} is not one this server answers to ({', '.join(s.allowed_hosts)}): "
                            "start it with --allowed-hosts to add names", None, "host_not_allowed")
        origin = _header(scope, b"origin")
        if origin is not None and not self.origin_allowed(origin, host):
            return ApiError(403, f"requests from the web origin {origin!r} are not allowed: start the server with "
                            "--allowed-origins to allow it", None, "origin_not_allowed")
        if s.api_key is not None and scope["path"] not in OPEN_PATHS:
            scheme, _, key = (_header(scope, b"authorization") or "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), s.api_key.encode()):
                return ApiError(401, "a valid API key is needed: send 'Authorization: Bearer <key>' with the key the "
                                "server was started with (--api-key)", None, "invalid_api_key",
                                headers={"WWW-Authenticate": "Bearer"})
        if scope["method"] == "POST":
            kind = (_header(scope, b"content-type") or "").split(";", 1)[0].strip().lower()
            if kind != "application/json":
                return ApiError(415, f"the request body must be sent as Content-Type: application/json, got "
                                f"{kind or 'none'!r}", None, "unsupported_media_type")
        length = _header(scope, b"content-length")
        if length is not None and length.strip().isdigit() and int(length) > s.max_request_bytes:
            return self.too_large(int(length))
        return None

    def origin_allowed(self, origin: str, host: str | None) -> bool:
        allowed = self.settings.allowed_origins
        origin = origin.strip().lower().rstrip("/")
        if "*" in allowed or origin in allowed:
            return True
        return host is not None and urlsplit(origin).netloc == host.strip().lower()  # the page's own origin

    def too_large(self, size: int) -> ApiError:
        return ApiError(413, f"the request body is {size} bytes or more; this server takes at most "
                        f"{self.settings.max_request_bytes} (--max-request-bytes)", None, "request_too_large")

    async def read_body(self, receive: Receive) -> bytes | None:
        """The whole body, or None if the client went away; ``BodyTooLarge`` past the limit."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.settings.max_request_bytes:
                raise BodyTooLarge(size)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        arrived = time.monotonic()
        scope.setdefault("state", {})["arrived"] = arrived  # request.state.arrived: the request timeout starts here
        err = self.refusal(scope)
        if err is not None:
            await send_error(send, err, close=err.status == 413)
            return
        try:
            body = await asyncio.wait_for(self.read_body(receive), self.settings.read_timeout_s)
        except BodyTooLarge as big:
            await send_error(send, self.too_large(big.args[0]), close=True)
            return
        except TimeoutError:
            await send_error(send, ApiError(408, f"the request body did not arrive within {self.settings.read_timeout_s:g} s "
                                            "(--read-timeout-s)", None, "request_timeout"), close=True)
            return
        if body is None:
            return  # the client is gone before its request was complete: nobody to answer
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # later calls: the client's disconnect

        await self.app(scope, replay, send)


def _refusal_bytes() -> bytes:
    err = ApiError(503, "the server has as many open connections as it allows (--max-connections): retry later",
                   None, "too_many_connections", type="server_error")
    body = json.dumps(err.body()).encode()
    head = (f"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "retry-after: 1\r\nconnection: close\r\n\r\n")
    return head.encode() + body


def protocol_class(settings: ServeSettings, metrics: Metrics) -> type:
    """uvicorn's h11 protocol with a deadline for each request's headers and a cap on open connections."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    refusal = _refusal_bytes()

    class GuardedH11Protocol(H11Protocol):
        _read_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > settings.max_connections:
                metrics.connection_closed("limit")
                transport.write(refusal)
                transport.close()
                return
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self._arm()  # headers begun but not complete (uvicorn's keep-alive timer stops at the first byte)
            else:
                self._disarm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            if self._read_timer is None:
                self._read_timer = self.loop.call_later(settings.read_timeout_s, self._read_timeout)

        def _disarm(self) -> None:
            if self._read_timer is not None:
                self._read_timer.cancel()
                self._read_timer = None

        def _read_timeout(self) -> None:
            self._read_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                metrics.connection_closed("read_timeout")
                self.transport.close()

    return GuardedH11Protocol


def uvicorn_options(settings: ServeSettings, metrics: Metrics) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run``: the guarded protocol, keep-alive and the shutdown deadline."""
    return {"http": protocol_class(settings, metrics), "timeout_keep_alive": settings.read_timeout_s,
            "timeout_graceful_shutdown": settings.shutdown_timeout_s}

