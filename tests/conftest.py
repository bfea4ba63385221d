"""Shared fixtures: a test home, the real data, real indexes of both catalogs, and a Chroma server on loopback."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import chromadb
import pytest

from recagent.evals.loopback import free_port, start_server, stop_server
from recagent.tools.catalog import load_catalog
from recagent.tools.index import CatalogIndex
from recagent.tools.settings import Settings

BIN = Path(sys.executable).parent
RECAGENT = str(BIN / "recagent")  # the installed command, run as users run it


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
