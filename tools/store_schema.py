"""The schema of recagent's database (tools/store.py): its versions, the steps between them, the form of what is
stored (records, feedback kinds, pseudonyms, titles), and the import of the feedback store recagent kept before it.

`MIGRATIONS[i]` takes a database from version i to i + 1; tools/store.py applies the missing ones in order when a
database is first opened, each in its own transaction. A released step never changes: a change is a new step.

    version 1  recagent_meta (key, value: schema_version, salt, imported), feedback
    version 2  conversations, turns, openai_threads; feedback.conversation_id
"""

from __future__ import annotations

import hashlib
import hmac
import sqlite3
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from sqlalchemy import (
    CheckConstraint,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    column,
    inspect,
    select,
    table,
    text,
)
from sqlalchemy.engine import URL, Connection, make_url

from .errors import ConflictError, DatabaseError

SALT_BYTES = 32
KINDS = {"like": 1, "accept": 1, "dislike": -1}  # the signal each kind of feedback gives
TITLE_CHARS = 80
LEGACY_STORE, LEGACY_SALT = "feedback.sqlite3", "feedback.salt"  # HOME/..., before the database
_LEGACY_COLUMNS = ("user", "item", "catalog", "signal", "kind", "time", "text")


class StoreConflict(ConflictError):
    """The conversation is no longer at the expected version (another request or replica committed first), or it
    is gone (`current_version` None); nothing was written."""

    def __init__(self, message: str, current_version: int | None):
        super().__init__(message)
        self.current_version = current_version


@dataclass(frozen=True)
class ConversationRecord:
    id: str  # random, URL-safe
    owner: str  # the owner's pseudonym
    catalog: str
    title: str
    created: float  # seconds since the epoch
    updated: float
    version: int  # 0 when created, +1 for every committed change
    state: dict  # the Conversation's to_dict()


@dataclass(frozen=True)
class TurnRecord:
    number: int  # 1, 2, ... within the conversation
    request: dict
    reply: dict  # Reply.to_dict()
    created: float


# -- the versions ----------------------------------------------------------------------------------------------
def _v1_feedback(conn: Connection) -> None:
    """Version 1: the settings (schema version, salt) and the feedback of the old `feedback.sqlite3`."""
    md = MetaData()
    Table("recagent_meta", md, Column("key", String(40), primary_key=True), Column("value", Text, nullable=False))
    Table(
        "feedback",
        md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("user_key", String(64), nullable=False, index=True),  # the pseudonym, never the name
        Column("item", Text, nullable=False),
        Column("catalog", Text, nullable=False, index=True),
        Column("signal", Integer, CheckConstraint("signal IN (-1, 1)"), nullable=False),
        Column("kind", String(16), CheckConstraint("kind IN ('like', 'dislike', 'accept')"), nullable=False),
        Column("time", Double, nullable=False),  # seconds since the epoch
        Column("text", Text),  # the conversation, only when the user opted in
    )
    md.create_all(conn)


def _v2_conversations(conn: Connection) -> None:
    """Version 2: stored conversations, their turns, OpenAI-endpoint threads; feedback may name its conversation."""
    md = MetaData()
    Table(
        "conversations",
        md,
        Column("id", String(32), primary_key=True),  # random, URL-safe
        Column("owner", String(64), nullable=False),  # the owner's pseudonym
        Column("catalog", Text, nullable=False),
        Column("title", Text, nullable=False),
        Column("created", Double, nullable=False),
        Column("updated", Double, nullable=False),
        Column("version", Integer, nullable=False),  # +1 for every committed change
        Column("state", Text, nullable=False),  # the Conversation as JSON
        Index("conversations_owner", "owner", "updated"),
    )
    cascade = partial(ForeignKey, "conversations.id", ondelete="CASCADE")  # deleted with the conversation
    Table(
        "turns",
        md,
        Column("conversation_id", String(32), cascade(), primary_key=True),
        Column("number", Integer, primary_key=True),
        Column("request", Text, nullable=False),  # JSON
        Column("reply", Text, nullable=False),  # JSON: Reply.to_dict()
        Column("created", Double, nullable=False),
    )
    Table(
        "openai_threads",
        md,
        Column("key", String(128), primary_key=True),
        Column("conversation_id", String(32), cascade(), nullable=False, index=True),
        Column("created", Double, nullable=False),
    )
    md.create_all(conn)
    sql = "ALTER TABLE feedback ADD COLUMN conversation_id VARCHAR(32) REFERENCES conversations (id) ON DELETE SET NULL"
    conn.execute(text(sql))


MIGRATIONS: list[Callable[[Connection], None]] = [_v1_feedback, _v2_conversations]
SCHEMA_VERSION = len(MIGRATIONS)

