"""Servers on loopback for tests and benchmarks: a free port, and a process started and waited for."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from typing import IO, Any


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(
    cmd: list[str],
    ready: Callable[[], object],
    timeout: float = 180,
    log: int | IO[Any] = subprocess.DEVNULL,
    what: str = "server",
) -> subprocess.Popen:
    """Start `cmd` and wait until `ready()` stops raising; kill it and raise RuntimeError if it never does."""
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + timeout
    while True:
        try:
            ready()
            return proc
        except Exception:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise RuntimeError(f"{what} did not start ({' '.join(cmd[:4])} ...)") from None
            time.sleep(0.3)


def stop_server(proc: subprocess.Popen) -> None:
    """Stop a server started by start_server: terminate, then kill after 30 s."""
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
