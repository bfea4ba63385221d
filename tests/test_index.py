"""The Chroma index on a user catalog: idempotent, incremental, resumable, and safe with malformed rows."""

import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import RECAGENT, run_cli

from recagent.agent.cli import main
from recagent.tools.catalog import load_file_catalog
from recagent.tools.filters import parse_where
from recagent.tools.index import CatalogIndex

HEADER = "id,title,description,genre,price\n"
ROWS = [
    "k1,Chef's knife,Forged steel kitchen knife for chopping vegetables,Kitchen,45",
    "k2,Cast iron skillet,Heavy pan for searing steak,Kitchen,30",
    "g1,Garden hose,Thirty metre hose for watering plants,Garden,25",
    "g2,Pruning shears,Sharp secateurs for cutting branches,Garden,18",
    "t1,Cordless drill,Battery powered drill for screws and holes,Tools,89",
]


def write(path: Path, rows: list[str]) -> Path:
    path.write_text(HEADER + "\n".join(rows) + "\n")
    return path


def test_index_is_idempotent_incremental_and_keeps_items_of_malformed_rows(settings, tmp_path):
    path = write(tmp_path / "shop.csv", ROWS)
    idx = CatalogIndex(str(path), settings)
    first = idx.index(load_file_catalog(path), progress=False)
    assert (first.added, first.updated, first.removed) == (5, 0, 0) and idx.count() == 5

    again = idx.index(load_file_catalog(path), progress=False)
    assert again.changed == 0 and again.unchanged == 5

    # One changed row, one new row, one removed row: exactly that work is done.
    rows = ROWS[:4] + ["t2,Hammer,Claw hammer for nails,Tools,15"]
    rows[1] = "k2,Cast iron skillet,Heavy pan for searing steak and baking cornbread,Kitchen,32"
    changed = idx.index(load_file_catalog(write(path, rows)), progress=False)
    assert (changed.added, changed.updated, changed.removed, changed.unchanged) == (1, 1, 1, 3)
    assert idx.get(["k2"])["k2"]["price"] == 32 and "t1" not in idx.get(["t1", "t2"])

    # A malformed row is reported, and its item, already indexed, is not lost.
    broken = rows[:2] + ["g1,Garden hose,missing columns"] + rows[3:]
    cat = load_file_catalog(write(path, broken))
    assert [(e.line, e.message) for e in cat.errors] == [(4, "expected 5 columns, found 3")]
    report = idx.index(cat, progress=False)
    assert report.removed == 0 and idx.count() == 5 and "g1" in idx.get(["g1"])

    hits = idx.search("something to cut tree branches", k=2)
    assert hits[0].id == "g2" and hits[0].score > hits[1].score
    assert [h.id for h in idx.search("a pan", k=5, where=parse_where(["genre=kitchen", "price<40"], idx.fields()))] == [
        "k2"
    ]


def _big_catalog(path: Path, n: int) -> Path:
    # Fresh random texts, so that the embedding cache cannot make the run instant.
    rng = random.Random(time.time_ns())
    words = "red blue quiet loud old new small large fast slow bright dark soft hard warm cold".split()
    rows = [
        f"i{i},Item {i} {' '.join(rng.choices(words, k=4))},{' '.join(rng.choices(words, k=12))} {rng.random()},"
        f"{rng.choice(['A', 'B', 'C'])},{rng.randint(1, 99)}"
        for i in range(n)
    ]
    return write(path, rows)


def _start_index(path: Path, env: dict) -> tuple[subprocess.Popen, list[str], threading.Thread]:
    proc = subprocess.Popen(
        [RECAGENT, "index", "--catalog", str(path), "--batch-size", "32"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(iter(lambda: proc.stderr.read(64), "")), daemon=True)
    reader.start()
    deadline = time.time() + 120
    while f"indexing {path.stem}" not in "".join(err) or "32/" not in "".join(err):  # the first batch is written
        assert proc.poll() is None and time.time() < deadline, "".join(err)
        time.sleep(0.05)
    return proc, err, reader


@pytest.mark.parametrize("how", ["ctrl-c", "kill -9"])
def test_interrupted_index_resumes_without_loss(settings, env, tmp_path, how):
    path = _big_catalog(tmp_path / f"big-{how.replace(' ', '')}.csv", 2500)
    proc, err, reader = _start_index(path, env)
    proc.send_signal(signal.SIGINT if how == "ctrl-c" else signal.SIGKILL)
    proc.wait(timeout=120)
    reader.join(10)
    written = CatalogIndex(str(path), settings).count()
    assert 0 < written < 2500
    if how == "ctrl-c":
        assert proc.returncode == 130 and "Run the same command again to continue" in "".join(err)

    rerun = run_cli(env, "index", "--catalog", str(path), "-q", timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"({2500 - written:,} new" in rerun.stdout
    assert CatalogIndex(str(path), settings).count() == 2500
    third = run_cli(env, "index", "--catalog", str(path))
    assert "nothing changed" in third.stdout


def test_cli_reports_malformed_rows_and_unreachable_server(settings, env, tmp_path):
    path = write(tmp_path / "tools.csv", ROWS[:2] + ["x9,,no title,Tools,3"])
    result = CliRunner().invoke(main, ["--home", str(settings.home), "index", "--catalog", str(path), "-q"])
    assert result.exit_code == 0
    assert f"skipped malformed row {path}:4: missing 'title'" in result.stderr
    assert "indexed 2 items" in result.stdout

    result = CliRunner().invoke(main, ["--chroma-url", "http://127.0.0.1:9", "search", "knife"])
    assert result.exit_code == 1 and "cannot reach the Chroma server at http://127.0.0.1:9" in result.stderr
    assert "Traceback" not in result.output

    result = CliRunner().invoke(main, ["--home", str(settings.home), "search", "knife", "-c", "never-indexed"])
    assert result.exit_code == 1 and "unknown catalog 'never-indexed'" not in result.stderr
    assert "is not indexed" in result.stderr and "recagent index --catalog never-indexed" in result.stderr
