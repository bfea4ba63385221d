"""The conversation: caller-owned, JSON-serialisable, restored whole when a turn fails."""

import json

import pytest

from recagent.agent.conversation import Conversation
from recagent.tools.errors import ConfigError


def talk() -> Conversation:
    c = Conversation(catalog="movies")
    c.add_user("a heist film")
    c.add_assistant("Here you go.", ["1", "2", "3"])
    c.set_constraints(["genre=Crime", "year<2000"])
    c.last_search = {"tool": "search_catalog", "args": {"query": "heist"}}
    return c


def test_snapshot_and_restore_put_back_every_field():
    c = talk()
    before = c.snapshot()
    c.add_user("something older")
    c.like("1")
    c.dislike("2")
    c.set_constraints(["year<1990"])
    c.photo = {"source": "x.jpg", "vector": [0.1, 0.2]}
    c.restore(before)
    assert c == talk() and c.to_dict() == before


def test_likes_move_between_lists_and_constraints_merge():
    c = talk()
    c.like("2")
    c.dislike("2")
    assert c.liked == [] and c.disliked == ["2"] and c.last_items() == ["1", "2", "3"]
    assert c.constraints == ["genre=Crime", "year<2000"]
    c.set_constraints(["year<1990"])
    assert c.constraints == ["genre=Crime", "year<1990"]
    c.reset()
    assert c == Conversation(catalog="movies")


def test_save_is_atomic_and_load_says_what_is_wrong(tmp_path):
    c = talk()
    c.save(tmp_path / "c.json")
    assert Conversation.load(tmp_path / "c.json") == c and not (tmp_path / "c.json.tmp").exists()
    (tmp_path / "bad.json").write_text("{oops")
    with pytest.raises(ConfigError, match="not a recagent conversation"):
        Conversation.load(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text(json.dumps([1, 2]))
    with pytest.raises(ConfigError, match="a conversation is a JSON object"):
        Conversation.load(tmp_path / "list.json")
    with pytest.raises(ConfigError, match="cannot read the conversation"):
        Conversation.load(tmp_path / "missing.json")
