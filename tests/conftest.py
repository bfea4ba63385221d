"""Shared fixtures: a test home, the real data, real indexes of both catalogs, and a Chroma server on loopback."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recagent.tools.settings import Settings

BIN = Path(sys.executable).parent


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
    return {**os.environ, "RECAGENT_HOME": str(settings.home), "RECAGENT_DATA": str(settings.data),
            "RECAGENT_CACHE": str(settings.cache)}


def _index(settings: Settings, catalog: str):
    from recagent.tools.catalog import load_catalog
    from recagent.tools.index import CatalogIndex

    idx = CatalogIndex(catalog, settings)
    report = idx.index(load_catalog(catalog, settings), progress=False)
    assert not report.interrupted
    return idx


@pytest.fixture(scope="session")
def movies_index(settings):
    return _index(settings, "movies")


@pytest.fixture(scope="session")
def fashion_index(settings):
    return _index(settings, "fashion")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory):
    """A real `chroma run` server on loopback; yields its URL."""
    chroma = shutil.which("chroma", path=str(BIN)) or shutil.which("chroma")
    assert chroma, "the chroma command (from the chromadb package) is not installed"
    port = free_port()
    path = tmp_path_factory.mktemp("chroma-server")
    log = open(path.parent / "chroma-server.log", "w")
    proc = subprocess.Popen([chroma, "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    import chromadb

    deadline = time.time() + 60
    while True:
        try:
            chromadb.HttpClient(host="127.0.0.1", port=port).heartbeat()
            break
        except Exception:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"chroma server did not start; see {log.name}")
            time.sleep(0.3)
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()
