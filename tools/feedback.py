"""Feedback on recommended items (likes, dislikes, accepted items), stored under a pseudonym.

The store is one SQLite file, `HOME/feedback.sqlite3` (WAL journal, so several REPLs can write at once), made
readable by its owner only. A user is kept as an HMAC-SHA256 of the name keyed with a random salt that is created
once in `HOME/feedback.salt` (mode 0600): the same name gives the same key in one home and unrelated keys in
another, and the name itself is never written. The conversation text is stored only when the caller passes it,
which the REPL does only when the user opted in (`--share-text` or RECAGENT_FEEDBACK_TEXT=1).

    from recagent.tools.feedback import record_feedback, feedback_events, forget_user
    record_feedback(settings, "ana", "318", "movies", +1)
    feedback_events(settings, catalog="movies")   # [{"user": "3f1c...", "item": "318", "catalog": "movies",
                                                  #   "signal": 1, "time": 1764535200.0, "kind": "like"}]
    forget_user(settings, "ana")                  # -> 1 (rows deleted)
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import os
import secrets
import sqlite3
import tempfile
import time
from pathlib import Path

from .errors import FeedbackError
from .settings import Settings

STORE_NAME = "feedback.sqlite3"
SALT_NAME = "feedback.salt"
SALT_BYTES = 32
SCHEMA_VERSION = 1
KINDS = {"like": 1, "accept": 1, "dislike": -1}  # the signal each kind of feedback gives

_SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY,
    user TEXT NOT NULL,               -- the salted hash of the user name, never the name
    item TEXT NOT NULL,
    catalog TEXT NOT NULL,
    signal INTEGER NOT NULL CHECK (signal IN (-1, 1)),
    kind TEXT NOT NULL,               -- like, dislike or accept
    time REAL NOT NULL,               -- seconds since the epoch
    text TEXT                         -- the conversation, only when the user opted in
);
CREATE INDEX IF NOT EXISTS feedback_user ON feedback (user);
CREATE INDEX IF NOT EXISTS feedback_catalog ON feedback (catalog);
"""
_COLUMNS = {"id", "user", "item", "catalog", "signal", "kind", "time", "text"}


# -- identity -----------------------------------------------------------------------------------------------
def feedback_user(settings: Settings) -> str:
    """Whose feedback this is: the settings' user (--user, RECAGENT_USER), else the login name, else "anonymous"."""
    name = (settings.user or "").strip()
    if name:
        return name
    try:
        return getpass.getuser() or "anonymous"
    except (OSError, KeyError):  # no login name (some containers)
        return "anonymous"


def _salt(settings: Settings, create: bool) -> bytes | None:
    """The home's salt; made once (atomically, mode 0600) when create is set, else None when there is none."""
    path = Path(settings.home) / SALT_NAME
    if not path.exists():
        if not create:
            return None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".feedback-salt-", dir=path.parent)  # mode 0600
            try:
                os.write(fd, secrets.token_bytes(SALT_BYTES))
                os.fsync(fd)
                os.close(fd)
                try:
                    os.link(tmp, path)  # never replaces a salt another process made meanwhile
                except FileExistsError:
                    pass
            finally:
                os.unlink(tmp)
        except OSError as exc:
            raise FeedbackError(f"cannot create the feedback salt {path}: {exc.strerror or exc}") from None
    try:
        salt = path.read_bytes()
    except OSError as exc:
        raise FeedbackError(f"cannot read the feedback salt {path}: {exc.strerror or exc}") from None
    if len(salt) != SALT_BYTES:
        raise FeedbackError(
            f"{path} is not a recagent feedback salt ({len(salt)} bytes, expected {SALT_BYTES}); it was left as it "
            "is. Restore it from a backup, or move it away to start new pseudonyms (stored feedback then no longer "
            "matches its users, and `recagent forget` cannot find it)."
        )
    return salt


def _key(salt: bytes, user: str) -> str:
    name = (user or "").strip()
    if not name:
        raise FeedbackError("the user name is empty; give one with --user NAME or RECAGENT_USER")
    return hmac.new(salt, name.encode("utf-8"), hashlib.sha256).hexdigest()


def user_key(user: str, settings: Settings) -> str:
    """The pseudonym stored for `user` in this home: HMAC-SHA256 of the name with the home's salt, in hex."""
    salt = _salt(settings, create=True)
    assert salt is not None  # made when missing
    return _key(salt, user)


# -- the store ----------------------------------------------------------------------------------------------
def store_path(settings: Settings) -> Path:
    return Path(settings.home) / STORE_NAME


def _corrupt(path: Path, exc: Exception) -> FeedbackError:
    return FeedbackError(
        f"{path} is not a readable recagent feedback store ({exc}); it was left as it is. Move it away (or restore "
        "a backup) and recagent starts a new one."
    )


