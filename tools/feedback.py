"""Feedback on recommended items (likes, dislikes, accepted items), stored under a pseudonym.

The events go to recagent's database (tools/store.py, `settings.database_url()`: `HOME/recagent.sqlite3` by
default, a SQLite file with a WAL journal so several REPLs can write at once, readable by its owner only; or the
PostgreSQL database `recagent serve` replicas share). A user is kept as an HMAC-SHA256 of the name keyed with a
random salt made once in that database: the same name gives the same key in one database and unrelated keys in
another, and the name itself is never written. The conversation text is stored only when the caller passes it,
which the REPL does only when the user opted in (`--share-text` or RECAGENT_FEEDBACK_TEXT=1).

The store recagent kept before (`HOME/feedback.sqlite3` and `HOME/feedback.salt`) is imported, salt first so the
pseudonyms stay the same, when the default database is created; the old files are never written again.

    from recagent.tools.feedback import record_feedback, feedback_events, forget_user
    record_feedback(settings, "ana", "318", "movies", +1)
    feedback_events(settings, catalog="movies")   # [{"user": "3f1c...", "item": "318", "catalog": "movies",
                                                  #   "signal": 1, "time": 1764535200.0, "kind": "like"}]
    user_events(settings, "ana", "movies")        # [("318", 1)]: what agent.turn(..., feedback=) takes
    forget_user(settings, "ana")                  # -> 1 (rows deleted)
"""

from __future__ import annotations

import getpass
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import DatabaseError, FeedbackError
from .settings import Settings
from .store import Store
from .store_schema import KINDS, LEGACY_STORE, feedback_kind, sqlite_file

__all__ = [
    "KINDS",
    "FeedbackError",
    "feedback_events",
    "feedback_user",
    "forget_user",
    "record_feedback",
    "store_path",
    "user_events",
    "user_key",
]


def feedback_user(settings: Settings) -> str:
    """Whose feedback this is: the settings' user (--user, RECAGENT_USER), else the login name, else "anonymous"."""
    name = (settings.user or "").strip()
    if name:
        return name
    try:
        return getpass.getuser() or "anonymous"
    except (OSError, KeyError):  # no login name (some containers)
        return "anonymous"


def store_path(settings: Settings) -> Path | None:
    """The SQLite file the feedback goes to; None when the database is not a SQLite file (PostgreSQL)."""
    return sqlite_file(settings.database_url())


@contextmanager
def _as_feedback_error() -> Iterator[None]:
    """The database's problems, as this module has always reported them: a FeedbackError with the same message."""
    try:
        yield
    except DatabaseError as exc:
        raise FeedbackError(str(exc)) from None


def _store(settings: Settings, create: bool) -> Store | None:
    """The database; None when it does not exist and create is not set (reading never creates a SQLite file,
    unless there is an old feedback store to import into it)."""
    path = store_path(settings)
    if not create and path is not None and not path.exists():
        if settings.db_url or not (Path(settings.home) / LEGACY_STORE).is_file():
            return None
    with _as_feedback_error():
        return Store.for_settings(settings)


def _name(user: str) -> str:
    name = (user or "").strip()
    if not name:
        raise FeedbackError("the user name is empty; give one with --user NAME or RECAGENT_USER")
    return name


def user_key(user: str, settings: Settings) -> str:
    """The pseudonym stored for `user`: HMAC-SHA256 of the name with the database's salt, in hex."""
    name = _name(user)
    store = _store(settings, create=True)
    assert store is not None  # made when missing
    with _as_feedback_error():
        return store.user_key(name)


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
    kind = feedback_kind(signal, kind)  # ValueError before anything is stored
    key = user_key(user, settings)
    store = _store(settings, create=True)
    assert store is not None
    with _as_feedback_error():
        store.record_feedback(key, item_id, catalog, signal, kind=kind, text=text)
    return key


def feedback_events(settings: Settings, catalog: str | None = None) -> list[dict]:
    """Every stored event (of one catalog, or all), oldest first:
    {"user": pseudonym, "item": id, "catalog": name, "signal": +1 or -1, "time": seconds, "kind": like/dislike/accept}.
    An empty list when nothing was stored; never the conversation text."""
    store = _store(settings, create=False)
    if store is None:
        return []
    with _as_feedback_error():
        return store.feedback_events(catalog)


def user_events(settings: Settings, user: str, catalog: str) -> list[tuple[str, int]]:
    """`user`'s (item id, signal) events in `catalog`, oldest first (their likes, dislikes and accepts: what the
    agent's `feedback` argument takes); an empty list when nothing was stored."""
    store = _store(settings, create=False)
    if store is None:
        return []
    name = _name(user)
    with _as_feedback_error():
        return store.user_events(store.user_key(name), catalog)


def forget_user(settings: Settings, user: str) -> int:
    """Delete everything stored for `user` (their feedback and any text shared with it, their stored conversations
    and turns); the number of rows."""
    store = _store(settings, create=False)
    if store is None:
        return 0
    name = _name(user)
    with _as_feedback_error():
        return store.forget(store.user_key(name))
