"""Feedback under a pseudonym: the salted hash, no raw names or unshared text on disk, the REPL commands, `forget`,
a clear message for a broken store, and the import of the store recagent kept before its database (feedback.sqlite3
and feedback.salt, as written by the code before it, built here with plain sqlite3). Real files in a fresh home
each; no index or model needed (fast). The database itself (PostgreSQL too) is tested in test_store.py."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import stat
import threading
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from rich.console import Console

from recagent.agent import cli
from recagent.agent.conversation import Conversation
from recagent.agent.repl import Repl
from recagent.tools.feedback import FeedbackError, feedback_events, forget_user, record_feedback, store_path, user_key
from recagent.tools.settings import Settings

NAME = "Zelda Quintanilla-Marsh"  # a name that shows up in the bytes if it is ever written


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for var in ("RECAGENT_FEEDBACK", "RECAGENT_FEEDBACK_TEXT", "RECAGENT_USER", "RECAGENT_CONFIG"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings.load(home=tmp_path / "home")


def reloaded(settings: Settings) -> Settings:
    """The settings loaded again, as a new process would: the environment is read now."""
    return Settings.load(home=settings.home)


def home_bytes(settings: Settings) -> bytes:
    """Everything in the home: the database, its WAL and shared memory (and the old store, when there is one)."""
    return b"".join(p.read_bytes() for p in sorted(settings.home.iterdir()) if p.is_file())


def stub_agent(settings: Settings, items=("101", "202", "303"), catalog: str = "movies"):
    """What the REPL uses of an agent, with a conversation that has just shown `items`."""

    def new_conversation():
        conversation = Conversation(catalog=catalog)
        conversation.add_user("a quiet film about lighthouse keepers")
        conversation.add_assistant("Here are three.", list(items))
        return conversation

    return SimpleNamespace(
        settings=settings,
        catalog_name=catalog,
        new_conversation=new_conversation,
        catalog=SimpleNamespace(meta={i: {} for i in items}),
        llm=SimpleNamespace(name="stub"),
    )


def repl(settings: Settings, **options) -> Repl:
    return Repl(stub_agent(settings), console=Console(record=True, width=200), **options)


def test_the_pseudonym_is_stable_in_a_home_and_differs_between_homes(tmp_path):
    one, two = Settings.load(home=tmp_path / "one"), Settings.load(home=tmp_path / "two")
    key = user_key(NAME, one)
    assert re.fullmatch(r"[0-9a-f]{64}", key) and NAME not in key  # an HMAC-SHA256 in hex
    assert user_key(NAME, one) == key == user_key(f"  {NAME} ", Settings.load(home=tmp_path / "one"))
    assert user_key("someone else", one) != key
    assert user_key(NAME, two) != key
    assert sorted(p.name for p in one.home.iterdir() if not p.name.endswith(("-wal", "-shm"))) == ["recagent.sqlite3"]
    assert stat.S_IMODE(store_path(one).stat().st_mode) == 0o600  # the salt lives in the owner-only database
    with sqlite3.connect(store_path(one)) as con:
        (salt,) = con.execute("SELECT value FROM recagent_meta WHERE key = 'salt'").fetchone()
    assert len(bytes.fromhex(salt)) == 32 and key == old_key(bytes.fromhex(salt), NAME)  # the same HMAC as before


def test_the_name_is_never_written_and_text_only_when_given(settings):
    reader = None
    try:
        record_feedback(settings, NAME, "318", "movies", +1)
        reader = sqlite3.connect(store_path(settings))  # keeps the WAL file around while more is written
        reader.execute("SELECT count(*) FROM feedback").fetchone()
        record_feedback(settings, NAME, "2571", "movies", -1)
        record_feedback(settings, NAME, "1", "movies", +1, kind="accept")
        assert (settings.home / "recagent.sqlite3-wal").exists()
        data = home_bytes(settings)
        assert NAME.encode() not in data and NAME.lower().encode() not in data
        assert user_key(NAME, settings).encode() in data
        assert [r[0] for r in reader.execute("SELECT text FROM feedback")] == [None, None, None]
    finally:
        if reader:
            reader.close()
    assert stat.S_IMODE(store_path(settings).stat().st_mode) == 0o600
    events = feedback_events(settings)
    assert [(e["item"], e["signal"], e["kind"]) for e in events] == [
        ("318", 1, "like"),
        ("2571", -1, "dislike"),
        ("1", 1, "accept"),
    ]
    assert {e["user"] for e in events} == {user_key(NAME, settings)}
    assert all({"user", "item", "catalog", "signal", "time"} <= set(e) and isinstance(e["time"], float) for e in events)
    with pytest.raises(ValueError):
        record_feedback(settings, NAME, "1", "movies", 2)


def test_events_by_catalog_and_nothing_stored_yet(settings):
    assert feedback_events(settings) == [] and forget_user(settings, NAME) == 0
    assert not settings.home.exists()  # reading never creates the store or the salt
    record_feedback(settings, "ana", "1", "movies", +1)
    record_feedback(settings, "ana", "15123", "fashion", -1)
    assert [e["item"] for e in feedback_events(settings, catalog="fashion")] == ["15123"]
    assert [e["catalog"] for e in feedback_events(settings)] == ["movies", "fashion"]


def test_repl_like_dislike_and_accept_record_feedback(settings):
    r = repl(settings, user=NAME)
    for line in ("/like 1", "/dislike 2", "/accept 3", "/like 99", "/watch 1"):
        assert r.command(line)
    out = r.console.export_text()
    assert "noted: you like item 1 (stored as feedback" in out and "usage: /like N" in out
    assert r.conversation.liked == ["101", "303"] and r.conversation.disliked == ["202"]
    events = feedback_events(settings)
    assert [(e["item"], e["signal"], e["kind"]) for e in events] == [
        ("101", 1, "like"),
        ("202", -1, "dislike"),
        ("303", 1, "accept"),
        ("101", 1, "accept"),
    ]
    assert {e["user"] for e in events} == {user_key(NAME, settings)} and {e["catalog"] for e in events} == {"movies"}
    data = home_bytes(settings)
    assert NAME.encode() not in data and b"lighthouse" not in data  # no conversation text: not opted in


def test_the_next_turn_gets_the_users_stored_likes_and_forget_or_off_takes_them_away(settings):
    r = repl(settings, user=NAME)
    assert r.taste_events() == []  # nothing stored yet (and no database made by asking)
    r.command("/like 1")
    r.command("/dislike 2")
    later = repl(settings, user=NAME)  # a later conversation of the same user
    assert later.taste_events() == [("101", 1), ("202", -1)]
    assert repl(settings, user="someone else").taste_events() == []
    assert repl(settings, user=NAME, feedback=False).taste_events() is None  # --no-feedback: no taste at all
    forget_user(settings, NAME)
    assert later.taste_events() == []


def test_conversation_text_is_stored_only_when_the_user_opts_in(settings, monkeypatch):
    repl(settings, user="ana", share_text=True).command("/like 1")
    monkeypatch.setenv("RECAGENT_FEEDBACK_TEXT", "1")  # read when the settings are loaded
    repl(reloaded(settings), user="bob").command("/like 2")
    repl(reloaded(settings), user="cy", share_text=False).command("/like 3")  # the option beats the environment
    with sqlite3.connect(store_path(settings)) as con:
        texts = [t for (t,) in con.execute("SELECT text FROM feedback ORDER BY id")]
    assert "lighthouse keepers" in texts[0] and "lighthouse keepers" in texts[1] and texts[2] is None
    assert all("text" not in e for e in feedback_events(settings))


def test_feedback_can_be_turned_off(settings, monkeypatch):
    r = repl(settings, user="ana", feedback=False)
    r.command("/like 1")
    r.command("/help")
    assert r.conversation.liked == ["101"] and "not being stored" in r.console.export_text()
    monkeypatch.setenv("RECAGENT_FEEDBACK", "0")
    repl(reloaded(settings), user="ana").command("/dislike 2")
    assert not settings.home.exists()
    repl(reloaded(settings), user="ana", feedback=True).command("/like 3")  # the option beats the environment
    assert [e["item"] for e in feedback_events(settings)] == ["303"]


def test_help_explains_the_pseudonym(settings):
    r = repl(settings, user="ana")
    r.command("/help")
    out = r.console.export_text()
    assert "pseudonym" in out and "salted hash" in out and "/accept N" in out and "recagent forget" in out
    assert "feedback is stored for user 'ana' under a pseudonym, without the conversation text" in out


def test_forget_deletes_exactly_that_users_rows(settings):
    runner = CliRunner()
    record_feedback(settings, NAME, "1", "movies", +1, text="secret-zelda-words")
    record_feedback(settings, NAME, "2", "fashion", -1)
    record_feedback(settings, "bob", "1", "movies", +1)
    done = runner.invoke(cli.main, ["--home", str(settings.home), "forget", NAME])
    assert done.exit_code == 0 and "deleted 2 stored records of" in done.output
    assert [(e["user"], e["item"]) for e in feedback_events(settings)] == [(user_key("bob", settings), "1")]
    assert b"secret-zelda-words" not in home_bytes(settings)  # overwritten, not just unlinked from the table
    again = runner.invoke(cli.main, ["--home", str(settings.home), "forget", NAME])
    assert again.exit_code == 0 and f"nothing stored for {NAME}" in again.output
    empty = runner.invoke(cli.main, ["--home", str(settings.home / "elsewhere"), "forget", "bob"])
    assert empty.exit_code == 0 and "nothing stored for bob" in empty.output


@pytest.mark.parametrize("junk", [b"this is not a database", b"\x00" * 4096, b"SQLite format 3\x00" + b"\xff" * 300])
def test_a_corrupt_store_gives_a_clear_message_and_is_left_alone(settings, junk):
    settings.home.mkdir(parents=True)
    path = store_path(settings)
    path.write_bytes(junk)
    with pytest.raises(FeedbackError, match="recagent.sqlite3 is not a (readable )?recagent database"):
        feedback_events(settings)
    with pytest.raises(FeedbackError):
        record_feedback(settings, "ana", "1", "movies", +1)
    r = repl(settings, user="ana")
    assert r.command("/like 1") and r.conversation.liked == ["101"]  # the session goes on
    assert "not stored as feedback" in r.console.export_text()
    done = CliRunner().invoke(cli.main, ["--home", str(settings.home), "forget", "ana"])
    assert done.exit_code == 1 and "Error: " in done.output and "recagent.sqlite3 is not a" in done.output
    assert "Traceback" not in done.output and isinstance(done.exception, SystemExit)
    assert path.read_bytes() == junk


def test_a_foreign_database_or_bad_salt_is_refused(settings):
    settings.home.mkdir(parents=True)
    with sqlite3.connect(store_path(settings)) as con:
        con.execute("CREATE TABLE notes (x)")
    with pytest.raises(FeedbackError, match="tables notes"):
        feedback_events(settings)
    assert store_path(settings).read_bytes()[:16] == b"SQLite format 3\x00"  # still its own: not turned to WAL
    with sqlite3.connect(store_path(settings)) as con:
        assert con.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    store_path(settings).unlink()
    user_key("ana", settings)  # a new database, with its salt
    with sqlite3.connect(store_path(settings)) as con:
        con.execute("UPDATE recagent_meta SET value = 'short' WHERE key = 'salt'")
    with pytest.raises(FeedbackError, match="holds no usable pseudonym salt"):
        user_key("ana", reloaded(settings))
    with sqlite3.connect(store_path(settings)) as con:
        assert con.execute("SELECT value FROM recagent_meta WHERE key = 'salt'").fetchone() == ("short",)


def test_concurrent_writers(settings):
    def write(n):
        for i in range(20):
            record_feedback(settings, f"user{n}", str(i), "movies", +1)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    events = feedback_events(settings)
    assert len(events) == 80 and len({e["user"] for e in events}) == 4


def test_chat_options_reach_the_repl(settings, monkeypatch):
    monkeypatch.setattr(cli.chat, "agent_for", lambda s, *args: stub_agent(s))
    done = CliRunner().invoke(
        cli.main,
        ["--home", str(settings.home), "chat", "--user", NAME, "--share-text"],
        input="/like 1\n/buy 2\n/quit\n",
    )
    assert done.exit_code == 0, done.output
    assert "pseudonym" in done.output and "stored as feedback" in done.output
    with sqlite3.connect(store_path(settings)) as con:  # --share-text
        assert all("lighthouse keepers" in t for (t,) in con.execute("SELECT text FROM feedback"))
    events = feedback_events(settings)
    assert [(e["item"], e["kind"]) for e in events] == [("101", "like"), ("202", "accept")]
    assert {e["user"] for e in events} == {user_key(NAME, settings)}
    monkeypatch.setenv("RECAGENT_USER", "ana")
    off = CliRunner().invoke(cli.main, ["--home", str(settings.home), "chat", "--no-feedback"], input="/like 3\n")
    assert off.exit_code == 0 and "not being stored" in off.output and len(feedback_events(settings)) == 2
    on = CliRunner().invoke(cli.main, ["--home", str(settings.home), "chat"], input="/dislike 3\n")
    assert on.exit_code == 0 and feedback_events(settings)[-1]["user"] == user_key("ana", settings)


def test_load_and_save_problems_are_one_line_and_the_session_goes_on(settings, tmp_path):
    r = repl(settings, user="ana")
    (tmp_path / "broken.json").write_text("{oops")
    r.command(f"/load {tmp_path / 'broken.json'}")
    r.command(f"/save {tmp_path / 'no-such-folder' / 'talk.json'}")
    r.command("/like 1")  # the conversation is still the one shown
    out = r.console.export_text()
    assert "cannot load" in out and "not a recagent conversation" in out and "cannot save to" in out
    assert r.conversation.liked == ["101"] and "Traceback" not in out


# -- the store recagent kept before its database -------------------------------------------------------------------
OLD_SCHEMA = """
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY,
    user TEXT NOT NULL,
    item TEXT NOT NULL,
    catalog TEXT NOT NULL,
    signal INTEGER NOT NULL CHECK (signal IN (-1, 1)),
    kind TEXT NOT NULL,
    time REAL NOT NULL,
    text TEXT
);
CREATE INDEX IF NOT EXISTS feedback_user ON feedback (user);
CREATE INDEX IF NOT EXISTS feedback_catalog ON feedback (catalog);
"""
OLD_ROWS = [
    (NAME, "318", "movies", 1, "like", 100.0, None),
    ("bob", "2", "movies", -1, "dislike", 200.0, '[{"role": "user", "content": "secret-bob-words"}]'),
    (NAME, "15", "fashion", 1, "accept", 300.0, None),
]


def old_key(salt: bytes, name: str) -> str:
    return hmac.new(salt, name.encode("utf-8"), hashlib.sha256).hexdigest()


def write_old_store(home, rows=OLD_ROWS, salt: bytes | None = None) -> tuple[bytes, sqlite3.Connection]:
    """HOME/feedback.sqlite3 (WAL, schema user_version 1) and HOME/feedback.salt as the code before the database
    wrote them; returns the salt and the writer's connection, still open (close it to fold its WAL)."""
    home.mkdir(parents=True, exist_ok=True)
    salt = secrets.token_bytes(32) if salt is None else salt
    fd = os.open(home / "feedback.salt", os.O_CREAT | os.O_WRONLY, 0o600)
    os.write(fd, salt)
    os.close(fd)
    con = sqlite3.connect(home / "feedback.sqlite3", isolation_level=None)
    con.execute("PRAGMA journal_mode = WAL")
    con.executescript(OLD_SCHEMA)
    con.execute("PRAGMA user_version = 1")
    for name, *rest in rows:
        insert = "INSERT INTO feedback (user, item, catalog, signal, kind, time, text) VALUES (?,?,?,?,?,?,?)"
        con.execute(insert, (old_key(salt, name), *rest))
    return salt, con


