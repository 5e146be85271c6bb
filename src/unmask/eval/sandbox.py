"""Running untrusted Python (generated code, benchmark tests) in a contained child process.

:func:`run_untrusted` writes the program into a fresh temporary directory and
runs it with ``python -I -B`` in a new session, with:

- a wall-clock timeout and a CPU-time limit (``RLIMIT_CPU``); when the
  program ends, for whatever reason, its whole process group is killed, so no
  process it started outlives it;
- an address-space limit (``RLIMIT_AS``, so a memory bomb raises MemoryError),
  a file-size limit (``RLIMIT_FSIZE``) and no core dumps;
- the temporary directory as working directory, ``HOME`` and ``TMPDIR``, and a
  scrubbed environment (no inherited variables, so no secrets);
- an audit hook (PEP 578), installed before the program runs, that refuses
  writes, renames and deletions outside the temporary directory, new
  processes (fork, exec, subprocess, os.system), signals to other processes,
  sockets and ctypes.

The limits are applied by the child to itself, before the program is read, so
the caller may run many programs from threads. This contains mistakes and the
ordinary failure modes of generated code (loops, memory bombs, stray writes);
it is not a security boundary against code written to escape it: use a
container or VM for that.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BOOT = r'''
import os, resource, sys
cpu_s, memory_bytes, file_bytes, program = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
resource.setrlimit(resource.RLIMIT_FSIZE, (file_bytes, file_bytes))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
ROOT = os.path.realpath(os.getcwd())
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
PATH_EVENTS = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.link", "os.symlink",
               "os.truncate", "os.utime", "os.chflags", "os.lchflags", "os.mkfifo", "os.mknod", "shutil.rmtree",
               "shutil.move", "shutil.copyfile", "shutil.copytree", "shutil.chown", "os.chdir", "os.chroot"}
DENIED = {"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
          "os.startfile", "pty.spawn", "os.kill", "os.killpg", "signal.pthread_kill", "ctypes.dlopen",
          "ctypes.dlsym", "ctypes.cdata", "ctypes.call_function", "ctypes.addressof", "os.setuid", "os.setgid",
          "resource.setrlimit", "resource.prlimit", "socket.__new__", "socket.connect", "socket.bind",
          "socket.sendto", "socket.getaddrinfo", "webbrowser.open"}

def inside(path):
    if isinstance(path, int):
        return True  # an already open descriptor: checked when it was opened
    try:
        real = os.path.realpath(os.fsdecode(path))
    except (TypeError, ValueError):
        return False
    return real == ROOT or real.startswith(ROOT + os.sep)

def hook(event, args):
    if event == "open":
        path, mode, flags = (tuple(args) + (None, None, None))[:3]
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (isinstance(flags, int) and flags & WRITE_FLAGS)
        if writing and path is not None and not inside(path):
            raise PermissionError(f"sandbox: writing {path!r} outside the sandbox directory is not allowed")
    elif event in PATH_EVENTS:
        for arg in args:
            if isinstance(arg, (str, bytes, os.PathLike)) and not inside(arg):
                raise PermissionError(f"sandbox: {event} on {arg!r} outside the sandbox directory is not allowed")
    elif event in DENIED:
        raise PermissionError(f"sandbox: {event} is not allowed")

with open(program, encoding="utf-8") as fh:
    source = fh.read()
sys.addaudithook(hook)
sys.argv = [program]
exec(compile(source, program, "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
'''

STATUSES = ("passed", "failed", "timeout", "memory", "blocked")


@dataclass(frozen=True)
class Result:
    """Outcome of one untrusted program: ``passed`` iff it exited 0 within its limits."""

    passed: bool
    status: str  # one of STATUSES
    stdout: str
    stderr: str
    returncode: int | None = None
    seconds: float = 0.0


def _status(returncode: int | None, timed_out: bool, stderr: str) -> str:
    if timed_out or returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        return "timeout"
    if returncode == 0:
        return "passed"
    if "MemoryError" in stderr:
        return "memory"
    if "PermissionError: sandbox:" in stderr:
        return "blocked"
    return "failed"


def _exited(pid: int, timeout_s: float) -> bool:
    """Wait until process ``pid`` exits or ``timeout_s`` passes; True if it exited.

    The exited process is left unreaped (``WNOWAIT``): as a zombie it still
    holds its pid, so its process group id cannot be reused by an unrelated
    process before the caller kills the group.
    """
    deadline = time.monotonic() + timeout_s
    delay = 0.0005
    while True:
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(delay, remaining))
        delay = min(2 * delay, 0.02)


def _read(path: Path, limit: int) -> str:
    with path.open("rb") as fh:
        data = fh.read(limit + 1)
    text = data[:limit].decode("utf-8", errors="replace")
    return text + ("\n[output truncated]" if len(data) > limit else "")


def _remove(workdir: Path) -> None:
    def retry(func, path, _exc):  # type: ignore[no-untyped-def]
        os.chmod(path, 0o700)  # the program may have made its files read-only
        func(path)

    try:
        shutil.rmtree(workdir, onerror=retry)
    except OSError as err:
        print(f"unmask.sandbox: could not remove {workdir}: {err}", file=sys.stderr)


def run_untrusted(
    code: str,
    timeout_s: float = 10.0,
    memory_mb: int = 1024,
    *,
    file_mb: int = 16,
    max_output: int = 65536,
    python: str | None = None,
) -> Result:
    """Run ``code`` as a Python program under the limits described in the module docstring.

    Never raises for anything the program does: loops, crashes, memory bombs
    and blocked operations come back as a failed :class:`Result`.
    """
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0 seconds, got {timeout_s!r}")
    if not isinstance(memory_mb, int) or memory_mb < 64:
        raise ValueError(f"memory_mb must be an int >= 64 (the interpreter needs room), got {memory_mb!r}")
    workdir = Path(tempfile.mkdtemp(prefix="unmask-sandbox-"))
    try:
        (workdir / "program.py").write_text(code, encoding="utf-8")
        (workdir / ".boot.py").write_text(BOOT, encoding="utf-8")
        env = {"PATH": os.defpath, "HOME": str(workdir), "TMPDIR": str(workdir), "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}
        cmd = [python or sys.executable, "-I", "-B", str(workdir / ".boot.py"), str(math.ceil(timeout_s) + 1),
               str(memory_mb * 1024 * 1024), str(file_mb * 1024 * 1024), str(workdir / "program.py")]
        out_path, err_path = workdir / ".stdout", workdir / ".stderr"
        t0 = time.perf_counter()
        with out_path.open("wb") as out, err_path.open("wb") as err:
            proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    start_new_session=True)
            try:
                timed_out = not _exited(proc.pid, timeout_s)
            finally:  # on exit, timeout or any error here: nothing the program started survives it
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        seconds = time.perf_counter() - t0
        stdout, stderr = _read(out_path, max_output), _read(err_path, max_output)
        status = _status(proc.returncode, timed_out, stderr)
        return Result(status == "passed", status, stdout, stderr, proc.returncode, seconds)
    finally:
        _remove(workdir)
