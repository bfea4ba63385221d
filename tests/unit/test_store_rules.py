"""The database's pure rules (tools/store_schema.py): feedback kinds, pseudonyms, titles, URLs and the migration list.
No database is opened here (tests/test_store.py opens real ones)."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest

from recagent.tools.store_schema import (
    MIGRATIONS,
    SCHEMA_VERSION,
    TITLE_CHARS,
    display_url,
    feedback_kind,
    pseudonym,
    short_title,
    sqlite_file,
)


def test_feedback_kinds_go_with_their_signal():
    kinds = [feedback_kind(1, None), feedback_kind(-1, None), feedback_kind(1, "accept")]
    assert kinds == ["like", "dislike", "accept"]
    for signal, kind in [(2, None), (0, None), (True, None), (-1, "accept"), (1, "dislike"), (1, "love")]:
        with pytest.raises(ValueError):
            feedback_kind(signal, kind)


def test_a_pseudonym_is_the_hmac_of_the_stripped_name():
    salt = bytes(range(32))
    assert pseudonym(salt, "  ana ") == hmac.new(salt, b"ana", hashlib.sha256).hexdigest() == pseudonym(salt, "ana")
    assert pseudonym(salt, "ana") != pseudonym(salt, "Ana") and pseudonym(bytes(32), "ana") != pseudonym(salt, "ana")
    assert pseudonym(salt, "Zoë") == hmac.new(salt, "Zoë".encode(), hashlib.sha256).hexdigest()
    for empty in ("", "   ", None):
        with pytest.raises(ValueError, match="empty"):
            pseudonym(salt, empty)  # type: ignore[arg-type]


def test_titles_are_one_short_line():
    assert short_title("  a heist\n that\tgoes   wrong ") == "a heist that goes wrong"
    long = short_title("word " * 40)
    assert len(long) == TITLE_CHARS and long.endswith("…") and "  " not in long
    assert short_title("x" * TITLE_CHARS) == "x" * TITLE_CHARS and short_title("") == ""


def test_urls_are_named_without_their_password():
    assert sqlite_file("sqlite:////srv/home/recagent.sqlite3") == Path("/srv/home/recagent.sqlite3")
    assert sqlite_file("sqlite:///relative.sqlite3") == Path("relative.sqlite3")
    assert sqlite_file("sqlite://") is None and sqlite_file("sqlite:///:memory:") is None
    assert sqlite_file("postgresql+psycopg://u:pw@db/recagent") is None
    assert display_url("sqlite:////srv/home/recagent.sqlite3") == "/srv/home/recagent.sqlite3"
    shown = display_url("postgresql+psycopg://app:p%40ss-w0rd@db.example:5433/recagent")
    assert shown == "postgresql+psycopg://app:***@db.example:5433/recagent" and "w0rd" not in shown


def test_the_schema_version_counts_the_migration_steps():
    assert SCHEMA_VERSION == len(MIGRATIONS) >= 2
    assert [step.__name__ for step in MIGRATIONS] == ["_v1_feedback", "_v2_conversations"]  # released: never reorder
