"""recagent's database: feedback, conversations and their turns, under pseudonyms, through SQLAlchemy Core.

Any SQLAlchemy URL: a SQLite file by default (`HOME/recagent.sqlite3`: WAL journal, foreign keys, a busy timeout,
owner-only), PostgreSQL (`postgresql+psycopg://user:pw@host/db`) for several `recagent serve` replicas sharing one
database. One engine per URL per process, shared by every `Store` on it and safe to use from many threads.

The schema carries a version; `MIGRATIONS` (tools/store_schema.py) are the steps from one version to the next,
applied in order when a database is first opened, each in its own transaction (PostgreSQL: under an advisory lock,
so replicas starting together migrate once). A database newer than this code, or one that is not recagent's, is
refused with a `DatabaseError` and left as it is. Users are kept as HMAC-SHA256 pseudonyms keyed with a salt that
lives in the database (made with the schema, once), so replicas give one name the same pseudonym; the name is never
stored.

    store = Store.for_settings(settings)
    owner = store.user_key("ana")
    record = store.create_conversation(owner, "movies", conversation.to_dict(), "heist films")
    version = store.commit_turn(record.id, owner, record.version, new_state, request, reply.to_dict())
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, delete, event, exc, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, Engine, make_url

from .errors import DatabaseError
from .settings import Settings
from .store_schema import (
    CONVERSATIONS,
    FEEDBACK,
    META,
    MIGRATIONS,
    SALT_BYTES,
    SCHEMA_VERSION,
    THREADS,
    TURNS,
    ConversationRecord,
    StoreConflict,
    TurnRecord,
    display_url,
    feedback_kind,
    pseudonym,
    read_legacy,
    schema_version,
    short_title,
    sqlite_file,
)

__all__ = ["ConversationRecord", "DatabaseError", "Store", "StoreConflict", "TurnRecord", "close_all"]

_LOCK_KEY = 0x7265_6361_6765_6E74  # "recagent": the PostgreSQL advisory lock held while migrating
_BUSY_SECONDS = 30


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _detail(error: BaseException, url: URL) -> str:
    """The first line of a driver's message, without the password should it quote the URL."""
    line = next((s.strip() for s in str(error).splitlines() if s.strip()), type(error).__name__)
    return line.replace(url.password, "***") if isinstance(url.password, str) and url.password else line


# -- engines: one per URL per process --------------------------------------------------------------------------------
_ENGINES: dict[str, Engine] = {}  # URL -> its engine, once its schema was checked (made, upgraded)
_OPENING: dict[str, threading.Lock] = {}  # URL -> held while the first Store on it opens it; other URLs go on
_LOCK = threading.Lock()


def _make_engine(url: URL) -> Engine:
    if url.get_backend_name() != "sqlite":
        if url.drivername == "postgresql":
            url = url.set(drivername="postgresql+psycopg")  # psycopg 3 (recagent[postgres]), not psycopg2
        args = {"connect_timeout": 10} if url.get_backend_name() == "postgresql" else {}
        return create_engine(url, pool_pre_ping=True, connect_args=args)
    engine = create_engine(url, connect_args={"timeout": _BUSY_SECONDS})

    @event.listens_for(engine, "connect")
    def _connect(dbapi: sqlite3.Connection, _record: object) -> None:
        dbapi.isolation_level = None  # recagent emits BEGIN itself (below); sqlite3 would defer it
        for pragma in (f"busy_timeout = {_BUSY_SECONDS * 1000}", "foreign_keys = ON", "secure_delete = ON"):
            dbapi.execute(f"PRAGMA {pragma}")  # secure_delete: deleted rows are overwritten, not left in free pages

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:  # a writer takes the write lock at once: no deadlock on lock upgrade
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("recagent_write") else "BEGIN")

    return engine


def close_all() -> None:
    """Close every engine of this process (tests; before a fork). The next Store opens them again."""
    with _LOCK:
        for engine in _ENGINES.values():
            engine.dispose()
        _ENGINES.clear()


