"""run_untrusted: loops, memory bombs, stray writes, processes and sockets are contained and reported."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pytest

from unmask.eval.sandbox import run_untrusted


def _leftover_sandboxes() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("unmask-sandbox-*")}


def test_a_good_program_passes_and_sees_no_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNMASK_TEST_SECRET", "hunter2")
    res = run_untrusted("import os\nprint(sorted(os.environ))\nprint(os.getcwd())\nassert 1 + 1 == 2")
    assert res.passed and res.status == "passed" and res.returncode == 0
    assert "UNMASK_TEST_SECRET" not in res.stdout and "hunter2" not in res.stdout
    assert "unmask-sandbox-" in res.stdout  # it ran in its own temporary directory


def test_infinite_loop_is_stopped() -> None:
    before = _leftover_sandboxes()
    res = run_untrusted("while True:\n    pass", timeout_s=1.0)
    assert not res.passed and res.status == "timeout" and res.seconds < 5
    assert _leftover_sandboxes() <= before  # its directory is gone


def test_memory_bomb_is_stopped() -> None:
    res = run_untrusted("blocks = []\nwhile True:\n    blocks.append(bytearray(10**7))", timeout_s=10, memory_mb=256)
    assert not res.passed and res.status == "memory" and "MemoryError" in res.stderr


def test_writes_outside_the_sandbox_are_blocked(tmp_path: Path) -> None:
    target = tmp_path / "escape.txt"
    res = run_untrusted(f"open({str(target)!r}, 'w').write('x')")
    assert not res.passed and res.status == "blocked" and not target.exists()
    victim = tmp_path / "keep.txt"
    victim.write_text("keep")
    res = run_untrusted(f"import os\nos.remove({str(victim)!r})")
    assert res.status == "blocked" and victim.read_text() == "keep"
    assert run_untrusted("open('inside.txt', 'w').write('ok')\nprint(open('inside.txt').read())").stdout == "ok\n"


@pytest.mark.parametrize("code", ["import subprocess\nsubprocess.run(['true'])", "import os\nos.system('true')",
                                  "import socket\nsocket.socket()", "import os\nos.fork()"])
def test_processes_and_sockets_are_blocked(code: str) -> None:
    assert run_untrusted(code).status == "blocked"


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="timeout_s must be > 0"):
        run_untrusted("pass", timeout_s=0)
    with pytest.raises(ValueError, match="memory_mb must be an int >= 64"):
        run_untrusted("pass", memory_mb=8)


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its reaper counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


@pytest.mark.parametrize("how", ["exits", "times out"])
def test_processes_the_program_started_do_not_outlive_it(tmp_path: Path, how: str) -> None:
    """A program that starts a background process and then ends leaves nothing running behind it."""
    interpreter = tmp_path / "python"  # stands in for the interpreter: starts a sleeper, prints its pid, ends
    interpreter.write_text("#!/bin/sh\nsleep 60 &\necho $!\n" + ("exit 0\n" if how == "exits" else "wait\n"))
    interpreter.chmod(0o755)
    res = run_untrusted("pass", timeout_s=1.0, python=str(interpreter))
    assert res.status == ("passed" if how == "exits" else "timeout")
    pid = int(res.stdout.split()[0])
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid), f"process {pid} started by the program is still running"
