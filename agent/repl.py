"""The terminal REPL: history and line editing, slash commands, items as a table, the reply as it comes."""

from __future__ import annotations

import json
import shlex
import sys
import threading
from pathlib import Path
from typing import TextIO

from prompt_toolkit import PromptSession
from prompt_toolkit.history import FileHistory
from rich.console import Console
from rich.table import Table
from rich.text import Text

from recagent.tools.errors import FeedbackError, RecagentError
from recagent.tools.feedback import feedback_user, record_feedback, user_events

from .conversation import Conversation
from .loop import Agent, Reply

HELP = """Type what you are looking for. Commands:
  /image PATH [words]  items like this photo, changed as the words say ("but in black")
  /voice PATH   speak instead of typing
  /like N       you like item N            /dislike N    you don't (it won't be shown again)
  /accept N     you'll watch or buy item N (also /watch N, /buy N): the strongest "yes"
  /why          the last turn's tool calls, arguments and timings
  /save FILE    save the conversation      /load FILE    load one
  /reset        start over                 /quit         leave (Ctrl-D too)
Ctrl-C cancels the turn in progress, not the session.
/like, /dislike and /accept are also kept as feedback that teaches the ranking (recagent train-ranker
--with-feedback), under a pseudonym: a salted hash of your user name, never the name itself, and without
what you typed unless you opt in (--share-text or RECAGENT_FEEDBACK_TEXT=1). --no-feedback or
RECAGENT_FEEDBACK=0 turns it off; `recagent forget NAME` deletes everything stored for NAME."""

ACCEPT = ("/accept", "/watch", "/buy")


class TurnCancelled(Exception):
    """Raised from the event callback to stop the turn in progress (Ctrl-C)."""


ITEM_COLUMNS = ("#", "title", "year", "genres / type", "image")


def item_rows(items: list[dict]) -> list[tuple[str, str, str, str, str]]:
    """One row of text cells per item, in ITEM_COLUMNS order."""
    rows = []
    for n, item in enumerate(items, 1):
        kind = ", ".join(item.get("genres", [])) or " ".join(
            str(item[k]) for k in ("baseColour", "articleType") if item.get(k)
        )
        rows.append((str(n), item["title"], str(item.get("year", "")), kind, item.get("image", "")))
    return rows


def items_table(items: list[dict]) -> Table:
    """The items as a table for a terminal; every cell is text, never markup (titles come from a catalog)."""
    table = Table(show_edge=False, pad_edge=False)
    for column in ITEM_COLUMNS:
        table.add_column(column, overflow="fold")
    for row in item_rows(items):
        table.add_row(*(Text(cell) for cell in row))
    return table