def _connect(settings: Settings, create: bool) -> sqlite3.Connection | None:
    """An open, checked store; None when there is none and create is not set."""
    path = store_path(settings)
    if not path.exists():
        if not create:
            return None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))  # owner-only; SQLite's -wal/-shm follow it
        except OSError as exc:
            raise FeedbackError(f"cannot create the feedback store {path}: {exc.strerror or exc}") from None
    elif path.is_dir():
        raise FeedbackError(f"{path} is a folder, not a recagent feedback store; move it away")
    con = None
    try:
        con = sqlite3.connect(path, timeout=30, isolation_level=None)
        con.execute("PRAGMA busy_timeout = 30000")
        version, tables = _schema(con, "BEGIN")  # reads the header: fails on a foreign file
        if version == 0 and not tables:  # a new (empty) file: set it up, once, whoever gets there first
            con.execute("PRAGMA journal_mode = WAL")
            version, tables = _schema(con, "BEGIN IMMEDIATE", keep_open=True)
            if version == 0 and not tables:
                for statement in [*_SCHEMA.split(";"), f"PRAGMA user_version = {SCHEMA_VERSION}"]:
                    if statement.strip():
                        con.execute(statement)  # not executescript: it would commit (and unlock) first
                version, tables = SCHEMA_VERSION, {"feedback"}
            con.execute("COMMIT")
        if version != SCHEMA_VERSION or "feedback" not in tables:
            raise FeedbackError(
                f"{path} is not a recagent feedback store (schema version {version}, tables "
                f"{', '.join(sorted(tables)) or 'none'}); it was left as it is. Move it away and recagent starts "
                "a new one."
            )
        else:
            columns = {r[1] for r in con.execute("PRAGMA table_info(feedback)")}
            if not _COLUMNS <= columns:
                raise FeedbackError(
                    f"{path}: the feedback table lacks {', '.join(sorted(_COLUMNS - columns))}; "
                    "it was left as it is. Move it away and recagent starts a new one."
                )
        return con
    except FeedbackError:
        if con is not None:
            con.close()
        raise
    except sqlite3.DatabaseError as exc:  # "file is not a database", "database disk image is malformed", ...
        if con is not None:
            con.close()
        if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
            raise FeedbackError(f"{path} stayed locked by another recagent for 30 s; try again") from None
        if isinstance(exc, sqlite3.OperationalError) and "unable to open" in str(exc):
            raise FeedbackError(f"cannot open the feedback store {path}: {exc}") from None
        raise _corrupt(path, exc) from None


def _schema(con: sqlite3.Connection, begin: str, keep_open: bool = False) -> tuple[int, set[str]]:
    """The schema version and table names, read in one transaction (left open with keep_open)."""
    con.execute(begin)
    try:
        version = con.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except BaseException:
        con.execute("ROLLBACK")
        raise
    if not keep_open:
        con.execute("COMMIT")
    return version, tables


def record_feedback(
    settings: Settings,
    user: str,
    item_id: str | int,
    catalog: str,
    signal: int,
    text: str | None = None,
    kind: str | None = None,
) -> str:
    """Store one event: `signal` +1 (like, accept) or -1 (dislike) for `item_id` of `catalog` by `user`.

    `text` (the conversation) is stored as given: pass it only when the user opted in. `kind` is "like",
    "dislike" or "accept" (default: like for +1, dislike for -1). Returns the user's pseudonym."""
    if signal not in (1, -1) or isinstance(signal, bool):
        raise ValueError(f"signal must be +1 or -1, not {signal!r}")
    kind = kind or ("like" if signal == 1 else "dislike")
    if KINDS.get(kind) != signal:
        raise ValueError(f"kind {kind!r} does not go with signal {signal:+d}")
    key = user_key(user, settings)
    con = _connect(settings, create=True)
    assert con is not None  # made when missing
    try:
        with con:
            con.execute(
                "INSERT INTO feedback (user, item, catalog, signal, kind, time, text) VALUES (?,?,?,?,?,?,?)",
                (key, str(item_id), str(catalog), int(signal), kind, time.time(), text),
            )
    except sqlite3.DatabaseError as exc:
        raise _corrupt(store_path(settings), exc) from None
    finally:
        con.close()
    return key


def feedback_events(settings: Settings, catalog: str | None = None) -> list[dict]:
    """Every stored event (of one catalog, or all), oldest first:
    {"user": pseudonym, "item": id, "catalog": name, "signal": +1 or -1, "time": seconds, "kind": like/dislike/accept}.
    An empty list when nothing was stored; never the conversation text."""
    con = _connect(settings, create=False)
    if con is None:
        return []
    query = "SELECT user, item, catalog, signal, time, kind FROM feedback"
    args: tuple = ()
    if catalog is not None:
        query += " WHERE catalog = ?"
        args = (str(catalog),)
    try:
        rows = con.execute(query + " ORDER BY time, id", args).fetchall()
    except sqlite3.DatabaseError as exc:
        raise _corrupt(store_path(settings), exc) from None
    finally:
        con.close()
    return [
        {"user": u, "item": i, "catalog": c, "signal": int(s), "time": float(t), "kind": k} for u, i, c, s, t, k in rows
    ]


def forget_user(settings: Settings, user: str) -> int:
    """Delete everything stored for `user` (their feedback and any text shared with it); the number of rows."""
    salt = _salt(settings, create=False)
    if salt is None:
        return 0
    key = _key(salt, user)
    con = _connect(settings, create=False)
    if con is None:
        return 0
    try:
        con.execute("PRAGMA secure_delete = ON")  # overwrite the deleted rows instead of leaving them in free space
        deleted = con.execute("DELETE FROM feedback WHERE user = ?", (key,)).rowcount
    except sqlite3.DatabaseError as exc:
        con.close()
        raise _corrupt(store_path(settings), exc) from None
    try:
        if deleted:  # fold the WAL (which still holds the old pages) back into the file and empty it
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    except sqlite3.DatabaseError:
        pass  # another recagent is reading; its next checkpoint does it
    finally:
        con.close()
    return deleted