class Store:
    """recagent's database at one URL. Cheap to make: the engine and the schema check are shared per URL."""

    def __init__(self, url: str, legacy_home: Path | None = None):
        """Open (creating or upgrading the schema on first use in this process). `legacy_home`: a home whose old
        feedback store and salt are imported when the database is created (tools/store_schema.py, `read_legacy`)."""
        try:
            self.url = make_url(url)
        except exc.ArgumentError:
            raise DatabaseError(f"{url!r} is not a database URL (sqlite:///FILE, postgresql+psycopg://...)") from None
        self.where = display_url(self.url)
        self.sqlite = self.url.get_backend_name() == "sqlite"
        self._salt: bytes | None = None
        path = sqlite_file(self.url)
        with _LOCK:
            opening = _OPENING.setdefault(url, threading.Lock())
        with opening:
            engine = _ENGINES.get(url)
            if engine is not None and path is not None and not path.exists():  # moved away: start a new one
                with _LOCK:
                    _ENGINES.pop(url).dispose()
                engine = None
            if engine is not None:
                self.engine = engine
                return
            if path:
                self._create_file(path)
            try:
                self.engine = _make_engine(self.url)
            except ImportError as error:
                hint = " (pip install 'recagent[postgres]')" if "psycopg" in str(error) else ""
                raise DatabaseError(f"cannot use {self.where}: {error}{hint}") from None
            try:
                self._open(legacy_home)
            except BaseException:
                self.engine.dispose()  # the next Store tries again (once the file is moved away, the server is up)
                raise
            with _LOCK:
                _ENGINES[url] = self.engine

    @classmethod
    def for_settings(cls, settings: Settings) -> Store:
        """The settings' database; the default SQLite file imports the home's old feedback store when created."""
        return cls(settings.database_url(), legacy_home=None if settings.db_url else Path(settings.home))

    # -- plumbing ------------------------------------------------------------------------------------------------
    def _create_file(self, path: Path) -> None:
        if path.is_dir():
            raise DatabaseError(f"{path} is a folder, not a recagent database; move it away")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))  # owner-only; SQLite's -wal/-shm follow it
        except OSError as error:
            raise DatabaseError(f"cannot create the database {path}: {error.strerror or error}") from None

    def _error(self, error: exc.SQLAlchemyError) -> DatabaseError:
        orig = getattr(error, "orig", None) or error
        detail = _detail(orig, self.url)
        if isinstance(orig, sqlite3.OperationalError) and ("locked" in detail or "busy" in detail):
            return DatabaseError(f"{self.where} stayed locked by another recagent for {_BUSY_SECONDS} s; try again")
        if type(orig) is sqlite3.DatabaseError:  # "file is not a database", "database disk image is malformed"
            return DatabaseError(
                f"{self.where} is not a readable recagent database ({detail}); it was left as it is. Move it away "
                "(or restore a backup) and recagent starts a new one."
            )
        if isinstance(error, (exc.OperationalError, exc.InterfaceError, exc.TimeoutError)):
            return DatabaseError(f"the database {self.where} is unavailable ({detail})")
        return DatabaseError(f"the database {self.where} refused a request ({detail})")

    @contextmanager
    def _transaction(self, write: bool = False) -> Iterator[Connection]:
        """One transaction (SQLite: BEGIN IMMEDIATE when it writes); a database problem becomes a DatabaseError."""
        try:
            with self.engine.connect() as conn:
                with conn.execution_options(recagent_write=write).begin():
                    yield conn
        except exc.SQLAlchemyError as error:
            raise self._error(error) from None

    def _sqlite_pragma(self, pragma: str) -> None:
        """A PRAGMA outside any transaction (journal mode, checkpoint)."""
        try:
            raw = self.engine.raw_connection()
        except exc.SQLAlchemyError as error:
            raise self._error(error) from None
        try:
            raw.driver_connection.execute(f"PRAGMA {pragma}")  # type: ignore[union-attr]
        finally:
            raw.close()

    # -- schema --------------------------------------------------------------------------------------------------
    def _open(self, legacy_home: Path | None) -> None:
        with self._transaction() as conn:
            version = schema_version(conn, self.where)  # refuses a foreign file before anything is changed
        if self.sqlite:
            try:
                self._sqlite_pragma("journal_mode = WAL")  # kept in the file: once is enough
            except sqlite3.Error as error:
                raise DatabaseError(f"cannot open {self.where}: {error}") from None
        while version < SCHEMA_VERSION:
            with self._transaction(write=True) as conn:
                if self.engine.dialect.name == "postgresql":
                    conn.execute(select(func.pg_advisory_xact_lock(_LOCK_KEY)))
                version = schema_version(conn, self.where)  # another process may have migrated meanwhile
                if version < SCHEMA_VERSION:
                    MIGRATIONS[version](conn)
                    if version == 0:
                        self._first_rows(conn, legacy_home)
                    version += 1
                    conn.execute(update(META).where(META.c.key == "schema_version").values(value=str(version)))

    def _first_rows(self, conn: Connection, legacy_home: Path | None) -> None:
        """Made with version 1: the salt (the old feedback store's, else a new one) and the old feedback rows."""
        legacy = read_legacy(legacy_home) if legacy_home else None
        salt = legacy[0] if legacy and legacy[0] else secrets.token_bytes(SALT_BYTES)
        conn.execute(insert(META), [{"key": "schema_version", "value": "1"}, {"key": "salt", "value": salt.hex()}])
        if legacy and legacy[1]:
            conn.execute(insert(FEEDBACK), legacy[1])
            conn.execute(insert(META).values(key="imported", value=f"{len(legacy[1])} rows from {legacy_home}"))

    # -- pseudonyms ----------------------------------------------------------------------------------------------
    def user_key(self, name: str) -> str:
        """The pseudonym stored for `name`: HMAC-SHA256 with the database's salt, in hex (ValueError if empty)."""
        if self._salt is None:
            with self._transaction() as conn:
                value = conn.execute(select(META.c.value).where(META.c.key == "salt")).scalar()
            try:
                salt = bytes.fromhex(value or "")
            except ValueError:
                salt = b""
            if len(salt) != SALT_BYTES:
                raise DatabaseError(
                    f"{self.where} holds no usable pseudonym salt; it was left as it is. Restore a backup: stored "
                    "feedback and conversations cannot be matched to their users without it."
                )
            self._salt = salt
        return pseudonym(self._salt, name)

    # -- feedback ------------------------------------------------------------------------------------------------
    def record_feedback(
        self,
        user_key: str,
        item: str | int,
        catalog: str,
        signal: int,
        kind: str | None = None,
        text: str | None = None,
        conversation_id: str | None = None,
    ) -> None:
        """One event: +1 (like, accept) or -1 (dislike). `text` only when the user opted in."""
        row = {"user_key": user_key, "item": str(item), "catalog": str(catalog), "signal": int(signal)}
        row |= {"kind": feedback_kind(signal, kind), "time": time.time(), "text": text}
        with self._transaction(write=True) as conn:
            conn.execute(insert(FEEDBACK).values(**row, conversation_id=conversation_id))

    def feedback_events(self, catalog: str | None = None) -> list[dict]:
        """Every event (of one catalog, or all), oldest first, without text:
        {"user", "item", "catalog", "signal", "time", "kind"}."""
        f = FEEDBACK.c
        query = select(f.user_key, f.item, f.catalog, f.signal, f.time, f.kind).order_by(f.time, f.id)
        if catalog is not None:
            query = query.where(f.catalog == str(catalog))
        with self._transaction() as conn:
            rows = conn.execute(query).all()
        return [
            {"user": u, "item": i, "catalog": c, "signal": int(s), "time": float(t), "kind": k}
            for u, i, c, s, t, k in rows
        ]

    def user_events(self, user_key: str, catalog: str) -> list[tuple[str, int]]:
        """One user's (item, signal) events in one catalog, oldest first: what shapes their ranking."""
        f = FEEDBACK.c
        query = select(f.item, f.signal).where(f.user_key == user_key, f.catalog == str(catalog)).order_by(f.time, f.id)
        with self._transaction() as conn:
            return [(str(i), int(s)) for i, s in conn.execute(query).all()]

    def forget(self, user_key: str) -> int:
        """Delete the user's feedback, conversations, their turns and threads; the number of rows deleted.
        SQLite overwrites them (secure_delete) and folds the WAL, which still holds the old pages, into the file."""
        owned = select(CONVERSATIONS.c.id).where(CONVERSATIONS.c.owner == user_key).scalar_subquery()
        with self._transaction(write=True) as conn:
            deleted = conn.execute(delete(FEEDBACK).where(FEEDBACK.c.user_key == user_key)).rowcount
            deleted += conn.execute(delete(TURNS).where(TURNS.c.conversation_id.in_(owned))).rowcount
            deleted += conn.execute(delete(THREADS).where(THREADS.c.conversation_id.in_(owned))).rowcount
            deleted += conn.execute(delete(CONVERSATIONS).where(CONVERSATIONS.c.owner == user_key)).rowcount
        if deleted and self.sqlite:
            try:
                self._sqlite_pragma("wal_checkpoint(TRUNCATE)")
            except (sqlite3.Error, DatabaseError):
                pass  # another recagent is reading; its next checkpoint does it
        return deleted

    # -- conversations -------------------------------------------------------------------------------------------
    def create_conversation(self, owner: str, catalog: str, state: dict, title: str = "") -> ConversationRecord:
        now = time.time()
        record = ConversationRecord(secrets.token_urlsafe(16), owner, catalog, short_title(title), now, now, 0, state)
        row = {**vars(record), "state": _dumps(state)}
        with self._transaction(write=True) as conn:
            conn.execute(insert(CONVERSATIONS).values(**row))
        return record

    def _owned(self, conversation_id: str, owner: str) -> Any:
        c = CONVERSATIONS.c
        return (c.id == conversation_id) & (c.owner == owner)

    def get_conversation(self, conversation_id: str, owner: str) -> ConversationRecord | None:
        """The conversation; None for an unknown id and for another owner's (both answer 404)."""
        with self._transaction() as conn:
            row = conn.execute(select(CONVERSATIONS).where(self._owned(conversation_id, owner))).mappings().first()
        return ConversationRecord(**{**row, "state": json.loads(row["state"])}) if row else None

    def list_conversations(self, owner: str) -> list[ConversationRecord]:
        """The owner's conversations, the most recently updated first."""
        c = CONVERSATIONS.c
        query = select(CONVERSATIONS).where(c.owner == owner).order_by(c.updated.desc(), c.id)
        with self._transaction() as conn:
            rows = conn.execute(query).mappings().all()
        return [ConversationRecord(**{**row, "state": json.loads(row["state"])}) for row in rows]

    def count_conversations(self) -> int:
        with self._transaction() as conn:
            return int(conn.execute(select(func.count()).select_from(CONVERSATIONS)).scalar_one())

    def delete_conversation(self, conversation_id: str, owner: str) -> bool:
        """Delete it with its turns and threads (its feedback stays, unlinked); False when not the owner's."""
        with self._transaction(write=True) as conn:
            return bool(conn.execute(delete(CONVERSATIONS).where(self._owned(conversation_id, owner))).rowcount)

    def _bump(self, conn: Connection, conversation_id: str, owner: str, expected: int, changes: dict) -> int:
        """Move the conversation from `expected` to the next version, or raise StoreConflict (nothing written)."""
        values = {**changes, "version": expected + 1, "updated": time.time()}
        where = self._owned(conversation_id, owner) & (CONVERSATIONS.c.version == expected)
        if conn.execute(update(CONVERSATIONS).where(where).values(**values)).rowcount == 1:
            return expected + 1
        query = select(CONVERSATIONS.c.version).where(self._owned(conversation_id, owner))
        current = conn.execute(query).scalar()
        if current is None:
            raise StoreConflict(f"conversation {conversation_id} no longer exists", None)
        raise StoreConflict(
            f"conversation {conversation_id} changed meanwhile (version {current}, not {expected}); nothing was stored",
            int(current),
        )

    def commit_turn(
        self,
        conversation_id: str,
        owner: str,
        expected_version: int,
        new_state: dict,
        request: dict,
        reply: dict,
        title: str | None = None,
    ) -> int:
        """Store a finished turn atomically: the new state, the next version and the turn row in one transaction.
        Returns the new version; StoreConflict when the stored version is no longer `expected_version`."""
        changes = {"state": _dumps(new_state), **({"title": short_title(title)} if title is not None else {})}
        with self._transaction(write=True) as conn:
            version = self._bump(conn, conversation_id, owner, expected_version, changes)
            last = select(func.coalesce(func.max(TURNS.c.number), 0)).where(TURNS.c.conversation_id == conversation_id)
            number = int(conn.execute(last).scalar_one()) + 1
            row = {"conversation_id": conversation_id, "number": number, "created": time.time()}
            conn.execute(insert(TURNS).values(**row, request=_dumps(request), reply=_dumps(reply)))
        return version

    def update_state(self, conversation_id: str, owner: str, expected_version: int, new_state: dict) -> int:
        """Store a change that is not a turn (a like on the conversation); the new version, or StoreConflict."""
        with self._transaction(write=True) as conn:
            return self._bump(conn, conversation_id, owner, expected_version, {"state": _dumps(new_state)})

    def turns(self, conversation_id: str, owner: str) -> list[TurnRecord] | None:
        """The conversation's turns in order; None for an unknown id or another owner's."""
        t = TURNS.c
        query = select(t.number, t.request, t.reply, t.created).where(t.conversation_id == conversation_id)
        with self._transaction() as conn:
            if conn.execute(select(CONVERSATIONS.c.id).where(self._owned(conversation_id, owner))).first() is None:
                return None
            rows = conn.execute(query.order_by(t.number)).all()
        return [TurnRecord(n, json.loads(req), json.loads(rep), float(c)) for n, req, rep, c in rows]

    # -- threads of the OpenAI-compatible endpoint ------------------------------------------------------------------
    def find_thread(self, key: str) -> str | None:
        """The conversation a message list with this key belongs to, if any."""
        with self._transaction() as conn:
            return conn.execute(select(THREADS.c.conversation_id).where(THREADS.c.key == key)).scalar()

    def remember_thread(self, key: str, conversation_id: str) -> None:
        """Point `key` at the conversation (replacing what it pointed at)."""
        row = {"key": key, "conversation_id": conversation_id, "created": time.time()}
        with self._transaction(write=True) as conn:
            if self.engine.dialect.name in ("sqlite", "postgresql"):
                dialect = sqlite if self.sqlite else postgresql
                stmt = dialect.insert(THREADS).values(**row)
                conn.execute(stmt.on_conflict_do_update(index_elements=["key"], set_=row))
            else:
                conn.execute(delete(THREADS).where(THREADS.c.key == key))
                conn.execute(insert(THREADS).values(**row))
