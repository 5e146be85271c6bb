"""Start ``unmask serve`` in a child process on a free loopback port and wait until it answers.

For tests, benchmarks and figure scripts that need a real server::

    with serve_process(["--max-batch", "32"]) as url:
        httpx.get(f"{url}/health")
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def serve_process(args: Sequence[str] = (), start_timeout_s: float = 180.0) -> Iterator[str]:
    """Run ``python -m unmask serve --port P *args``; yield its base URL; stop it on exit.

    Raises ``RuntimeError`` with the server's output if it exits or does not
    answer ``/health`` within ``start_timeout_s``.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen([sys.executable, "-m", "unmask", "serve", "--port", str(port), *args],
                                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            deadline = time.monotonic() + start_timeout_s
            while not _healthy(url):
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"unmask serve did not start (exit {proc.poll()}):\n{log.read()}")
                time.sleep(0.2)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
