"""The FastAPI application: OpenAI's endpoints over the engine's worker, the playground, health and metrics.

``create_app(served)`` builds it; ``unmask serve`` runs it under uvicorn.
Requests are stateless (everything a generation needs is in its body, seeds
included), so any number of servers can sit behind one HTTP load balancer.
Every request first passes :mod:`.guard` (host, origin, API key, content
type, body size and deadline). A request is parsed and checked
(:mod:`.schemas`, :mod:`.prompts`, :mod:`.plan`) in a worker thread, so a
long prompt's tokenisation does not hold up the event loop, before it is
handed to the engine's worker (:mod:`.worker`); then its handler waits for its events: the final result, or for
``stream: true`` the server-sent chunks written by :mod:`.stream`. A
non-streaming request whose client disconnects, or any request past
``timeout_s`` counted from its arrival, is cancelled and its rows leave the engine at the next step.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .guard import RequestGuard
from .job import Job, Result, usage
from .metrics import Metrics
from .plan import Plan, Served, build_plan
from .playground import playground_html
from .prompts import chat_prompts, completion_prompts
from .schemas import ApiError, ChatRequest, CompletionRequest, parse_request, read_json
from .stream import event_stream
from .worker import QueueFull, Worker

ROUTES = frozenset({"/", "/health", "/metrics", "/v1/models", "/v1/completions", "/v1/chat/completions"})
POLL_S = 0.25  # how often a waiting handler checks its deadline and its client


def _label(path: str) -> str:
    """The metrics label of a request path: its route, or "other" (labels stay few whatever clients send)."""
    if path in ROUTES:
        return path
    return "/v1/models/{model}" if path.startswith("/v1/models/") else "other"


class CountRequests:
    """ASGI middleware: every HTTP answer counted by path and status code (streams and unhandled errors included)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        started = False

        async def counting_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                self.metrics.request(_label(scope["path"]), int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        except Exception:
            if not started:  # Starlette's outermost middleware answers it with a 500, outside this one
                self.metrics.request(_label(scope["path"]), 500)
            raise


def _error_response(err: ApiError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


def response_body(plan: Plan, result: Result, rid: str, created: int, model: str) -> dict[str, Any]:
    """OpenAI's completion or chat completion object, plus an ``unmask`` field with the decoding cost."""
    if plan.kind == "chat":
        choices = [{"index": c.index, "message": {"role": "assistant", "content": c.text}, "finish_reason": c.finish_reason,
                    "logprobs": None} for c in result.choices]
    else:
        choices = [{"index": c.index, "text": c.text, "finish_reason": c.finish_reason, "logprobs": None}
                   for c in result.choices]
    return {"id": rid, "object": "chat.completion" if plan.kind == "chat" else "text_completion", "created": created,
            "model": model, "choices": choices, "usage": usage(plan, result),
            "unmask": {"nfe": [c.nfe for c in result.choices], "batch_rows": result.batch_rows,
                       "batched_calls": result.nfe, "seconds": round(result.seconds, 6)}}


class Handler:
    """The request path shared by both generation endpoints."""

    def __init__(self, served: Served, worker: Worker, metrics: Metrics) -> None:
        self.served, self.worker, self.metrics = served, worker, metrics

    async def next_event(self, job: Job, deadline: float) -> tuple[str, Any]:
        """The job's next event; ``("tick", None)`` every ``POLL_S``; ApiError 504 past the deadline."""
        left = deadline - time.monotonic()
        if left <= 0:
            self.worker.cancel(job)
            raise self.timeout()
        try:
            return await asyncio.wait_for(job.events.get(), min(left, POLL_S))
        except TimeoutError:
            return "tick", None

    def prepare(self, body: bytes, kind: str) -> Plan:
        """Parse and check a body, tokenise its prompts: the request's :class:`Plan` (runs in a worker thread)."""
        data = read_json(body)
        if kind == "chat":
            chat = parse_request(data, ChatRequest)
            return build_plan(chat, self.served, lambda: chat_prompts(chat, self.served))
        req = parse_request(data, CompletionRequest)
        return build_plan(req, self.served, lambda: completion_prompts(req, self.served))

    def timeout(self) -> ApiError:
        return ApiError(504, f"the request took longer than the server's timeout of {self.served.settings.timeout_s:g} s",
                        None, "timeout", type="server_error")

    async def handle(self, request: Request, kind: str) -> Response:
        arrived = getattr(request.state, "arrived", None) or time.monotonic()  # set by RequestGuard
        deadline = arrived + self.served.settings.timeout_s
        body = await request.body()
        try:  # off the event loop; the thread finishes on its own after a timeout
            plan = await asyncio.wait_for(asyncio.to_thread(self.prepare, body, kind), deadline - time.monotonic())
        except TimeoutError:
            raise self.timeout() from None
        job = Job(plan, asyncio.get_running_loop(), arrived=arrived)
        try:
            self.worker.submit(job)
        except QueueFull as full:
            raise ApiError(503, f"the server's queue is full ({self.served.settings.queue_limit} requests waiting): "
                           f"retry after {full.retry_after} s", None, "queue_full", type="server_error",
                           headers={"Retry-After": str(full.retry_after)}) from None
        rid = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex}"
        created = int(time.time())
        if plan.stream:
            return StreamingResponse(event_stream(self, job, rid, created), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        result = await self.final(job, request)
        if result is None:
            return Response(status_code=499)  # the client is gone; nobody reads this
        return JSONResponse(response_body(plan, result, rid, created, self.served.settings.model_name))

    async def final(self, job: Job, request: Request) -> Result | None:
        deadline = job.arrived + self.served.settings.timeout_s
        while True:
            kind, data = await self.next_event(job, deadline)
            if kind == "done":
                self.metrics.observe_latency(time.monotonic() - job.arrived)
                return data
            if kind == "error":
                raise data
            if kind == "tick" and await request.is_disconnected():
                self.worker.cancel(job)
                return None


def create_app(served: Served) -> FastAPI:
    """The server for one loaded model; the engine's worker starts and stops with the app."""
    metrics = Metrics()
    worker = Worker(served, metrics)
    handler = Handler(served, worker, metrics)
    started = int(time.time())
    name = served.settings.model_name

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        worker.start()
        yield
        await worker.stop()

    app = FastAPI(title="unmask", summary="OpenAI-compatible masked diffusion server", docs_url=None, redoc_url=None,
                  lifespan=lifespan)
    app.state.worker, app.state.metrics, app.state.served = worker, metrics, served
    app.add_middleware(RequestGuard, settings=served.settings)
    app.add_middleware(CountRequests, metrics=metrics)  # added last, so outermost: it counts the guard's refusals

    @app.exception_handler(Exception)
    async def internal_error(_: Request, err: Exception) -> JSONResponse:  # logged by Starlette, then re-raised
        return _error_response(ApiError(500, f"internal server error ({type(err).__name__})", None, "internal_error",
                                        type="server_error"))

    @app.exception_handler(ApiError)
    async def api_error(_: Request, err: ApiError) -> JSONResponse:
        return _error_response(err)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, err: HTTPException) -> JSONResponse:
        code = "not_found" if err.status_code == 404 else "method_not_allowed" if err.status_code == 405 else None
        return _error_response(ApiError(err.status_code, str(err.detail), None, code))

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await handler.handle(request, "completion")

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await handler.handle(request, "chat")

    card = {"id": name, "object": "model", "created": started, "owned_by": "unmask",
            "max_model_len": served.denoiser.spec.max_length}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [card]}

    @app.get("/v1/models/{model:path}")
    async def model(model: str) -> dict[str, Any]:
        if model != name:
            raise ApiError(404, f"the model {model!r} does not exist: this server serves {name!r}", "model",
                           "model_not_found")
        return card

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": name, **worker.health()}

    @app.get("/metrics")
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/", response_class=HTMLResponse)
    async def playground() -> HTMLResponse:
        return HTMLResponse(playground_html(served))

    return app
