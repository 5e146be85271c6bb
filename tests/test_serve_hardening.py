"""Hostile input against ``unmask serve``: every case is an OpenAI-shaped 4xx (or a closed connection), never a 500.

In-process (FastAPI's TestClient) for what a request's headers and body
decide; a live server (``python -m unmask serve``) with raw sockets for what
only the HTTP layer sees: silent and half-sent connections, the connection
cap, SIGTERM with a client holding half a body, and the event loop staying
free while a long prompt is tokenised.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from unmask.planners import MAX_SPEC_CHARS, MAX_SPEC_DEPTH, parse_planner  # noqa: E402
from unmask.serve import Served, ServeSettings, create_app  # noqa: E402
from unmask.serve.guard import default_allowed_hosts, host_name  # noqa: E402
from unmask.serve.launch import free_port, serve_process  # noqa: E402
from unmask.serve.playground import _PLAYGROUND_JS  # noqa: E402
from unmask.serve.schemas import MAX_DEPTH, ApiError, read_json  # noqa: E402

PROMPT = "Q:26+34-6+33;"
C, CHAT = "/v1/completions", "/v1/chat/completions"
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def tiny():
    import unmask

    return unmask.load("tiny-arith")


def make_client(tiny, **settings: Any) -> TestClient:
    den, tok = tiny
    return TestClient(create_app(Served(den, tok, ServeSettings(max_batch=8, **settings))),
                      raise_server_exceptions=False)


@pytest.fixture(scope="module")
def client(tiny):
    with make_client(tiny, max_request_bytes=4096) as c:
        yield c


def error(r: httpx.Response, status: int, code: str | None, param: str | None = None) -> str:
    """The error's message, after checking its status, OpenAI shape, code and param."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["code"] == code and err["param"] == param, err
    return err["message"]


# --- bodies -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("path", "body", "param"), [
    (C, '{"prompt": "\\ud800"}', "prompt"),
    (C, '{"prompt": ["Q:1;", "Q:2\\udfff;"]}', "prompt[1]"),
    (C, '{"prompt": "Q:1;", "planner": "dilated\\ud800"}', "planner"),
    (C, '{"prompt": "Q:1;", "stop": ["\\ud800"]}', "stop[0]"),
    (CHAT, '{"messages": [{"role": "user", "content": "\\ud800"}]}', "messages[0].content"),
    (CHAT, '{"messages": [{"role": "user", "content": [{"type": "text", "text": "a\\udc00"}]}]}', "messages[0].content[0].text"),
])
def test_lone_surrogate_is_a_400_naming_the_field(client, path: str, body: str, param: str) -> None:
    message = error(client.post(path, content=body, headers=JSON), 400, "invalid_value", param)
    assert message.startswith(param) and "surrogate" in message


def test_a_whole_surrogate_pair_is_text() -> None:
    assert read_json(b'{"prompt": "\\ud83d\\ude00"}') == {"prompt": "\U0001f600"}  # one character, not two halves