def old_files(home) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in home.iterdir() if p.name.startswith("feedback.")}


def test_the_old_store_is_imported_with_its_pseudonyms_and_never_written_again(settings):
    salt, writer = write_old_store(settings.home)
    writer.close()
    before = old_files(settings.home)
    assert set(before) == {"feedback.sqlite3", "feedback.salt"}
    events = feedback_events(settings)  # the first open of the default database creates it and imports
    assert [(e["user"], e["item"], e["catalog"], e["signal"], e["kind"], e["time"]) for e in events] == [
        (old_key(salt, NAME), "318", "movies", 1, "like", 100.0),
        (old_key(salt, "bob"), "2", "movies", -1, "dislike", 200.0),
        (old_key(salt, NAME), "15", "fashion", 1, "accept", 300.0),
    ]
    assert user_key(NAME, settings) == old_key(salt, NAME)  # the salt came first: the same pseudonyms
    with sqlite3.connect(store_path(settings)) as con:
        assert [t for (t,) in con.execute("SELECT text FROM feedback ORDER BY id")][1] == OLD_ROWS[1][6]
    record_feedback(settings, NAME, "4", "movies", +1)
    assert len(feedback_events(reloaded(settings))) == 4  # imported once
    done = CliRunner().invoke(cli.main, ["--home", str(settings.home), "forget", "bob"])
    assert done.exit_code == 0 and "deleted 1 stored record of bob" in done.output
    assert b"secret-bob-words" not in store_path(settings).read_bytes()
    assert old_files(settings.home) == before  # read, never written: no -wal or -shm beside them either
    assert stat.S_IMODE(store_path(settings).stat().st_mode) == 0o600


