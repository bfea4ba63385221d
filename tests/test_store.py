"""recagent's database (tools/store.py) on real SQLite files and on a real throwaway PostgreSQL cluster started here:
schema and upgrades, atomic turns, ownership, forget, the shared salt, and an unavailable database. Nothing mocked.
The PostgreSQL cluster (the `postgres` fixture) is tests/conftest.py's."""

from __future__ import annotations

import json
import os
import re
import stat
import threading
from pathlib import Path

import pytest
from conftest import PASSWORD
from sqlalchemy import create_engine, insert, inspect, select, text

from recagent.tools.errors import ConflictError, DatabaseError
from recagent.tools.store import Store, StoreConflict, close_all
from recagent.tools.store_schema import FEEDBACK, META, MIGRATIONS, SCHEMA_VERSION, pseudonym

TABLES = {"recagent_meta", "feedback", "conversations", "turns", "openai_threads"}
STATE = {"catalog": "movies", "messages": [], "shown": []}


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path) -> str:
    """A new, empty database of each kind."""
    if request.param == "sqlite":
        (tmp_path / "home").mkdir()
        return f"sqlite:///{tmp_path / 'home' / 'recagent.sqlite3'}"
    return request.getfixturevalue("postgres").new_database()


REFUSE_TURNS = {
    "sqlite": ["CREATE TRIGGER refuse_turns BEFORE INSERT ON turns BEGIN SELECT RAISE(ABORT, 'turns refused'); END"],
    "postgresql": [
        "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'turns refused'; END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER refuse_turns BEFORE INSERT ON turns FOR EACH ROW EXECUTE FUNCTION refuse()",
    ],
}


def replica_urls(url: str, n: int) -> list[str]:
    """n URLs of one database: a Store on each has its own engine and pool, as n processes would."""
    if url.startswith("sqlite"):
        head, name = url.rsplit("/", 1)
        return [head + "/." * i + "/" + name for i in range(n)]  # the same file
    return [f"{url}?application_name=replica{i}" for i in range(n)]


def replicas(url: str, n: int) -> list[Store]:
    return [Store(u) for u in replica_urls(url, n)]