def test_json_nested_too_deep_is_a_400(client) -> None:
    for depth in (1000, MAX_DEPTH + 1):
        body = '{"prompt": "Q:1;", "logit_bias": ' + "[" * depth + "]" * depth + "}"
        assert "nests deeper" in error(client.post(C, content=body, headers=JSON), 400, "invalid_json")
    with pytest.raises(ApiError, match="nests deeper"):  # past Python's recursion limit in json.loads itself
        read_json(b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    # the limit itself: the object is level 1, so a value may hold MAX_DEPTH - 1 levels of lists
    inner = MAX_DEPTH - 1
    value, levels = read_json(('{"a": ' + "[" * inner + "]" * inner + "}").encode())["a"], 0
    while isinstance(value, list):
        value, levels = value[0] if value else None, levels + 1
    assert levels == inner
    with pytest.raises(ApiError):
        read_json(('{"a": ' + "[" * (inner + 1) + "]" * (inner + 1) + "}").encode())


def test_planner_spec_limits() -> None:
    # depth: Expression > Call > keyword > k unary operators > Constant, so k unary "+" reach depth 4 + k
    below = "dilated(base=" + "+" * (MAX_SPEC_DEPTH - 4) + "3)"
    above = "dilated(base=" + "+" * (MAX_SPEC_DEPTH - 3) + "3)"
    with pytest.raises(ValueError, match="is not a literal"):  # parsed, then refused as no literal
        parse_planner(below)
    with pytest.raises(ValueError, match="nests deeper"):
        parse_planner(above)
    with pytest.raises(ValueError, match=f"at most {MAX_SPEC_CHARS}"):
        parse_planner("dilated" + " " * MAX_SPEC_CHARS)
    long_list = "topk(counts=(" + ",".join(["1"] * 4000) + "))"  # long, shallow, and fine
    assert len(long_list) < MAX_SPEC_CHARS and parse_planner(long_list).counts == (1,) * 4000


@pytest.mark.parametrize("minus", [5000, 20_000])
def test_planner_spec_of_many_unary_minus_signs_is_a_400(tiny, minus: int) -> None:
    with make_client(tiny) as c:  # default body limit: the 20,000-sign spec fits
        r = c.post(C, json={"prompt": PROMPT, "planner": "-" * minus + "1"})
    assert "planner spec" in error(r, 400, "invalid_value", "planner")


def test_body_over_the_limit_is_413_and_closes_the_connection(client) -> None:
    r = client.post(C, content=json.dumps({"prompt": "Q:1;" * 2000}), headers=JSON)
    assert "at most 4096" in error(r, 413, "request_too_large") and r.headers["connection"] == "close"

    def chunks():  # no Content-Length: counted while it arrives
        for _ in range(10):
            yield b" " * 1000
        yield b'{"prompt": "Q:1;"}'

    r = client.post(C, content=chunks(), headers=JSON)
    assert "transfer-encoding" in r.request.headers and "content-length" not in r.request.headers
    error(r, 413, "request_too_large")
    assert client.post(C, json={"prompt": PROMPT}).status_code == 200  # under the limit


@pytest.mark.parametrize("kind", ["text/plain", "application/x-www-form-urlencoded", None])
def test_post_must_be_json(client, kind: str | None) -> None:
    headers = {} if kind is None else {"Content-Type": kind}
    r = client.post(C, content=json.dumps({"prompt": PROMPT}).encode(), headers=headers)
    assert "application/json" in error(r, 415, "unsupported_media_type")


def test_json_with_a_charset_is_json(client) -> None:
    r = client.post(C, content=json.dumps({"prompt": PROMPT}), headers={"Content-Type": "Application/JSON; charset=utf-8"})
    assert r.status_code == 200, r.text


# --- who may call -------------------------------------------------------------------------------------------

def test_api_key(tiny, monkeypatch) -> None:
    with make_client(tiny, api_key="s3cret-key") as c:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret-key"}):
            r = c.get("/v1/models", headers=headers)
            assert r.headers["www-authenticate"] == "Bearer"
            assert "API key" in error(r, 401, "invalid_api_key")
            error(c.post(C, json={"prompt": PROMPT}, headers=headers), 401, "invalid_api_key")
            error(c.get("/metrics", headers=headers), 401, "invalid_api_key")
        ok = {"Authorization": "Bearer s3cret-key"}
        assert c.get("/v1/models", headers=ok).status_code == 200
        assert c.post(C, json={"prompt": PROMPT}, headers={"authorization": "bearer s3cret-key"}).status_code == 200
        assert c.get("/health").status_code == 200 and c.get("/").status_code == 200  # open: no secrets there
        assert "id='api_key'" in c.get("/").text  # the playground asks for it
        metrics = c.get("/metrics", headers=ok).text
        assert 'endpoint="/v1/completions",code="401"} 3' in metrics
    assert "s3cret" not in repr(ServeSettings(api_key="s3cret-key"))


def test_default_allowed_hosts_follow_the_bound_address() -> None:
    assert default_allowed_hosts("127.0.0.1") == ("localhost", "127.0.0.1", "::1")
    assert default_allowed_hosts("localhost") == ("localhost", "127.0.0.1", "::1")
    assert default_allowed_hosts("127.0.0.2") == ("localhost", "127.0.0.1", "::1", "127.0.0.2")
    assert default_allowed_hosts("0.0.0.0") is None and default_allowed_hosts("::") is None
    assert default_allowed_hosts("10.1.2.3") == ("10.1.2.3",)
    assert [host_name(h) for h in ("[::1]:8000", "LocalHost.:80", "127.0.0.1", "::1")] == ["::1", "localhost", "127.0.0.1", "::1"]


def test_host_and_origin_are_checked(tiny) -> None:
    loopback = default_allowed_hosts("127.0.0.1")
    with make_client(tiny, allowed_hosts=loopback, allowed_origins=("http://localhost:3000/",)) as c:
        for host in ("127.0.0.1:8000", "localhost", "[::1]:8000"):
            assert c.get("/health", headers={"Host": host}).status_code == 200
        for host in ("evil.example:8000", "127.0.0.1.evil.example"):  # DNS rebinding names the attacker's host
            assert "Host header" in error(c.get("/health", headers={"Host": host}), 403, "host_not_allowed")
            error(c.post(C, json={"prompt": PROMPT}, headers={"Host": host}), 403, "host_not_allowed")
        same = {"Host": "127.0.0.1:8000", "Origin": "http://127.0.0.1:8000"}  # the playground's own requests
        assert c.post(C, json={"prompt": PROMPT}, headers=same).status_code == 200
        listed = {"Host": "127.0.0.1:8000", "Origin": "http://localhost:3000"}
        assert c.post(C, json={"prompt": PROMPT}, headers=listed).status_code == 200
        for origin in ("http://evil.example", "null", "http://127.0.0.1:9999"):
            r = c.post(C, json={"prompt": PROMPT}, headers={"Host": "127.0.0.1:8000", "Origin": origin})
            assert "web origin" in error(r, 403, "origin_not_allowed")
    with make_client(tiny, allowed_hosts=("*",), allowed_origins=("*",)) as c:
        r = c.post(C, json={"prompt": PROMPT}, headers={"Host": "any.example", "Origin": "http://evil.example"})
        assert r.status_code == 200


# --- errors and time ------------------------------------------------------------------------------------------

def test_unhandled_error_is_a_counted_500_in_openai_shape(client, monkeypatch) -> None:
    def broken(*a, **k):  # type: ignore[no-untyped-def]
        raise RuntimeError("boom")

    monkeypatch.setattr("unmask.serve.app.build_plan", broken)
    before = client.get("/metrics").text
    assert 'code="500"' not in before
    r = client.post(C, json={"prompt": PROMPT})
    assert "RuntimeError" in error(r, 500, "internal_error") and r.json()["error"]["type"] == "server_error"
    client.post(C, json={"prompt": PROMPT})
    assert 'unmask_requests_total{endpoint="/v1/completions",code="500"} 2' in client.get("/metrics").text


def test_timeout_counts_from_arrival_and_covers_parsing(tiny, monkeypatch) -> None:
    from unmask.serve import app as app_module

    real = app_module.build_plan

    def slow(*a, **k):  # type: ignore[no-untyped-def]
        time.sleep(1.5)
        return real(*a, **k)

    monkeypatch.setattr(app_module, "build_plan", slow)
    with make_client(tiny, timeout_s=0.3) as c:
        t0 = time.monotonic()
        r = c.post(C, json={"prompt": PROMPT})
        assert "0.3 s" in error(r, 504, "timeout") and time.monotonic() - t0 < 1.2  # not after the 1.5 s parse
    with make_client(tiny, timeout_s=5.0) as c:
        assert c.post(C, json={"prompt": PROMPT}).status_code == 200


def test_flags_become_settings(monkeypatch) -> None:
    from unmask.cli import build_parser
    from unmask.cli.serve import settings_from

    def settings(*argv: str) -> ServeSettings:
        return settings_from(build_parser().parse_args(["serve", *argv]))

    monkeypatch.delenv("UNMASK_API_KEY", raising=False)
    s = settings()
    assert s.api_key is None and s.allowed_hosts == ("localhost", "127.0.0.1", "::1") and s.allowed_origins == ()
    assert settings("--host", "0.0.0.0").allowed_hosts is None
    s = settings("--allowed-hosts", "Example.org, [::1]", "--allowed-origins", "http://a.example:3000/")
    assert s.allowed_hosts == ("example.org", "::1") and s.allowed_origins == ("http://a.example:3000",)
    monkeypatch.setenv("UNMASK_API_KEY", "from-env")
    assert settings().api_key == "from-env" and settings("--api-key", "flag").api_key == "flag"


# --- the playground ----------------------------------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("node") is None, reason="node not installed")
def test_playground_shows_an_error_body_that_is_not_json(tmp_path) -> None:
    start = _PLAYGROUND_JS.index("async function errorText")
    source = _PLAYGROUND_JS[start:_PLAYGROUND_JS.index("// end errorText")]
    script = tmp_path / "error_text.mjs"
    script.write_text(source + """
const cases = [
  new Response('<html><body><h1>502 Bad Gateway</h1><hr>nginx</body></html>', {status: 502, statusText: 'Bad Gateway'}),
  new Response('Service Unavailable', {status: 503}),
  new Response('', {status: 500}),
  new Response(JSON.stringify({error: {message: 'n must be an int'}}), {status: 400}),
];
for (const res of cases) console.log(await errorText(res));
""")
    out = subprocess.run(["node", str(script)], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.splitlines() == ["error 502 Bad Gateway: 502 Bad Gateway nginx", "error 503: Service Unavailable",
                                "error 500: (empty body)", "error 400: n must be an int"]


# --- a live server: what only the HTTP layer sees ------------------------------------------------------------

READ_TIMEOUT_S = 2.0
MAX_CONNECTIONS = 12


FD_LIMIT = 200  # the server's open files: 250 silent sockets once exhausted it


@pytest.fixture(scope="module")
def server():
    resource = pytest.importorskip("resource")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    launch = serve_process(["--read-timeout-s", str(READ_TIMEOUT_S), "--max-connections", str(MAX_CONNECTIONS),
                            "--log-level", "warning"])
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(FD_LIMIT, soft), hard))  # inherited by the server only:
    try:
        url = launch.__enter__()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))  # this process opens 250 sockets below
    try:
        yield url
    finally:
        launch.__exit__(None, None, None)


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _read_all(sock: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    t0, data = time.monotonic(), b""
    while chunk := sock.recv(65536):
        data += chunk
    return data, time.monotonic() - t0


def _closed_metric(url: str, reason: str) -> int:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(f'unmask_connections_closed_total{{reason="{reason}"}}'):
            return int(line.split()[-1])
    raise AssertionError(f"no closed-connection count for {reason}")


def test_silent_and_half_sent_headers_are_closed(server: str) -> None:
    before = _closed_metric(server, "read_timeout")
    head = b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    for sent in (b"", head):
        with _connect(server) as sock:
            sock.sendall(sent)
            data, waited = _read_all(sock)
        assert data == b"" and READ_TIMEOUT_S * 0.8 < waited < READ_TIMEOUT_S + 3
    assert _closed_metric(server, "read_timeout") == before + 2


def test_half_sent_body_is_408_then_closed(server: str) -> None:
    body = json.dumps({"prompt": PROMPT}).encode()
    with _connect(server) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body[: len(body) // 2])
        data, waited = _read_all(sock)
    head, _, payload = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ") and b"connection: close" in head.lower()
    assert json.loads(payload)["error"]["code"] == "request_timeout" and waited < READ_TIMEOUT_S + 3


def test_connections_over_the_limit_are_refused_at_once(server: str) -> None:
    before = _closed_metric(server, "limit")
    socks = [_connect(server) for _ in range(250)]  # silent, more than the server may hold open
    refused = held = 0
    t0 = time.monotonic()
    try:
        for sock in socks:
            data, _ = _read_all(sock)  # a refusal at once, or nothing once the read deadline closes it
            head, _, payload = data.partition(b"\r\n\r\n")
            if data:
                assert head.startswith(b"HTTP/1.1 503 ") and b"retry-after: 1" in head.lower()
                assert json.loads(payload)["error"]["code"] == "too_many_connections"
            refused, held = refused + bool(data), held + (not data)
    finally:
        for sock in socks:
            sock.close()
    assert held <= MAX_CONNECTIONS and time.monotonic() - t0 < READ_TIMEOUT_S + 5  # so >= 238 refused
    assert _closed_metric(server, "limit") == before + refused
    assert httpx.post(f"{server}{C}", json={"prompt": PROMPT}, timeout=60).status_code == 200  # and it still serves


def test_health_answers_while_a_long_prompt_is_tokenised(server: str) -> None:
    prompt = "Q:1+2;" * 40_000  # 240 kB: seconds of tokenising for the bundled tokenizer, then too long for it
    answer: dict[str, Any] = {}

    def post() -> None:
        t0 = time.monotonic()
        answer["response"] = httpx.post(f"{server}{C}", json={"prompt": prompt}, timeout=120)
        answer["seconds"] = time.monotonic() - t0

    thread = threading.Thread(target=post)
    thread.start()
    time.sleep(0.2)
    health = []
    while thread.is_alive():
        t0 = time.monotonic()
        assert httpx.get(f"{server}/health", timeout=60).status_code == 200
        health.append(time.monotonic() - t0)
        time.sleep(0.05)
    thread.join()
    error(answer["response"], 400, "context_length_exceeded", "prompt")
    assert len(health) >= 3 and max(health) < answer["seconds"] / 3, (health, answer["seconds"])


def test_sigterm_does_not_wait_for_a_half_sent_body() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "unmask", "serve", "--port", str(port), "--read-timeout-s", "120",
                             "--shutdown-timeout-s", "1", "--log-level", "warning"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
        with _connect(url) as sock:
            sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100\r\n\r\n{\"prompt\": ")
            time.sleep(0.3)
            t0 = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
            assert time.monotonic() - t0 < 10  # the 1 s shutdown deadline, not the 120 s body deadline
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
