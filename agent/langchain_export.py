"""recagent in LangChain: the catalog tools as LangChain tools, and an agent as a Runnable."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from langchain_core.runnables import Runnable, RunnableLambda
from langchain_core.tools import BaseTool, StructuredTool

from recagent.tools.errors import ToolError

from .catalog_view import CatalogView
from .conversation import Conversation
from .toolbox import CatalogTools, ToolResult

if TYPE_CHECKING:  # the agent imports this module
    from .loop import Agent


def langchain_tools(view: CatalogView, conversation: Conversation | None = None) -> list[BaseTool]:
    """The catalog tools as LangChain tools returning compact text, for use in any LangChain application.
    Items a tool returns count as shown in `conversation` (so they are not found again)."""
    tools = CatalogTools(view, conversation or Conversation(catalog=view.name))

    def as_text(func: Callable[..., ToolResult]) -> BaseTool:
        def run(**kwargs: object) -> str:
            try:
                result = func(**kwargs)
            except ToolError as exc:
                return f"error: {exc}"
            if result.question:
                return result.question
            shown = tools.conversation.shown
            shown.extend(r.id for r in result.items if r.id not in shown)
            return "\n".join([result.text, *result.notes])

        return StructuredTool.from_function(
            func=run,
            name=func.__name__,
            description=func.__doc__,
            args_schema=StructuredTool.from_function(func).args_schema,
        )

    return [as_text(f) for name, f in tools.planner_tools().items() if name != "ask_user"]


def as_runnable(agent: Agent) -> Runnable:
    """The agent as a LangChain Runnable: {"text", "conversation"?: dict} -> {"reply", "items", ...,
    "conversation": dict}, so it composes with LangChain chains while the caller keeps the state."""

    def run(inputs: dict) -> dict:
        conversation = Conversation.from_dict(inputs.get("conversation") or {"catalog": agent.catalog_name})
        reply = agent.turn(conversation, inputs["text"])
        return {**reply.to_dict(), "conversation": conversation.to_dict()}

    return RunnableLambda(run, name="recagent")