# the tables as the queries see them: the current version's columns (their types live in the steps above)
META = table("recagent_meta", column("key"), column("value"))
FEEDBACK = table("feedback", *map(column, "id user_key item catalog signal kind time text conversation_id".split()))
CONVERSATIONS = table("conversations", *map(column, "id owner catalog title created updated version state".split()))
TURNS = table("turns", *map(column, "conversation_id number request reply created".split()))
THREADS = table("openai_threads", column("key"), column("conversation_id"), column("created"))


# -- what is stored, and where ---------------------------------------------------------------------------------
def sqlite_file(url: str | URL) -> Path | None:
    """The file of a SQLite URL; None for another database or an in-memory one."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def display_url(url: str | URL) -> str:
    """How a database is named in messages: a SQLite file's path, else the URL with its password hidden."""
    path = sqlite_file(url)
    return str(path) if path else make_url(url).render_as_string(hide_password=True)


def feedback_kind(signal: int, kind: str | None) -> str:
    """The kind of a feedback event, checked against its signal (+1 like or accept, -1 dislike)."""
    if isinstance(signal, bool) or signal not in (1, -1):
        raise ValueError(f"signal must be +1 or -1, not {signal!r}")
    kind = kind or ("like" if signal == 1 else "dislike")
    if KINDS.get(kind) != signal:
        raise ValueError(f"kind {kind!r} does not go with signal {signal:+d}")
    return kind


def short_title(title: str) -> str:
    """A conversation's title: one line of at most TITLE_CHARS characters."""
    words = " ".join(title.split())
    return words if len(words) <= TITLE_CHARS else words[: TITLE_CHARS - 1].rstrip() + "…"


def pseudonym(salt: bytes, name: str) -> str:
    """HMAC-SHA256 of the stripped name keyed with the salt, in hex."""
    name = (name or "").strip()
    if not name:
        raise ValueError("the user name is empty")
    return hmac.new(salt, name.encode("utf-8"), hashlib.sha256).hexdigest()


def schema_version(conn: Connection, where: str) -> int:
    """The database's schema version, 0 when it is empty; a DatabaseError for a database that is not recagent's or
    is newer than this code (nothing is changed)."""
    tables = set(inspect(conn).get_table_names())
    if not tables:
        return 0
    found = None
    if "recagent_meta" in tables:
        found = conn.execute(select(META.c.value).where(META.c.key == "schema_version")).scalar()
    if found is None or not str(found).isdigit():
        raise DatabaseError(
            f"{where} is not a recagent database (tables {', '.join(sorted(tables))}); it was left as it is. "
            "Move it away (or give another database) and recagent starts a new one."
        )
    if int(found) > SCHEMA_VERSION:
        raise DatabaseError(
            f"{where} has schema version {found}, newer than this recagent reads ({SCHEMA_VERSION}); it was left "
            "as it is. Upgrade recagent."
        )
    return int(found)


def read_legacy(home: Path) -> tuple[bytes | None, list[dict]] | None:
    """The salt and the feedback rows (as version 1 stores them) of the store recagent kept before the database:
    HOME/feedback.sqlite3 (schema user_version 1) and HOME/feedback.salt. None when neither exists. Only read."""
    store_file, salt_file = home / LEGACY_STORE, home / LEGACY_SALT
    if not store_file.is_file() and not salt_file.is_file():
        return None
    salt = salt_file.read_bytes() if salt_file.is_file() else None
    if salt is not None and len(salt) != SALT_BYTES:
        raise DatabaseError(
            f"{salt_file} is not a recagent feedback salt ({len(salt)} bytes), so the old feedback cannot be "
            "imported; it was left as it is. Restore it, or move it away to start without the old feedback."
        )
    if not store_file.is_file():
        return salt, []
    wal = Path(f"{store_file}-wal")  # writes not folded into the file yet: read through SQLite's WAL, read-only
    mode = "mode=ro" if wal.is_file() and wal.stat().st_size else "immutable=1"  # immutable: makes no -wal/-shm
    try:
        with closing(sqlite3.connect(f"file:{store_file}?{mode}", uri=True)) as old:
            version = old.execute("PRAGMA user_version").fetchone()[0]
            columns = {r[1] for r in old.execute("PRAGMA table_info(feedback)")}
            if version != 1 or not set(_LEGACY_COLUMNS) <= columns:
                raise sqlite3.DatabaseError(f"schema version {version}, feedback columns {sorted(columns)}")
            rows = old.execute(f"SELECT {', '.join(_LEGACY_COLUMNS)} FROM feedback ORDER BY id").fetchall()
    except sqlite3.Error as error:
        raise DatabaseError(
            f"{store_file} is not a readable recagent feedback store ({error}), so it cannot be imported; it was "
            "left as it is. Move it away to start without the old feedback."
        ) from None
    return salt, [dict(zip(("user_key", *_LEGACY_COLUMNS[1:]), row)) for row in rows]