def test_the_old_store_is_read_through_its_unfolded_wal(settings):
    salt, writer = write_old_store(settings.home)  # an old REPL still running: its writes are in the WAL only
    try:
        assert (settings.home / "feedback.sqlite3-wal").stat().st_size > 0
        main, wal = (
            (settings.home / "feedback.sqlite3").read_bytes(),
            (settings.home / "feedback.sqlite3-wal").read_bytes(),
        )
        assert [e["item"] for e in feedback_events(settings)] == ["318", "2", "15"]
        assert (settings.home / "feedback.sqlite3").read_bytes() == main
        assert (settings.home / "feedback.sqlite3-wal").read_bytes() == wal
    finally:
        writer.close()


def test_an_existing_database_is_not_imported_into(settings):
    record_feedback(settings, "cy", "7", "movies", +1)  # the database exists (and has its own salt)
    write_old_store(settings.home)[1].close()
    assert [e["item"] for e in feedback_events(reloaded(settings))] == ["7"]


def test_a_broken_old_store_or_salt_is_refused_and_left_as_it_is(settings):
    write_old_store(settings.home)[1].close()
    (settings.home / "feedback.salt").write_bytes(b"short")
    before = old_files(settings.home)
    with pytest.raises(FeedbackError, match=r"feedback.salt is not a recagent feedback salt \(5 bytes\)"):
        feedback_events(settings)
    with pytest.raises(FeedbackError, match="feedback.salt is not a recagent feedback salt"):
        record_feedback(settings, "ana", "1", "movies", +1)  # nothing is stored while the import cannot be done
    assert old_files(settings.home) == before
    (settings.home / "feedback.salt").unlink()
    (settings.home / "feedback.sqlite3").write_bytes(b"this is not a database")
    before = old_files(settings.home)
    with pytest.raises(FeedbackError, match="feedback.sqlite3 is not a readable recagent feedback store"):
        feedback_events(settings)
    assert old_files(settings.home) == before
    (settings.home / "feedback.sqlite3").unlink()  # moved away: recagent starts without it
    record_feedback(settings, "ana", "1", "movies", +1)
    assert [e["item"] for e in feedback_events(settings)] == ["1"]