def raw(url: str, sql: str, **params: object) -> list[tuple]:
    """A statement run beside the Store, through an engine of its own (committed)."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            result = conn.execute(text(sql), params)
            return [tuple(r) for r in result] if result.returns_rows else []
    finally:
        engine.dispose()


def conversation(store: Store, owner: str, title: str = "heist films"):
    return store.create_conversation(owner, "movies", dict(STATE), title)


# -- schema -----------------------------------------------------------------------------------------------------
def test_the_schema_is_created_with_its_version(url):
    store = Store(url)
    with store.engine.connect() as conn:
        assert set(inspect(conn).get_table_names()) == TABLES
        assert conn.execute(select(META.c.value).where(META.c.key == "schema_version")).scalar() == "2"
    assert SCHEMA_VERSION == len(MIGRATIONS) == 2
    assert re.fullmatch(r"[0-9a-f]{64}", store.user_key("ana")) and store.user_key(" ana ") == store.user_key("ana")
    with pytest.raises(ValueError, match="empty"):
        store.user_key("  ")
    assert Store(url).user_key("ana") == store.user_key("ana")  # opened again: the same salt


def test_sqlite_is_wal_owner_only_with_foreign_keys_and_a_busy_timeout(tmp_path):
    path = tmp_path / "deep" / "er" / "recagent.sqlite3"
    store = Store(f"sqlite:///{path}")
    store.record_feedback(store.user_key("ana"), "1", "movies", +1)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and Path(f"{path}-wal").exists()
    assert stat.S_IMODE(Path(f"{path}-wal").stat().st_mode) == 0o600
    with store.engine.connect() as conn:
        pragmas = [conn.exec_driver_sql(f"PRAGMA {p}").scalar() for p in ("journal_mode", "foreign_keys")]
        assert pragmas == ["wal", 1] and conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 10_000


def test_an_upgrade_from_version_1_keeps_everything(url):
    engine = create_engine(url)  # a database as version 1 of the schema left it: its released step, its rows
    salt = os.urandom(32)
    with engine.begin() as conn:
        MIGRATIONS[0](conn)
        conn.execute(insert(META), [{"key": "schema_version", "value": "1"}, {"key": "salt", "value": salt.hex()}])
        row = {"user_key": pseudonym(salt, "ana"), "item": "318", "catalog": "movies", "signal": 1, "kind": "like"}
        conn.execute(insert(FEEDBACK).values(**row, time=100.0, text="kept words"))
    engine.dispose()
    store = Store(url)  # upgrades 1 -> 2
    assert raw(url, "SELECT value FROM recagent_meta WHERE key = 'schema_version'") == [("2",)]
    assert store.user_key("ana") == pseudonym(salt, "ana")  # the salt is kept
    assert store.feedback_events() == [
        {"user": pseudonym(salt, "ana"), "item": "318", "catalog": "movies", "signal": 1, "time": 100.0, "kind": "like"}
    ]
    assert raw(url, "SELECT text, conversation_id FROM feedback") == [("kept words", None)]
    record = conversation(store, store.user_key("ana"))  # the new tables work
    store.record_feedback(store.user_key("ana"), "2", "movies", -1, conversation_id=record.id)
    assert raw(url, "SELECT conversation_id FROM feedback ORDER BY id") == [(None,), (record.id,)]


def test_a_newer_or_foreign_database_is_refused_and_left_as_it_is(url):
    Store(url)
    close_all()
    raw(url, "UPDATE recagent_meta SET value = '9' WHERE key = 'schema_version'")
    with pytest.raises(DatabaseError, match=r"has schema version 9, newer than this recagent reads \(2\).*left as it"):
        Store(url)
    assert raw(url, "SELECT value FROM recagent_meta WHERE key = 'schema_version'") == [("9",)]
    for name in TABLES:
        raw(url, f"DROP TABLE {name} CASCADE" if "postgresql" in url else f"DROP TABLE {name}")
    raw(url, "CREATE TABLE notes (x INTEGER)")
    with pytest.raises(DatabaseError, match=r"is not a recagent database \(tables notes\); it was left as it is"):
        Store(url)
    assert raw(url, "SELECT count(*) FROM notes") == [(0,)]
    with pytest.raises(DatabaseError, match="not a database URL"):
        Store("no url at all")


@pytest.mark.parametrize("junk", [b"this is not a database", b"SQLite format 3\x00" + b"\xff" * 300])
def test_a_damaged_sqlite_file_is_refused_and_left_as_it_is(tmp_path, junk):
    path = tmp_path / "recagent.sqlite3"
    path.write_bytes(junk)
    with pytest.raises(DatabaseError, match=r"recagent.sqlite3 is not a readable recagent database \(.+\); it was"):
        Store(f"sqlite:///{path}")
    assert path.read_bytes() == junk and sorted(p.name for p in tmp_path.iterdir()) == ["recagent.sqlite3"]
    path.unlink()  # moved away: the next open starts a new one
    assert Store(f"sqlite:///{path}").count_conversations() == 0


# -- conversations and turns -------------------------------------------------------------------------------------
def test_conversations_turns_and_titles(url):
    store = Store(url)
    ana = store.user_key("ana")
    first = conversation(store, ana, "  a   heist\nthat goes wrong " + "x" * 100)
    assert re.fullmatch(r"[A-Za-z0-9_-]{16,}", first.id) and first.version == 0 and first.state == STATE
    assert len(first.title) == 80 and first.title.startswith("a heist that goes wrong x")
    reply = {"reply": "Here are five.", "items": [{"id": "1", "title": "Heat", "score": 0.5}], "timings": {"x": 1.5}}
    state = {**STATE, "shown": ["1"], "messages": [{"role": "user", "content": "a heist — é"}]}
    assert store.commit_turn(first.id, ana, 0, state, {"text": "a heist"}, reply, title="Heists") == 1
    assert store.commit_turn(first.id, ana, 1, state, {"text": "older"}, reply) == 2
    got = store.get_conversation(first.id, ana)
    assert got is not None and (got.version, got.state, got.title) == (2, state, "Heists") and got.updated > got.created
    turns = store.turns(first.id, ana)
    assert turns is not None and [(t.number, t.request["text"]) for t in turns] == [(1, "a heist"), (2, "older")]
    assert turns[0].reply == reply
    second = conversation(store, ana, "second")
    assert [c.id for c in store.list_conversations(ana)] == [second.id, first.id]  # the latest change first
    assert store.update_state(first.id, ana, 2, {**state, "liked": ["1"]}) == 3  # a change without a turn
    assert [c.id for c in store.list_conversations(ana)] == [first.id, second.id]
    assert len(store.turns(first.id, ana) or []) == 2 and store.count_conversations() == 2
    store.remember_thread("key-1", first.id)
    assert store.find_thread("key-1") == first.id and store.find_thread("key-2") is None
    store.remember_thread("key-1", second.id)  # the key moves on
    assert store.find_thread("key-1") == second.id
    store.record_feedback(ana, "1", "movies", +1, conversation_id=second.id)
    store.commit_turn(second.id, ana, 0, state, {"text": "x"}, reply)
    assert raw(url, "SELECT count(*) FROM turns WHERE conversation_id = :id", id=second.id) == [(1,)]
    assert store.delete_conversation(second.id, ana) and store.find_thread("key-1") is None
    assert raw(url, "SELECT count(*) FROM turns WHERE conversation_id = :id", id=second.id) == [(0,)]
    assert store.get_conversation(second.id, ana) is None and store.turns(second.id, ana) is None
    assert [e["item"] for e in store.feedback_events()] == ["1"]  # the feedback stays, unlinked
    assert raw(url, "SELECT conversation_id FROM feedback") == [(None,)]


def test_another_owners_conversation_is_not_there(url):
    store = Store(url)
    ana, bob = store.user_key("ana"), store.user_key("bob")
    record = conversation(store, ana)
    assert store.get_conversation(record.id, bob) is None and store.get_conversation("no-such-id", ana) is None
    assert store.turns(record.id, bob) is None and store.list_conversations(bob) == []
    assert not store.delete_conversation(record.id, bob) and not store.delete_conversation("no-such-id", ana)
    with pytest.raises(StoreConflict, match="no longer exists") as caught:
        store.commit_turn(record.id, bob, 0, {"stolen": True}, {"text": "x"}, {"reply": "y"})
    assert caught.value.current_version is None
    got = store.get_conversation(record.id, ana)
    assert got is not None and got.state == STATE and got.version == 0 and store.turns(record.id, ana) == []


def test_a_conflict_writes_nothing(url):
    store = Store(url)
    ana = store.user_key("ana")
    record = conversation(store, ana)
    assert store.commit_turn(record.id, ana, 0, {**STATE, "shown": ["1"]}, {"text": "one"}, {"reply": "1"}) == 1
    with pytest.raises(StoreConflict, match=r"changed meanwhile \(version 1, not 0\)") as caught:
        store.commit_turn(record.id, ana, 0, {**STATE, "shown": ["2"]}, {"text": "two"}, {"reply": "2"}, title="new")
    assert caught.value.current_version == 1 and isinstance(caught.value, ConflictError)
    got = store.get_conversation(record.id, ana)
    assert got is not None and (got.version, got.state["shown"], got.title) == (1, ["1"], "heist films")
    assert [t.request["text"] for t in store.turns(record.id, ana) or []] == ["one"]


def test_a_failure_inside_the_transaction_leaves_the_old_state(url):
    store = Store(url)
    ana = store.user_key("ana")
    record = conversation(store, ana)
    for sql in REFUSE_TURNS["postgresql" if url.startswith("postgresql") else "sqlite"]:
        raw(url, sql)  # the database fails the turn row, after the state and the version were updated
    with pytest.raises(DatabaseError, match=r"refused a request \(.*turns refused"):
        store.commit_turn(record.id, ana, 0, {**STATE, "shown": ["9"]}, {"text": "x"}, {"reply": "y"})
    raw(url, "DROP TRIGGER refuse_turns ON turns" if url.startswith("postgresql") else "DROP TRIGGER refuse_turns")
    with pytest.raises(TypeError):  # Python fails after the UPDATE (a reply that is not JSON): the same
        store.commit_turn(record.id, ana, 0, {**STATE, "shown": ["9"]}, {"text": "x"}, {"reply": object()})
    got = store.get_conversation(record.id, ana)
    assert got is not None and (got.version, got.state, got.updated) == (0, STATE, record.updated)
    assert raw(url, "SELECT count(*) FROM turns") == [(0,)]
    assert store.commit_turn(record.id, ana, 0, STATE, {"text": "x"}, {"reply": "y"}) == 1  # still at version 0


def test_two_replicas_commit_the_same_version_and_exactly_one_wins(url):
    stores = replicas(url, 4)
    ana = stores[0].user_key("ana")
    record = conversation(stores[0], ana)
    barrier, outcomes = threading.Barrier(len(stores)), []

    def commit(i: int) -> None:
        barrier.wait()
        try:
            version = stores[i].commit_turn(record.id, ana, 0, {**STATE, "shown": [str(i)]}, {"n": i}, {"reply": i})
            outcomes.append(("won", i, version))
        except StoreConflict as error:
            outcomes.append(("lost", i, error.current_version))

    threads = [threading.Thread(target=commit, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    won = [o for o in outcomes if o[0] == "won"]
    assert len(outcomes) == 4 and len(won) == 1 and won[0][2] == 1
    assert all(o[2] == 1 for o in outcomes if o[0] == "lost")
    got = stores[3].get_conversation(record.id, ana)
    turns = stores[2].turns(record.id, ana)
    assert got is not None and got.state["shown"] == [str(won[0][1])] and got.version == 1
    assert turns is not None and [t.request["n"] for t in turns] == [won[0][1]]


# -- users -----------------------------------------------------------------------------------------------------
def test_forget_deletes_exactly_that_users_rows(url):
    store = Store(url)
    ana, bob = store.user_key("ana"), store.user_key("bob")
    for owner in (ana, bob):
        for n in range(2):
            record = conversation(store, owner)
            store.commit_turn(record.id, owner, 0, STATE, {"text": f"secret-{owner[:8]}-words"}, {"reply": "r"})
            store.remember_thread(f"{owner}-{n}", record.id)
        store.record_feedback(owner, "1", "movies", +1, text=f"secret-{owner[:8]}-text")
    assert store.forget(ana) == 1 + 2 + 2 + 2  # feedback, conversations, turns, threads
    assert store.forget(ana) == 0
    assert store.list_conversations(ana) == [] and len(store.list_conversations(bob)) == 2
    assert {e["user"] for e in store.feedback_events()} == {bob} and store.find_thread(f"{bob}-1") is not None
    assert raw(url, "SELECT count(*) FROM turns") == [(2,)]
    if url.startswith("sqlite:///"):  # overwritten, not just unlinked: not in the file, its WAL or its index
        on_disk = b"".join(p.read_bytes() for p in Path(url.removeprefix("sqlite:///")).parent.iterdir())
        assert f"secret-{ana[:8]}".encode() not in on_disk and f"secret-{bob[:8]}".encode() in on_disk


def test_replicas_starting_together_make_one_schema_and_share_one_salt(url):
    urls, stores, errors = replica_urls(url, 4), [], []
    barrier = threading.Barrier(len(urls))

    def start(replica_url: str) -> None:
        barrier.wait()  # all open the empty database at once
        try:
            stores.append(Store(replica_url))
        except Exception as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=start, args=(u,)) for u in urls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(stores) == 4 and len({s.user_key("ana") for s in stores}) == 1
    assert raw(url, "SELECT key, count(*) FROM recagent_meta GROUP BY key ORDER BY key") == [
        ("salt", 1),
        ("schema_version", 1),
    ]
    assert raw(url, "SELECT value FROM recagent_meta WHERE key = 'schema_version'") == [("2",)]


def test_two_databases_have_two_salts(postgres, tmp_path):
    one, two = Store(postgres.new_database()), Store(postgres.new_database())
    assert one.user_key("ana") != two.user_key("ana") != Store(f"sqlite:///{tmp_path / 'r.sqlite3'}").user_key("ana")


def test_postgres_unavailable_gives_a_clear_error_and_recovers(postgres):
    url = postgres.new_database()
    store = Store(url)
    ana = store.user_key("ana")
    record = conversation(store, ana)
    postgres.stop()
    try:
        for attempt in (
            lambda: store.get_conversation(record.id, ana),
            lambda: store.commit_turn(record.id, ana, 0, {"x": 1}, {}, {}),
            lambda: Store(url + "?application_name=late"),  # a Store opened now
        ):
            with pytest.raises(DatabaseError) as caught:
                attempt()
            message = str(caught.value)
            assert message.startswith(f"the database postgresql+psycopg://postgres:***@127.0.0.1:{postgres.port}/")
            assert "is unavailable (" in message and PASSWORD not in message and "\n" not in message
    finally:
        postgres.start()
    got = store.get_conversation(record.id, ana)  # the pool's dead connections are replaced (pre-ping)
    assert got is not None and got.version == 0
    assert store.commit_turn(record.id, ana, 0, {"x": 1}, {"text": "back"}, {"reply": "ok"}) == 1
    assert Store(url + "?application_name=late").user_key("ana") == ana


def test_json_round_trips_exactly(url):
    store = Store(url)
    ana = store.user_key("ana")
    state = {**STATE, "photo": {"vector": [0.1, -2.5e-7, 3.0]}, "text": "naïve “quotes” \u0000 and \\ too"}
    record = store.create_conversation(ana, "fashion", state)
    got = store.get_conversation(record.id, ana)
    assert got is not None and got.state == json.loads(json.dumps(state)) and got.catalog == "fashion"
