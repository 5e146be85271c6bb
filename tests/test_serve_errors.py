"""The server's bad-request catalogue: every malformed request is a 400/404 in OpenAI's error shape naming its field.

Runs the whole ASGI app in-process (FastAPI's TestClient) on the bundled
model; the live-server tests with the real ``openai`` client are in
``test_serve_live.py``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from unmask.serve import Served, ServeSettings, create_app  # noqa: E402
from unmask.serve.worker import QueueFull  # noqa: E402

PROMPT = "Q:26+34-6+33;"
C, CHAT = "/v1/completions", "/v1/chat/completions"
USER = [{"role": "user", "content": PROMPT}]

# (endpoint, body: dict or raw JSON text, status, param, code or None)
CASES: list[tuple[str, Any, int, str | None, str | None]] = [
    (C, '{"prompt": ', 400, None, "invalid_json"),
    (C, "[1, 2]", 400, None, "invalid_json"),
    (C, '{"prompt": "Q:1+2;", "temperature": NaN}', 400, None, "invalid_json"),
    (C, {"prompt": PROMPT, "foo": 1}, 400, "foo", "unknown_field"),
    (C, {}, 400, "prompt", "missing_field"),
    (C, {"prompt": 5}, 400, "prompt", "invalid_type"),
    (C, {"prompt": []}, 400, "prompt", None),
    (C, {"prompt": "hello"}, 400, "prompt", None),
    (C, {"prompt": [999]}, 400, "prompt", None),
    (C, {"prompt": "Q:12+34;<mask>"}, 400, "prompt", None),
    (C, {"prompt": "Q:" + "1+" * 20 + "1;"}, 400, "prompt", "context_length_exceeded"),
    (C, {"prompt": PROMPT, "max_tokens": 0}, 400, "max_tokens", None),
    (C, {"prompt": PROMPT, "max_tokens": 1000}, 400, "max_tokens", None),
    (C, {"prompt": PROMPT, "max_tokens": "32"}, 400, "max_tokens", "invalid_type"),
    (C, {"prompt": PROMPT, "max_tokens": 3.5}, 400, "max_tokens", "invalid_type"),
    (C, {"prompt": PROMPT, "max_tokens": True}, 400, "max_tokens", "invalid_type"),
    (C, {"prompt": PROMPT, "n": 0}, 400, "n", None),
    (C, {"prompt": PROMPT, "n": 100}, 400, "n", None),
    (C, {"prompt": PROMPT, "temperature": -1}, 400, "temperature", None),
    (C, {"prompt": PROMPT, "top_p": 0}, 400, "top_p", None),
    (C, {"prompt": PROMPT, "top_p": "x"}, 400, "top_p", "invalid_type"),
    (C, {"prompt": PROMPT, "top_k": 0}, 400, "top_k", None),
    (C, {"prompt": PROMPT, "planner": "nonsense"}, 400, "planner", None),
    (C, {"prompt": PROMPT, "planner": "dilated(base=1)"}, 400, "planner", None),
    (C, {"prompt": PROMPT, "planner": "topk(steps=64)"}, 400, "planner", None),
    (C, {"prompt": PROMPT, "planner": "dilated("}, 400, "planner", None),
    (C, {"prompt": PROMPT, "block_length": 0}, 400, "block_length", None),
    (C, {"prompt": PROMPT, "cache": "bogus"}, 400, "cache", None),
    (C, {"prompt": PROMPT, "cfg_scale": -1.0}, 400, "cfg_scale", None),
    (C, {"prompt": PROMPT, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop", None),
    (C, {"prompt": PROMPT, "stop": [""]}, 400, "stop", None),
    (C, {"prompt": PROMPT, "stop": 7}, 400, "stop", "invalid_type"),
    (C, {"prompt": PROMPT, "seed": -1}, 400, "seed", None),
    (C, {"prompt": PROMPT, "stream": "yes"}, 400, "stream", "invalid_type"),
    (C, {"prompt": PROMPT, "reveal_events": True}, 400, "reveal_events", None),
    (C, {"prompt": PROMPT, "stream_options": {"include_usage": True}}, 400, "stream_options", None),
    (C, {"prompt": PROMPT, "logprobs": 3}, 400, "logprobs", "unsupported_field"),
    (C, {"prompt": PROMPT, "echo": True}, 400, "echo", "unsupported_field"),
    (C, {"prompt": PROMPT, "model": "gpt-4"}, 404, "model", "model_not_found"),
    (CHAT, {"messages": []}, 400, "messages", None),
    (CHAT, {}, 400, "messages", "missing_field"),
    (CHAT, {"messages": [{"role": "robot", "content": "hi"}]}, 400, "messages[0].role", None),
    (CHAT, {"messages": [{"role": "user", "content": ""}]}, 400, "messages[0].content", None),
    (CHAT, {"messages": [{"role": "user", "content": 5}]}, 400, "messages[0].content", "invalid_type"),
    (CHAT, {"messages": [{"role": "user"}]}, 400, "messages[0].content", "missing_field"),
    (CHAT, {"messages": [{"role": "system", "content": "be brief"}, *USER]}, 400, "messages", None),
    (CHAT, {"messages": USER, "max_tokens": 8, "max_completion_tokens": 8}, 400, "max_completion_tokens", None),
    (CHAT, {"messages": USER, "tools": [{"type": "function"}]}, 400, "tools", "unsupported_field"),
    (CHAT, {"messages": USER}, 400, "messages", "chat_template_missing"),  # the bundled model has no template
]


@pytest.fixture(scope="module")
def client():
    import unmask

    den, tok = unmask.load("tiny-arith")
    app = create_app(Served(den, tok, ServeSettings(max_batch=8)))
    with TestClient(app) as c:
        yield c


def _post(client: TestClient, path: str, body: Any):
    if isinstance(body, str):
        return client.post(path, content=body, headers={"Content-Type": "application/json"})
    return client.post(path, json=body)


@pytest.mark.parametrize(("path", "body", "status", "param", "code"), CASES,
                         ids=[f"{i:02d}-{'chat' if p == CHAT else 'completion'}-{c or s}" for i, (p, _, s, _, c) in enumerate(CASES)])
def test_bad_request_is_answered_in_openai_shape(client, path, body, status, param, code) -> None:
    r = _post(client, path, body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error" and err["param"] == param and isinstance(err["message"], str)
    if code is not None:
        assert err["code"] == code
    if param is not None:  # the message names the field (its last part: messages[0].role names "role")
        assert param.split(".")[-1].split("[")[0] in err["message"], err["message"]


def test_catalogue_is_large_enough() -> None:
    assert len(CASES) >= 20


def test_server_still_answers_after_the_catalogue(client) -> None:
    for _ in range(2):
        r = client.post(C, json={"prompt": PROMPT, "max_tokens": 32})
        assert r.status_code == 200
        choice = r.json()["choices"][0]
        assert choice["finish_reason"] == "stop" and choice["text"].startswith("26+34=060;")


def test_other_prompt_forms_and_max_tokens_below_a_block(client) -> None:
    prompts = ["Q:86*2+89;", PROMPT]
    full = [client.post(C, json={"prompt": p}).json()["choices"][0]["text"] for p in prompts]
    # two prompts x n=2; a canvas of one block of 32, cut at 20 tokens
    r = client.post(C, json={"prompt": prompts, "n": 2, "max_tokens": 20, "block_length": 32})
    choices = r.json()["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2, 3]
    assert [c["text"] for c in choices] == [full[0][:20]] * 2 + [full[1][:20]] * 2
    assert all(c["finish_reason"] == "length" for c in choices) and r.json()["usage"]["completion_tokens"] == 80
    ids = client.post(C, json={"prompt": [19, 18, 12, 17], "max_tokens": 8}).json()  # "Q:9;" as token ids
    text = client.post(C, json={"prompt": "Q:9;", "max_tokens": 8}).json()
    assert ids["choices"][0]["text"] == text["choices"][0]["text"]
    empty = client.post(C, json={"prompt": "", "max_tokens": 8})  # unconditional
    assert empty.status_code == 200 and empty.json()["usage"]["prompt_tokens"] == 0


def test_unknown_route_and_method_use_the_error_shape(client) -> None:
    r = client.get("/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = client.get(C)
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


def test_full_queue_is_503_with_retry_after(client, monkeypatch) -> None:
    def full(job):  # type: ignore[no-untyped-def]
        raise QueueFull(3)

    monkeypatch.setattr(client.app.state.worker, "submit", full)
    r = client.post(C, json={"prompt": PROMPT})
    assert r.status_code == 503 and r.headers["Retry-After"] == "3"
    assert r.json()["error"]["code"] == "queue_full" and "retry after 3 s" in r.json()["error"]["message"]


def test_timeout_is_504_and_the_request_leaves_the_engine(client, monkeypatch) -> None:
    import time

    worker = client.app.state.worker
    step = worker.engine.step

    def slow():  # type: ignore[no-untyped-def]
        time.sleep(0.3)
        return step()

    monkeypatch.setattr(worker.engine, "step", slow)
    monkeypatch.setattr(client.app.state.served, "settings", ServeSettings(max_batch=8, timeout_s=0.1))
    r = client.post(C, json={"prompt": PROMPT})
    assert r.status_code == 504 and r.json()["error"]["code"] == "timeout" and "0.1 s" in r.json()["error"]["message"]
    deadline = time.monotonic() + 10
    while worker.engine.has_work and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not worker.engine.has_work  # cancelled: its rows left the engine at the next step


def test_health_metrics_and_models(client) -> None:
    assert client.get("/health").json()["status"] == "ok"
    models = client.get("/v1/models").json()
    assert models["object"] == "list" and models["data"][0]["id"] == "tiny-arith" and models["data"][0]["max_model_len"] == 64
    text = client.get("/metrics").text
    for name in ("unmask_requests_total", "unmask_queue_depth", "unmask_step_rows_bucket", "unmask_nfe_total",
                 "unmask_denoiser_calls_total", "unmask_denoiser_row_calls_total", "unmask_live_rows",
                 "unmask_request_latency_seconds_bucket"):
        assert name in text
    assert 'unmask_requests_total{endpoint="/v1/completions",code="400"}' in text
    assert client.get("/v1/models/tiny-arith").json()["id"] == "tiny-arith"
    assert client.get("/v1/models/gpt-4").json()["error"]["code"] == "model_not_found"
    client.get("/no/such/path")
    text = client.get("/metrics").text
    assert 'endpoint="other",code="404"' in text and "/no/such/path" not in text


def test_error_bodies_are_json_objects(client) -> None:
    r = _post(client, C, '{"prompt": ')
    assert r.headers["content-type"].startswith("application/json")
    assert json.loads(r.text)["error"]["message"].startswith("the request body is not valid JSON")


@pytest.mark.parametrize(("argv", "flag"), [
    (["--max-batch", "0"], "--max-batch"), (["--kv-memory", "lots"], "--kv-memory"),
    (["--queue-limit", "0"], "--queue-limit"), (["--timeout-s", "0"], "--timeout-s"),
    (["--planner", "nonsense"], "--planner"), (["--port", "70000"], "--port"), (["--threads", "0"], "--threads"),
    (["--chat-template", "/no/such/file"], "--chat-template"),
    (["--max-request-bytes", "0"], "--max-request-bytes"), (["--max-connections", "0"], "--max-connections"),
    (["--read-timeout-s", "0"], "--read-timeout-s"), (["--shutdown-timeout-s", "-1"], "--shutdown-timeout-s"),
    (["--api-key", "two words"], "--api-key"), (["--api-key", ""], "--api-key"), (["--allowed-hosts", ","], "--allowed-hosts"),
])
def test_serve_command_refuses_bad_flags_before_loading(argv: list[str], flag: str, capsys, monkeypatch) -> None:
    from unmask.cli import main

    def no_load(*a, **k):  # type: ignore[no-untyped-def]
        raise AssertionError("the model was loaded before the flags were checked")

    monkeypatch.setattr("unmask.models.load", no_load)
    assert main(["serve", *argv]) == 2
    err = capsys.readouterr().err
    assert flag in err and len(err.strip().splitlines()) == 1
