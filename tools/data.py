"""Getting the data: download MovieLens latest-small from GroupLens with checksum verification."""

from __future__ import annotations

import hashlib
import io
import shutil
import sys
import urllib.request
import zipfile
from pathlib import Path

from tqdm import tqdm

from .errors import DownloadError

MOVIELENS_URL = "https://files.grouplens.org/datasets/movielens/ml-latest-small.zip"


def _fetch(url: str, timeout: float, show_progress: bool) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            buf = io.BytesIO()
            with tqdm(
                total=total, unit="B", unit_scale=True, desc=Path(url).name, file=sys.stderr, disable=not show_progress
            ) as bar:
                while chunk := resp.read(1 << 16):
                    buf.write(chunk)
                    bar.update(len(chunk))
            return buf.getvalue()
    except OSError as exc:  # URLError, timeouts, refused connections
        raise DownloadError(
            f"cannot download {url}: {exc}. Are you online? Otherwise copy the data by hand "
            "and point --data or RECAGENT_DATA at it."
        ) from None


def download_movielens(
    dest: Path, url: str = MOVIELENS_URL, md5: str | None = None, timeout: float = 60, show_progress: bool = True
) -> Path:
    """Download and unpack ml-latest-small into DEST/movielens, verified against GroupLens' published md5."""
    target = dest / "movielens"
    if (target / "movies.csv").is_file():
        return target
    expected = md5 or _fetch(url + ".md5", timeout, False).decode().split()[0].strip().lower()
    blob = _fetch(url, timeout, show_progress)
    actual = hashlib.md5(blob).hexdigest()
    if actual != expected:
        raise DownloadError(f"{url}: checksum mismatch (md5 {actual}, expected {expected}); nothing was written.")
    staging = dest / ".movielens.partial"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as zf:
            for member in zf.infolist():
                name = Path(member.filename)
                if member.is_dir() or name.suffix not in (".csv", ".txt"):
                    continue
                out = staging / name.name  # flatten ml-latest-small/x.csv; never trust archive paths
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(zf.read(member))
        if not (staging / "movies.csv").is_file():
            raise DownloadError(f"{url}: the archive holds no movies.csv")
        staging.rename(target)
    except zipfile.BadZipFile:
        raise DownloadError(f"{url}: not a zip archive") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
