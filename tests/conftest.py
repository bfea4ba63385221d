"""Shared fixtures: a test home, the real data, real indexes of both catalogs, a Chroma server and a throwaway
PostgreSQL cluster on loopback, and `recagent serve` processes started as users start them."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import chromadb
import psycopg
import pytest

from recagent.evals.loopback import free_port, start_server, stop_server
from recagent.tools.catalog import load_catalog
from recagent.tools.images import image_encoder
from recagent.tools.index import CatalogIndex
from recagent.tools.settings import Settings
from recagent.tools.store import close_all

BIN = Path(sys.executable).parent
RECAGENT = str(BIN / "recagent")  # the installed command, run as users run it


def run_cli(env: dict, *args: str, stdin: str | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """`recagent ARGS` as users run it (the installed command), its output captured as text."""
    return subprocess.run([RECAGENT, *args], env=env, input=stdin, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def settings(tmp_path_factory) -> Settings:
    """Settings with a fresh home; data from RECAGENT_DATA or ../shared/data; the user's model cache."""
    home = tmp_path_factory.mktemp("home")
    s = Settings.load(home=home)
    if s.data is None or not (s.data / "movielens" / "movies.csv").is_file():
        pytest.exit("the test suite needs the data folder (../shared/data beside the checkout, or RECAGENT_DATA)", 2)
    return s


@pytest.fixture(scope="session")
def env(settings) -> dict:
    """Environment for running the real `recagent` command against the test home."""
    return {
        **os.environ,
        "RECAGENT_HOME": str(settings.home),
        "RECAGENT_DATA": str(settings.data),
        "RECAGENT_CACHE": str(settings.cache),
    }


def _index(settings: Settings, catalog: str):
    idx = CatalogIndex(catalog, settings)
    report = idx.index(load_catalog(catalog, settings), progress=False)
    assert not report.interrupted
    return idx


@pytest.fixture(scope="session")
def movies(settings):
    """The movie catalog, read from the data folder (not indexed)."""
    return load_catalog("movies", settings)


@pytest.fixture(scope="session")
def movies_index(settings):
    return _index(settings, "movies")


@pytest.fixture(scope="session")
def fashion_index(settings):
    return _index(settings, "fashion")


