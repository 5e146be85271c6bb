"""``unmask serve`` as a user meets it: a live server on 127.0.0.1, the real ``openai`` client, a browser.

One server process (``python -m unmask serve`` on a free port, with a chat
template so that chat works on the bundled model) serves the whole module.
Answers are checked against offline :func:`unmask.generate` on the same
prompts in this process.
"""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

import unmask  # noqa: E402
from unmask.serve.launch import serve_process  # noqa: E402
from unmask.tiny.figures import find_chromium  # noqa: E402

PROMPTS = ["Q:26+34-6+33;", "Q:7+5;", "Q:86*2+89;", "Q:45-9+12;", "Q:61+27;", "Q:33*3-17;"]
TEMPLATE = "{{ (messages | selectattr('role', 'equalto', 'user') | list)[-1]['content'] }}"  # the last user turn


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    template = tmp_path_factory.mktemp("serve") / "chat.jinja"
    template.write_text(TEMPLATE)
    with serve_process(["--max-batch", "16", "--chat-template", str(template),
                        "--log-level", "warning"]) as url:
        yield url


@pytest.fixture(scope="module")
def client(server: str):
    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def tiny():
    return unmask.load("tiny-arith")


def offline(tiny, prompts: list[str], block_length: int = 32, seed: int | None = None, **sampling) -> list[str]:  # type: ignore[no-untyped-def]
    den, tok = tiny
    ids = unmask.encode_prompts(tok, prompts, chat=False, add_bos=den.add_bos)
    cfg = unmask.GenerationConfig(gen_length=32, block_length=block_length, sampling=sampling, seed=seed)
    return unmask.generate(den, ids, cfg, tokenizer=tok).texts  # type: ignore[return-value]


def test_models_and_completion_equal_offline_generate(client, tiny) -> None:
    assert [m.id for m in client.models.list().data] == ["tiny-arith"]
    out = client.completions.create(model="tiny-arith", prompt=PROMPTS[0], max_tokens=32)
    choice = out.choices[0]
    assert choice.text == offline(tiny, PROMPTS[:1])[0] and choice.finish_reason == "stop"
    assert out.usage.prompt_tokens == len(PROMPTS[0]) and out.usage.completion_tokens == len(choice.text)
    assert out.model_extra["unmask"]["nfe"] == [5]  # DUS, one block of 32: log2(32) calls


def test_chat_uses_the_template(client) -> None:
    # every message must be text the tokenizer knows (the bundled one knows digits and "+-*=;:QA "),
    # even one the template leaves out
    messages = [{"role": "system", "content": "A:"}, {"role": "user", "content": PROMPTS[2]}]
    chat = client.chat.completions.create(model="tiny-arith", messages=messages)
    plain = client.completions.create(model="tiny-arith", prompt=PROMPTS[2])
    assert chat.object == "chat.completion" and chat.choices[0].message.role == "assistant"
    assert chat.choices[0].message.content == plain.choices[0].text


def test_concurrent_requests_batch_and_keep_their_answers(client, tiny) -> None:
    def ask(prompt: str):  # type: ignore[no-untyped-def]
        return client.completions.create(model="tiny-arith", prompt=prompt)

    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        answers = list(pool.map(ask, PROMPTS))
    assert [a.choices[0].text for a in answers] == offline(tiny, PROMPTS)
    assert max(a.model_extra["unmask"]["batch_rows"] for a in answers) > 1  # some shared a generate call


@pytest.mark.parametrize("chat", [False, True], ids=["completion", "chat"])
def test_streaming_chunks_add_up_to_the_answer(client, chat: bool) -> None:
    extra = {"block_length": 8}
    if chat:
        stream = client.chat.completions.create(model="tiny-arith", messages=[{"role": "user", "content": PROMPTS[0]}],
                                                stream=True, extra_body=extra, stream_options={"include_usage": True})
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        whole = client.chat.completions.create(model="tiny-arith", messages=[{"role": "user", "content": PROMPTS[0]}],
                                               extra_body=extra).choices[0].message.content
        assert chunks[0].choices[0].delta.role == "assistant"
    else:
        stream = client.completions.create(model="tiny-arith", prompt=PROMPTS[0], stream=True, extra_body=extra,
                                           stream_options={"include_usage": True})
        chunks = list(stream)
        text = "".join(c.choices[0].text for c in chunks if c.choices)
        whole = client.completions.create(model="tiny-arith", prompt=PROMPTS[0], extra_body=extra).choices[0].text
    assert text == whole
    content = [c for c in chunks if c.choices and (c.choices[0].delta.content if chat else c.choices[0].text)]
    assert 2 <= len(content) <= 4  # one chunk per finished block (4 blocks of 8; the answer may end early)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.completion_tokens == len(whole)


