"""The agent side of recagent: the turn loop, conversations, LLM backends, the REPL and the command line.

from recagent.agent import Agent, Conversation, make_llm
agent = Agent(make_llm("local"), catalog="movies")
conversation = agent.new_conversation()
reply = agent.turn(conversation, "a funny heist movie")
"""

from recagent.tools.errors import LLMError, RecagentError

from .catalog_view import CatalogView
from .conversation import Conversation, Message
from .llm import LLM, Completion, LocalLLM, OpenAILLM, ScriptedLLM, make_llm
from .loop import Agent, Reply, ToolCall

__all__ = [
    "LLM",
    "Agent",
    "CatalogView",
    "Completion",
    "Conversation",
    "LLMError",
    "LocalLLM",
    "Message",
    "OpenAILLM",
    "RecagentError",
    "Reply",
    "ScriptedLLM",
    "ToolCall",
    "make_llm",
]
