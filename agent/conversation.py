"""The conversation: an explicit, JSON-serialisable object owned by the caller; the agent keeps no per-user state."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from recagent.tools.errors import ConfigError
from recagent.tools.filters import merge_constraints

FORMAT_VERSION = 1


@dataclass
class Message:
    role: str  # "user" or "assistant"
    content: str
    items: list[str] = field(default_factory=list)  # ids recommended in this assistant message


@dataclass
class Conversation:
    """Messages, items shown, liked and disliked items, and standing constraints (filters) of one dialogue."""

    catalog: str = "movies"
    messages: list[Message] = field(default_factory=list)
    shown: list[str] = field(default_factory=list)  # every item id recommended so far, in order
    liked: list[str] = field(default_factory=list)
    disliked: list[str] = field(default_factory=list)
    constraints: list[str] = field(default_factory=list)  # filters that hold until changed: "genre!=Horror"
    last_search: dict = field(default_factory=dict)  # the last search call {"tool", "args"}: refinements redo it
    photo: dict = field(default_factory=dict)  # the last photo shown: {"source": path, "vector": [...]}
    version: int = FORMAT_VERSION

    # -- updates ------------------------------------------------------------------------------------
    def add_user(self, text: str) -> None:
        self.messages.append(Message("user", text))

    def add_assistant(self, text: str, items: list[str]) -> None:
        self.messages.append(Message("assistant", text, list(items)))
        self.shown.extend(i for i in items if i not in self.shown)

    def last_items(self) -> list[str]:
        """Ids recommended in the latest assistant message (what "the first one" refers to)."""
        for message in reversed(self.messages):
            if message.role == "assistant" and message.items:
                return message.items
        return []

    def like(self, item_id: str) -> None:
        self._move(item_id, self.liked, self.disliked)

    def dislike(self, item_id: str) -> None:
        self._move(item_id, self.disliked, self.liked)

    @staticmethod
    def _move(item_id: str, into: list[str], out_of: list[str]) -> None:
        if item_id in out_of:
            out_of.remove(item_id)
        if item_id not in into:
            into.append(item_id)

    def set_constraints(self, constraints: list[str]) -> None:
        """Add constraints; a new one on the same field and operator replaces the old one."""
        self.constraints = merge_constraints(self.constraints, constraints)

    def reset(self) -> None:
        """Start over on the same catalog."""
        self.restore({"catalog": self.catalog})

    def snapshot(self) -> dict:
        """The whole state, to `restore` when a turn fails or is cancelled."""
        return self.to_dict()

    def restore(self, snapshot: dict) -> None:
        """Put back the state a `snapshot` took (or any dict that `from_dict` reads)."""
        for name, value in vars(Conversation.from_dict(snapshot)).items():
            setattr(self, name, value)

    # -- serialisation ------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Conversation:
        if not isinstance(data, dict):
            raise ValueError("a conversation is a JSON object")
        messages = [Message(**m) for m in data.get("messages", [])]
        known = {
            k: data[k]
            for k in ("catalog", "shown", "liked", "disliked", "constraints", "last_search", "photo")
            if k in data
        }
        return cls(messages=messages, **known)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=2)

    @classmethod
    def from_json(cls, text: str) -> Conversation:
        return cls.from_dict(json.loads(text))

    def save(self, path: str | Path) -> None:
        """Write atomically: a crash while saving never loses the previous file."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_json(), encoding="utf-8")
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> Conversation:
        """A conversation saved with `save`; a ConfigError names a file that cannot be read or is not one."""
        try:
            return cls.from_json(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read the conversation {path}: {exc.strerror or exc}") from None
        except (json.JSONDecodeError, TypeError, ValueError) as exc:
            raise ConfigError(f"{path} is not a recagent conversation ({exc})") from None