@pytest.fixture(scope="session")
def fashion_images(settings, fashion_index):
    """The fashion index with its product photos embedded by the shipped image encoder."""
    report = fashion_index.index_images(
        load_catalog("fashion", settings), image_encoder(settings, "fashion"), progress=False
    )
    assert report.added + report.unchanged + report.updated >= 9500
    return fashion_index


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory):
    """A real `chroma run` server on loopback; yields its URL."""
    chroma = shutil.which("chroma", path=str(BIN)) or shutil.which("chroma")
    assert chroma, "the chroma command (from the chromadb package) is not installed"
    port = free_port()
    path = tmp_path_factory.mktemp("chroma-server")
    with open(path.parent / "chroma-server.log", "w") as log:
        proc = start_server(
            [chroma, "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(port)],
            lambda: chromadb.HttpClient(host="127.0.0.1", port=port).heartbeat(),
            60,
            log,
            "chroma server",
        )
        yield f"http://127.0.0.1:{port}"
        stop_server(proc)


# -- a throwaway PostgreSQL cluster ----------------------------------------------------------------------------------
PASSWORD = "s3cret-pw"  # the cluster's; no message may show it


def postgres_bin() -> Path | None:
    """The folder of initdb and pg_ctl: theirs on the PATH (links followed), else Debian's newest
    /usr/lib/postgresql/N/bin."""
    on_path = shutil.which("pg_ctl")
    if on_path and (Path(on_path).resolve().parent / "initdb").exists():
        return Path(on_path).resolve().parent
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found else None


@dataclass
class Cluster:
    bin: Path
    root: Path  # the data folder, the log and the socket live here
    port: int
    as_owner: list[str]  # runuser -u postgres -- when run as root (PostgreSQL refuses to run as root)

    def run(self, tool: str, *args: str) -> None:
        cmd = [*self.as_owner, str(self.bin / tool), *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"{tool}: {done.stdout}{done.stderr}"

    def start(self) -> None:
        options = f"-p {self.port} -h 127.0.0.1 -k {self.root} -c fsync=off -c full_page_writes=off"
        self.run("pg_ctl", "-D", str(self.root / "data"), "-l", str(self.root / "log"), "-w", "-o", options, "start")

    def stop(self) -> None:
        self.run("pg_ctl", "-D", str(self.root / "data"), "-m", "fast", "-w", "stop")

    def new_database(self) -> str:
        """A fresh, empty database; its URL (TCP with a password, as a replica would connect)."""
        name = f"t{next(_NUMBERS)}"
        with psycopg.connect(host=str(self.root), port=self.port, user="postgres", autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")  # over the socket, where the cluster trusts its owner
        return f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:{self.port}/{name}"


_NUMBERS = iter(range(1, 10_000))


@pytest.fixture(scope="session")
def postgres() -> Iterator[Cluster]:
    """initdb into a temporary folder, start on a free loopback port (its socket in that folder), stop and remove."""
    pg_bin = postgres_bin()
    if pg_bin is None:
        pytest.skip("no PostgreSQL binaries (initdb, pg_ctl): install Debian's postgresql package to run these")
    root = Path(tempfile.mkdtemp(prefix="recagent-pg-"))  # not under pytest's tmp: the postgres user must enter it
    as_owner = []
    if os.geteuid() == 0:
        as_owner = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
    cluster = Cluster(pg_bin, root, free_port(), as_owner)
    try:
        (root / "pw").write_text(PASSWORD)
        if as_owner:
            shutil.chown(root / "pw", "postgres")
        cluster.run(
            "initdb", "-D", str(root / "data"), "-U", "postgres", f"--pwfile={root / 'pw'}", "--auth-local=trust",
            "--auth-host=scram-sha-256", "--no-sync", "-E", "UTF8", "--locale=C",
        )  # fmt: skip
        cluster.start()
        yield cluster
    finally:
        close_all()  # no pooled connection outlives the cluster
        if (root / "data" / "postmaster.pid").exists():
            cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


# -- `recagent serve` processes --------------------------------------------------------------------------------------
@dataclass
class Served:
    """A `recagent serve` process on a loopback port, started by `start_serve`."""

    proc: subprocess.Popen
    url: str
    log: Path
    cmd: list[str]

    def readyz(self) -> tuple[int, dict]:
        """GET /readyz: (status, body); (0, {}) while nothing answers."""
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")
        except OSError:
            return 0, {}

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as when a machine or a container dies."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        stop_server(self.proc)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""

    def wait_ready(self, timeout: float = 300) -> Served:
        """Until /readyz answers 200 (models loaded, the planner's prompt evaluated); fail with the end of the log if
        the process ends or the time is up."""
        deadline = time.time() + timeout
        while self.readyz()[0] != 200:
            if self.proc.poll() is not None or time.time() > deadline:
                self.kill()
                pytest.fail(f"recagent serve did not get ready ({' '.join(self.cmd[5:])}):\n{self.tail()}")
            time.sleep(0.2)
        return self


def start_serve(
    settings: Settings,
    *serve_args: str,
    log: Path,
    global_args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    wait: float | None = 300,
) -> Served:
    """Start `recagent [global_args] serve --port FREE serve_args` with the test home and data (the user's model
    cache) and, unless `wait` is None, wait that long for it to be ready. Of RECAGENT_* settings that change what a
    service is (database, keys, Chroma, LLM), only those in `env` reach it."""
    port = free_port()
    cmd = [RECAGENT, "--home", str(settings.home), "--data", str(settings.data), *global_args]
    cmd += ["serve", "--port", str(port), *serve_args]
    environment = {**os.environ, "RECAGENT_CACHE": str(settings.cache)}
    for name in ("RECAGENT_DB", "RECAGENT_API_KEYS", "RECAGENT_CHROMA_URL", "RECAGENT_LLM", "OPENAI_BASE_URL"):
        environment.pop(name, None)
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**environment, **(env or {})})
    served = Served(proc, f"http://127.0.0.1:{port}", log, cmd)
    return served if wait is None else served.wait_ready(wait)


# -- an OpenAI-compatible LLM server for fault injection -------------------------------------------------------------
class FakeLLMHandler(http.server.BaseHTTPRequestHandler):
    """An OpenAI-compatible chat endpoint for tests where the model's answers do not matter (streamed or not): the
    planner (a request with a response_format) searches for the user's words, the writer says one sentence. Each
    answer first waits the delay of its kind; GET /control says the delays and the calls in flight, POST /control
    {"delay": {"planner": S, "writer": S}} sets them."""

    protocol_version = "HTTP/1.1"
    state: ClassVar[dict[str, Any]] = {
        "delay": {"planner": 0.0, "writer": 0.0},
        "inflight": {"planner": 0, "writer": 0},
    }
    lock: ClassVar[threading.Lock] = threading.Lock()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _json(self, body: dict, status: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            self._json({"object": "list", "data": [{"id": "fake", "object": "model", "created": 0, "owned_by": "t"}]})
        else:
            with self.lock:
                self._json(self.state)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        if self.path == "/control":
            with self.lock:
                self.state["delay"].update(body.get("delay", {}))
                self._json(self.state)
            return
        kind = "planner" if body.get("response_format") else "writer"
        with self.lock:
            self.state["inflight"][kind] += 1
            delay = self.state["delay"][kind]
        try:
            time.sleep(delay)
            if kind == "planner":
                words = body["messages"][-1]["content"].rsplit("User: ", 1)[-1]
                text = json.dumps({"tool": "search_catalog", "args": {"query": words, "filters": []}})
            else:
                text = "Here are a few you might enjoy."
            if body.get("stream"):
                self._stream(text, body)
            else:
                message = {"role": "assistant", "content": text}
                self._json(
                    {
                        "id": "fake-1",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": "fake",
                        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    }
                )
        finally:
            with self.lock:
                self.state["inflight"][kind] -= 1

    def _stream(self, text: str, body: dict) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

        def chunk(delta: dict, finish: str | None = None, usage: dict | None = None) -> None:
            data = {"id": "fake-1", "object": "chat.completion.chunk", "created": int(time.time()), "model": "fake"}
            data["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}] if usage is None else []
            if usage is not None:
                data["usage"] = usage
            self.wfile.write(f"data: {json.dumps(data)}\n\n".encode())
            self.wfile.flush()

        chunk({"role": "assistant", "content": ""})
        for piece in text.split(" "):
            chunk({"content": piece + " "})
        chunk({}, "stop")
        if (body.get("stream_options") or {}).get("include_usage"):
            chunk({}, usage={"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2})
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


class FakeLLM:
    """FakeLLMHandler's server as a process of its own on a fixed loopback port: it can be slowed down, killed
    (SIGKILL) and started again at the same address."""

    def __init__(self, log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.proc: subprocess.Popen | None = None

    def _control(self, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.url}/control", data=data, method="POST" if data else "GET")
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read())

    def start(self) -> None:
        with open(self.log, "ab") as out:
            cmd = [sys.executable, __file__, "fake-llm", str(self.port)]
            self.proc = start_server(cmd, self._control, 60, out, "the fake LLM server")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def delay(self, planner: float = 0.0, writer: float = 0.0) -> None:
        """Seconds each planner and each writer answer waits before it starts."""
        self._control({"delay": {"planner": planner, "writer": writer}})

    def inflight(self) -> dict[str, int]:
        return self._control()["inflight"]

    def wait_inflight(self, kind: str, n: int, seconds: float = 60) -> None:
        """Until at least n calls of that kind (planner, writer) are being answered."""
        deadline = time.time() + seconds
        while self.inflight()[kind] < n:
            assert time.time() < deadline, f"never {n} {kind} calls in flight"
            time.sleep(0.05)


@pytest.fixture(scope="session")
def fake_llm(tmp_path_factory) -> Iterator[FakeLLM]:
    """The fault-injection LLM server, running with no delay at the start of each use (a test that kills it or
    slows it down leaves it so; the `llm` fixture of a test module resets it)."""
    server = FakeLLM(tmp_path_factory.mktemp("fake-llm") / "fake-llm.log")
    server.start()
    yield server
    if server.running():
        server.kill()


if __name__ == "__main__" and sys.argv[1:2] == ["fake-llm"]:  # FakeLLM's process: conftest.py fake-llm PORT
    fake = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), FakeLLMHandler)
    fake.daemon_threads = True
    fake.serve_forever()
