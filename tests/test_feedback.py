"""Feedback under a pseudonym: the salted hash, no raw names or unshared text on disk, the REPL commands, `forget`,
and a clear message for a broken store. Real files in a fresh home each; no index or model needed (fast)."""

from __future__ import annotations

import re
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
    """Everything in the home: the store, its WAL and shared memory, the salt."""
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
    salt = one.home / "feedback.salt"
    assert stat.S_IMODE(salt.stat().st_mode) == 0o600 and len(salt.read_bytes()) == 32


def test_the_name_is_never_written_and_text_only_when_given(settings):
    reader = None
    try:
        record_feedback(settings, NAME, "318", "movies", +1)
        reader = sqlite3.connect(store_path(settings))  # keeps the WAL file around while more is written
        reader.execute("SELECT count(*) FROM feedback").fetchone()
        record_feedback(settings, NAME, "2571", "movies", -1)
        record_feedback(settings, NAME, "1", "movies", +1, kind="accept")
        assert (settings.home / "feedback.sqlite3-wal").exists()
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
    assert done.exit_code == 0 and "deleted 2 feedback events" in done.output
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
    with pytest.raises(FeedbackError, match="feedback.sqlite3 is not a (readable )?recagent feedback store"):
        feedback_events(settings)
    with pytest.raises(FeedbackError):
        record_feedback(settings, "ana", "1", "movies", +1)
    r = repl(settings, user="ana")
    assert r.command("/like 1") and r.conversation.liked == ["101"]  # the session goes on
    assert "not stored as feedback" in r.console.export_text()
    done = CliRunner().invoke(cli.main, ["--home", str(settings.home), "forget", "ana"])  # the salt exists now
    assert done.exit_code == 1 and "Error: " in done.output and "feedback.sqlite3 is not a" in done.output
    assert "Traceback" not in done.output and isinstance(done.exception, SystemExit)
    assert path.read_bytes() == junk


def test_a_foreign_database_or_bad_salt_is_refused(settings):
    settings.home.mkdir(parents=True)
    with sqlite3.connect(store_path(settings)) as con:
        con.execute("CREATE TABLE notes (x)")
    with pytest.raises(FeedbackError, match="tables notes"):
        feedback_events(settings)
    store_path(settings).unlink()
    (settings.home / "feedback.salt").write_bytes(b"short")
    with pytest.raises(FeedbackError, match="not a recagent feedback salt"):
        user_key("ana", settings)
    assert (settings.home / "feedback.salt").read_bytes() == b"short"


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
