"""Settings precedence, the data folder, and the MovieLens download against a real HTTP server on loopback."""

import hashlib
import http.server
import io
import threading
import zipfile

import pytest
from click.testing import CliRunner

from recagent.agent.cli import main
from recagent.tools.data import DownloadError, download_movielens


def test_missing_data_gives_one_clear_message(tmp_path):
    result = CliRunner().invoke(main, ["--home", str(tmp_path), "--data", str(tmp_path / "none"), "index"])
    assert result.exit_code == 1
    assert "no data folder found" in result.stderr and "recagent data download" in result.stderr
    assert "Traceback" not in result.output


@pytest.fixture
def grouplens(settings, tmp_path):
    """A loopback HTTP server serving an ml-latest-small.zip built from the real files, and its .md5."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in ("movies.csv", "links.csv", "README.txt"):
            zf.write(settings.data / "movielens" / name, f"ml-latest-small/{name}")
    files = {
        "/ml-latest-small.zip": buf.getvalue(),
        "/ml-latest-small.zip.md5": (hashlib.md5(buf.getvalue()).hexdigest() + "  ml-latest-small.zip\n").encode(),
        "/broken.zip": b"not a zip",
        "/broken.zip.md5": hashlib.md5(b"not a zip").hexdigest().encode(),
    }

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = files.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_download_verifies_checksum_and_unpacks(grouplens, tmp_path):
    target = download_movielens(tmp_path, url=f"{grouplens}/ml-latest-small.zip", show_progress=False)
    assert (target / "movies.csv").read_text().startswith("movieId,title,genres")
    assert sorted(p.name for p in target.iterdir()) == ["README.txt", "links.csv", "movies.csv"]


def test_download_with_wrong_checksum_writes_nothing(grouplens, tmp_path):
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download_movielens(tmp_path, url=f"{grouplens}/ml-latest-small.zip", md5="0" * 32, show_progress=False)
    with pytest.raises(DownloadError, match="not a zip archive"):
        download_movielens(tmp_path, url=f"{grouplens}/broken.zip", show_progress=False)
    with pytest.raises(DownloadError, match="cannot download"):
        download_movielens(tmp_path, url=f"{grouplens}/missing.zip", show_progress=False)
    assert list(tmp_path.iterdir()) == []