def test_n_choices_have_their_own_seeds(client, tiny) -> None:
    kw = {"model": "tiny-arith", "prompt": PROMPTS[3], "n": 3, "temperature": 1.5, "seed": 7}
    first, again = client.completions.create(**kw), client.completions.create(**kw)
    texts = [c.text for c in first.choices]
    assert [c.index for c in first.choices] == [0, 1, 2]
    assert texts == [c.text for c in again.choices]  # same seed, same samples
    assert texts == offline(tiny, [PROMPTS[3]] * 3, seed=7, temperature=1.5)  # choice k: derive_seed(seed, k)


def test_errors_reach_the_openai_client(client) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        client.completions.create(model="tiny-arith", prompt=PROMPTS[0], extra_body={"planner": "dilated(base=1)"})
    assert bad.value.body["param"] == "planner" and "base must be an int >= 2" in bad.value.body["message"]
    with pytest.raises(openai.BadRequestError) as bad:
        client.completions.create(model="tiny-arith", prompt=PROMPTS[0], n=0)
    assert bad.value.body["param"] == "n"
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-4", prompt=PROMPTS[0])


def _events(server: str, body: dict) -> list[dict]:
    with httpx.stream("POST", f"{server}/v1/completions", json=body, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(x) for x in lines[:-1]]


def test_reveal_events_replay_the_canvas(server: str) -> None:
    events = _events(server, {"prompt": PROMPTS[0], "stream": True, "reveal_events": True, "block_length": 8, "n": 2})
    reveal = [e["reveal"] for e in events if e["object"] == "unmask.reveal"]
    start, calls, done = reveal[0], reveal[1:-1], reveal[-1]
    assert start["type"] == "start" and start["expected_calls"] == 12 and len(start["colors"]) == 12
    assert {c["type"] for c in calls} == {"call"} and done["type"] == "done"
    for row in done["rows"]:
        canvas: dict[int, int] = {}
        for c in calls:
            for r in c["rows"]:
                if r["index"] == row["index"]:
                    assert not set(r["positions"]) & set(canvas)  # each position revealed once
                    canvas.update({p: c["call"] for p in r["positions"]})
        revealed = [i for i, k in enumerate(row["calls"]) if k >= 0]
        assert sorted(canvas) == revealed and [canvas[i] for i in revealed] == [row["calls"][i] for i in revealed]
        assert row["num_calls"] == len(row["colors"]) == len({canvas[i] for i in revealed})


def test_disconnected_stream_does_not_disturb_the_server(server: str, client) -> None:
    with httpx.stream("POST", f"{server}/v1/completions", timeout=60,
                      json={"prompt": PROMPTS[1], "stream": True, "reveal_events": True, "block_length": 8}) as r:
        next(r.iter_lines())  # read one event, then hang up
    assert client.completions.create(model="tiny-arith", prompt=PROMPTS[1]).choices[0].finish_reason == "stop"
    deadline = time.monotonic() + 10  # the server notices when it next writes to the closed connection
    while not re.search(r"^unmask_cancelled_total [1-9]", metrics := httpx.get(f"{server}/metrics").text, re.M):
        assert time.monotonic() < deadline, metrics
        time.sleep(0.1)
    assert "unmask_queue_depth 0" in metrics


@pytest.mark.skipif(find_chromium() is None, reason="chromium not installed (apt-get install -y chromium to test the page)")
def test_playground_fills_the_canvas_in_headless_chromium(server: str, tiny, tmp_path: Path) -> None:
    from unmask.serve.browser import DONE, Chromium

    page = httpx.get(server).text
    assert "http" not in page.replace(server, "") and "src=" not in page and "url(" not in page  # self-contained
    with Chromium() as browser:
        browser.open(f"{server}/?autorun=1&n=2&block_length=8&prompt={PROMPTS[2].replace('+', '%2B')}")
        browser.wait_for(DONE, timeout=60)
        answers = browser.evaluate("[...document.querySelectorAll('.answer')].map(e => e.textContent)")
        masked = browser.evaluate("document.querySelectorAll('.tok.masked').length")
        cells = browser.evaluate("document.querySelectorAll('.tokens .tok').length")
        colours = browser.evaluate("new Set([...document.querySelectorAll('.tokens .tok')].map(e => e.style.backgroundColor)).size")
        browser.evaluate("document.getElementById('first').click()")  # the replay's controls: back to all masked
        rewound = browser.evaluate("document.querySelectorAll('.tok.masked').length")
        shot = browser.screenshot(tmp_path / "playground.png")
        assert browser.errors == []
    assert answers == offline(tiny, [PROMPTS[2]] * 2, block_length=8)
    assert masked == 0 and cells == 64 and colours >= 6 and rewound == 64
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10000
