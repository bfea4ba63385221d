"""The agent side of recagent: the turn loop, conversations, LLM backends and the command line."""
