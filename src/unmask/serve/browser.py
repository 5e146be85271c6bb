"""Drive headless Chromium over the DevTools protocol on a pipe: open a page, wait for it, screenshot it.

A live page (the playground fills its canvas from a stream) cannot be caught
by ``chromium --screenshot``, which shoots at load time. With
``--remote-debugging-pipe`` Chromium reads protocol commands from fd 3 and
writes answers to fd 4 as NUL-terminated JSON, so no WebSocket client is
needed. Used by the playground's browser test and to make the README figure::

    python -m unmask.serve.browser 'http://127.0.0.1:8000/?autorun=1' docs/serve_playground.png
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ..tiny.figures import CHROMIUM_FLAGS, find_chromium

DONE = "document.getElementById('status').textContent.startsWith('done')"


class Chromium:
    """One headless browser with one page; use as a context manager."""

    def __init__(self, width: int = 1100, height: int = 700, chromium: str | None = None) -> None:
        binary = chromium or find_chromium()
        if binary is None:
            raise FileNotFoundError("chromium not found: apt-get install -y chromium")
        self.profile = tempfile.mkdtemp(prefix="unmask-chromium-")
        to_r, self._to = os.pipe()  # commands: we write, Chromium reads fd 3
        self._from, from_w = os.pipe()  # answers: Chromium writes fd 4, we read

        def fds() -> None:  # in the child: the pipe ends at 3 and 4 (moved out of the way first)
            a, b = os.dup(to_r), os.dup(from_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen([binary, *CHROMIUM_FLAGS, "--remote-debugging-pipe", f"--user-data-dir={self.profile}",
                                      "about:blank"], preexec_fn=fds, close_fds=False,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_r)
        os.close(from_w)
        self._buf, self._id, self.errors = b"", 0, []  # errors: exceptions the page threw
        page = next(t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]
        self.call("Runtime.enable", session=True)
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height,
                  deviceScaleFactor=1, mobile=False)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from], [], [], left)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._from, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed its DevTools pipe")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, session: bool = False, timeout: float = 30.0, **params: Any) -> dict[str, Any]:
        """Send one command and return its result; page exceptions seen meanwhile go to ``errors``."""
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        os.write(self._to, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._read(deadline)
            if answer.get("method") == "Runtime.exceptionThrown":
                self.errors.append(answer["params"]["exceptionDetails"].get("exception", {}).get("description", "?"))
            if answer.get("id") == self._id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})

    def open(self, url: str) -> None:
        self.call("Page.navigate", session=True, url=url)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 30.0) -> None:
        """Poll until ``expression`` is truthy in the page; ``TimeoutError`` otherwise."""
        deadline = time.monotonic() + timeout
        while not self.evaluate(expression):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the page did not reach {expression!r} within {timeout} s; errors: {self.errors}")
            time.sleep(0.05)

    def screenshot(self, path: str | Path) -> Path:
        data = self.call("Page.captureScreenshot", session=True, format="png")["data"]
        path = Path(path)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.call("Browser.close", timeout=5.0)
            except (TimeoutError, RuntimeError, OSError):
                self.proc.kill()  # it would not close itself: end it
            self.proc.wait(timeout=10)
        for fd in (self._to, self._from):
            os.close(fd)
        shutil.rmtree(self.profile, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Screenshot a page once a condition holds (default: the playground is done).")
    p.add_argument("url")
    p.add_argument("out")
    p.add_argument("--wait", default=DONE,
                   help="JavaScript expression to wait for (default: the playground's status reads 'done', which "
                        "happens only after a generation: give the playground's URL with ?autorun=1)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for it (default 30)")
    p.add_argument("--then", default=None, help="JavaScript to run once the condition holds, before the shot")
    p.add_argument("--size", default="1100,700", help="window width,height")
    args = p.parse_args(argv)
    width, height = (int(v) for v in args.size.split(","))
    try:
        with Chromium(width, height) as browser:
            browser.open(args.url)
            browser.wait_for(args.wait, args.timeout)
            if args.then:
                browser.evaluate(args.then)
                time.sleep(0.5)  # let the page's colour transitions finish
            print(browser.screenshot(args.out))
    except (TimeoutError, FileNotFoundError) as err:
        hint = ""
        if isinstance(err, TimeoutError) and args.wait == DONE and "autorun=1" not in args.url:
            hint = (" (the default --wait holds only once a generation is done: open the playground with ?autorun=1, "
                    "e.g. http://127.0.0.1:8000/?autorun=1, or give --wait)")
        print(f"error: {err}{hint}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
