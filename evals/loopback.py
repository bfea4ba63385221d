"""Servers on loopback for tests and benchmarks: a free port, and a process started and waited for."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
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


def start_llama_server(model_path: str, log: int | IO[Any] = subprocess.DEVNULL) -> tuple[subprocess.Popen, str]:
    """llama-cpp-python's OpenAI-compatible server on a free loopback port with a GGUF; (the process, its /v1 URL)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", model_path, "--host", "127.0.0.1", "--port", str(port)]
    # requests queue rather than cut each other short (the server's default interrupts a stream for a new request)
    cmd += ["--n_ctx", "4096", "--cache", "true", "--interrupt_requests", "false"]
    ready = lambda: urllib.request.urlopen(url + "/models", timeout=2).read()  # noqa: E731
    return start_server(cmd, ready, 180, log, "llama_cpp.server"), url


def stop_server(proc: subprocess.Popen) -> None:
    """Stop a server started by start_server: terminate, then kill after 30 s."""
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
