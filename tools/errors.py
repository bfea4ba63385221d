"""Every error a user of recagent can see: one family under `RecagentError`, each message one clear line.

The command line (and any service built on recagent) turns a RecagentError into that line and an exit code,
never a traceback; anything else is a bug. Each kind says which part failed, so callers can choose what to do.
"""

from __future__ import annotations


class RecagentError(Exception):
    """Something the user can fix or should know about; str(error) is the whole message."""


class ConfigError(RecagentError):
    """A setting, option or argument is missing or wrong; the message says how to fix it."""


class CatalogError(RecagentError):
    """A catalog cannot be read at all (missing file, unknown name, no usable row)."""


class StoreError(RecagentError):
    """The vector store cannot be used (unreachable, collection missing, a failed read or write)."""


class MissingModelError(RecagentError):
    """A model's weights cannot be found or loaded; the message names what to install or set."""


class DownloadError(RecagentError):
    """A download failed or did not verify; nothing was written."""


class ImageError(RecagentError):
    """A photo cannot be used (not an image, damaged, too large); the message says why."""


class AudioError(RecagentError):
    """A recording cannot be used (not audio, empty, silent, too long); the message says why."""


class FeedbackError(RecagentError):
    """The feedback store or its salt cannot be used; the message names the file and what to do."""


class DatabaseError(RecagentError):
    """recagent's database is unavailable, damaged or not recagent's; the message names it (never its password)."""


class LLMError(RecagentError):
    """The LLM backend failed (down, timed out, refused, unreadable answer); the message says which."""


class ReplayError(LLMError):
    """A replayed run asked the LLM something the recording does not hold (the run diverged from it)."""


class BusyError(RecagentError):
    """The service has as many turns in hand as it takes; the message says when to try again."""

    def __init__(self, message: str, retry_after: int = 1):
        super().__init__(message)
        self.retry_after = retry_after


class ConflictError(RecagentError):
    """The conversation changed meanwhile (another turn is running or was stored first); nothing was written."""


class ToolError(RecagentError):
    """A planner tool could not do what was asked; the message goes back to the planner."""


class TurnError(RecagentError):
    """A turn could not be completed; the conversation was left as it was."""


class ScriptError(RecagentError):
    """An evaluation script is malformed; the message names the file and the place."""


class ConversionError(RecagentError):
    """Model weights cannot be converted into another format (for example CTranslate2 -> openai-whisper)."""
