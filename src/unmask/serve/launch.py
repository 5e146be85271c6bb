"""Start ``unmask serve`` in a child process on a free loopback port and wait until it answers.

For tests, benchmarks and figure scripts that need a real server::

    with serve_process(["--max-batch", "32"]) as url:
        httpx.get(f"{url}/health")
"""

from __future__ import annotations

import errno
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


def check_port(host: str, port: int) -> None:
    """Refuse, in one line, an address the server could not bind: a port in use, a privileged port, a bad host.

    Binds and closes a socket with ``SO_REUSEADDR``, as uvicorn does, so only a
    port another process listens on is "in use". Port 0 (any free port) passes.
    """
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise ValueError(f"--host {host!r} is not an address of this machine ({err.strerror})") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise ValueError(f"--port {port}: {host}:{port} is already in use by another process; stop it or "
                                 "give another --port") from None
            if err.errno == errno.EACCES:
                raise ValueError(f"--port {port}: binding {host}:{port} needs privileges here (ports below 1024 "
                                 "usually do); give a port >= 1024") from None
            raise ValueError(f"--host {host!r} --port {port} cannot be bound: {err.strerror}") from None


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
