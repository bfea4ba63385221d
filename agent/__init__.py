"""The agent side of recagent: the turn loop, conversations, LLM backends and the command line.

    from recagent.agent import Agent, Conversation, make_llm
    agent = Agent(make_llm("local"), catalog="movies")
    conversation = agent.new_conversation()
    reply = agent.turn(conversation, "a funny heist movie")
"""

from .conversation import Conversation, Message
from .llm import LLM, Completion, LLMError, LocalLLM, OpenAILLM, ScriptedLLM, make_llm
from .loop import Agent, Reply, ToolCall

__all__ = ["Agent", "Completion", "Conversation", "LLM", "LLMError", "LocalLLM", "Message", "OpenAILLM", "Reply",
           "ScriptedLLM", "ToolCall", "make_llm"]