class Repl:
    def __init__(
        self,
        agent: Agent,
        console: Console | None = None,
        conversation: Conversation | None = None,
        user: str | None = None,
        feedback: bool | None = None,
        share_text: bool | None = None,
    ):
        self.agent = agent
        # soft_wrap: a message is never cut into lines by the REPL (a terminal wraps it; a pipe gets it whole)
        self.console = console or Console(highlight=False, soft_wrap=True)
        self.conversation = conversation or agent.new_conversation()
        self.last: Reply | None = None
        settings = agent.settings  # an option given here beats the settings (which hold the environment's say)
        self.user = user or feedback_user(settings)
        self.feedback = settings.feedback if feedback is None else feedback
        self.share_text = settings.share_text if share_text is None else share_text

    # -- feedback ---------------------------------------------------------------------------------------------
    def feedback_note(self) -> str:
        if not self.feedback:
            return "feedback is not being stored (--no-feedback or RECAGENT_FEEDBACK=0)"
        text = "with the conversation text" if self.share_text else "without the conversation text"
        return f"feedback is stored for user '{self.user}' under a pseudonym, {text}"

    def taste_events(self) -> list[tuple[str, int]] | None:
        """The user's stored likes and dislikes for the next turn's ranking; None with feedback off. A store that
        cannot be read gives none (the turn goes on; /like says what is wrong when it tries to store)."""
        if not self.feedback:
            return None
        try:
            return user_events(self.agent.settings, self.user, self.conversation.catalog)
        except (FeedbackError, ValueError):
            return []

    def record(self, item_id: str, kind: str) -> str:
        """Store one like/dislike/accept; a short note for the screen (a store problem never ends the session)."""
        if not self.feedback:
            return ""
        text = None
        if self.share_text:
            text = json.dumps(
                [{"role": m.role, "content": m.content} for m in self.conversation.messages], ensure_ascii=False
            )
        try:
            record_feedback(
                self.agent.settings,
                self.user,
                item_id,
                self.conversation.catalog,
                -1 if kind == "dislike" else 1,
                text=text,
                kind=kind,
            )
        except (FeedbackError, ValueError) as exc:
            return f" (not stored as feedback: {exc})"
        return " (stored as feedback under your pseudonym)"

    # -- one turn, cancellable ---------------------------------------------------------------------------
    def ask(self, text: str, audio: str | None = None, image: str | None = None) -> None:
        cancel = threading.Event()
        result: dict = {}
        status = self.console.status("thinking...", spinner="dots")

        def on_event(kind: str, value) -> None:
            if cancel.is_set():
                raise TurnCancelled()
            if kind == "items":
                status.stop()
                self.show_items(value)
            elif kind == "token":
                status.stop()
                self.say(value)
            elif kind == "status":
                status.update(f"{value}...")
            elif kind == "transcript":
                self.say(f"heard: {value}", "dim")

        def work() -> None:
            try:
                result["reply"] = self.agent.turn(
                    self.conversation, text, on_event=on_event, audio=audio, image=image, feedback=self.taste_events()
                )
            except TurnCancelled:
                result["cancelled"] = True
            except Exception as exc:  # never lose the session to a bug in a turn
                result["error"] = f"{exc.__class__.__name__}: {exc}"

        status.start()
        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        try:
            while worker.is_alive():
                worker.join(0.1)
        except KeyboardInterrupt:
            cancel.set()
            status.update("cancelling...")
            worker.join()
        finally:
            status.stop()
        if result.get("cancelled") or cancel.is_set():
            self.say("cancelled; the conversation is as it was before this turn", "yellow")
        elif "error" in result:
            self.say(f"Error: {result['error']}", "red")
        else:
            self.last = result["reply"]
            if self.last.error:
                self.say(self.last.text, "red")

    def say(self, text: str, style: str | None = None) -> None:
        """Print text as it is: never read as markup (it may come from a catalog, a user or the model)."""
        self.console.print(text, style=style, markup=False, highlight=False)

    def show_items(self, items: list[dict]) -> None:
        """A table on a terminal; elsewhere one line per item, never wrapped, so scripts can read them."""
        if self.console.is_terminal:
            self.console.print(items_table(items))
        else:
            for row in item_rows(items):
                self.say(" | ".join(cell for cell in row if cell))

    # -- commands -------------------------------------------------------------------------------------------
    def command(self, line: str) -> bool:
        """Run a slash command; False means quit."""
        name, _, arg = line.partition(" ")
        if name in ("/quit", "/exit", "/q"):
            return False
        handlers = {
            "/help": self._help,
            "/reset": self._reset,
            "/save": self._save,
            "/load": self._load,
            "/why": self._why,
            "/voice": self._voice,
            "/image": self._image,
        }
        if name in ("/like", "/dislike", *ACCEPT):
            self._feedback(name, arg.strip())
        elif name in handlers:
            handlers[name](arg.strip())
        else:
            self.say(f"unknown command {name}; /help lists them", "red")
        return True

    def _help(self, arg: str) -> None:
        self.say(HELP)
        self.say(self.feedback_note())

    def _reset(self, arg: str) -> None:
        self.conversation.reset()
        self.say("started over")

    def _save(self, path: str) -> None:
        if not path:
            self.say("usage: /save FILE", "red")
            return
        try:
            self.conversation.save(path)
        except OSError as exc:
            self.say(f"cannot save to {path}: {exc.strerror or exc}", "red")
            return
        self.say(f"saved to {path}")

    def _load(self, path: str) -> None:
        try:
            self.conversation = Conversation.load(path)
        except RecagentError as exc:
            self.say(f"cannot load {path}: {exc}", "red")
            return
        self.say(f"loaded {path} ({len(self.conversation.messages)} messages)")

    def _why(self, arg: str) -> None:
        if not self.last:
            self.say("no turn yet")
            return
        for call in self.last.tool_calls:
            err = f"  error: {call.error}" if call.error else ""
            self.say(
                f"{call.name}({json.dumps(call.arguments, ensure_ascii=False)}) {call.seconds * 1000:.0f} ms{err}",
                "red" if call.error else None,
            )
        self.say("timings (s): " + ", ".join(f"{k} {v}" for k, v in self.last.timings.items()))

    def _feedback(self, name: str, arg: str) -> None:
        items = self.conversation.last_items()
        if not arg.isdigit() or not 1 <= int(arg) <= len(items):
            self.say(f"usage: {name} N, where N is an item number from the last list", "red")
            return
        item_id = items[int(arg) - 1]
        (self.conversation.dislike if name == "/dislike" else self.conversation.like)(item_id)
        kind = "accept" if name in ACCEPT else name[1:]
        self.say(f"noted: you {kind} item {arg}{self.record(item_id, kind)}")

    def _voice(self, path: str) -> None:
        if not path:
            self.say("usage: /voice PATH (a recording: wav, flac, mp3, ogg, m4a, webm)", "red")
        else:
            self.ask("", audio=path)

    def _image(self, arg: str) -> None:
        try:
            words = shlex.split(arg)
        except ValueError:
            words = arg.split()
        if not words:
            self.say("usage: /image PATH [what to change, e.g. but in black]", "red")
        else:
            self.ask(" ".join(words[1:]), image=words[0])


def run_repl(
    agent: Agent,
    stdin: TextIO | None = None,
    user: str | None = None,
    feedback: bool | None = None,
    share_text: bool | None = None,
) -> None:
    """The interactive loop; reads from a terminal with history, or plain lines from a pipe.

    user: whose feedback /like, /dislike and /accept store; user, feedback, share_text: None lets the agent's
    settings decide (--user, --feedback, --share-text and their environment variables)."""
    repl = Repl(agent, user=user, feedback=feedback, share_text=share_text)
    console = repl.console
    interactive = (stdin or sys.stdin).isatty()
    session: PromptSession | None = None
    if interactive:
        agent.settings.home.mkdir(parents=True, exist_ok=True)
        session = PromptSession(history=FileHistory(str(Path(agent.settings.home) / "history")))
    with console.status("loading the catalog...", spinner="dots"):
        count = len(agent.catalog.meta)
    repl.say(f"recagent on '{agent.catalog_name}' ({count:,} items), LLM {agent.llm.name}. /help for commands.")
    repl.say(f"{repl.feedback_note()} (see /help)", "dim")
    while True:
        try:
            line = session.prompt("> ") if session else (stdin or sys.stdin).readline()
            if not session and not line:
                break
        except KeyboardInterrupt:
            continue
        except EOFError:
            break
        line = line.strip()
        if not line:
            continue
        if line.startswith("/"):
            if not repl.command(line):
                break
            continue
        repl.ask(line)
