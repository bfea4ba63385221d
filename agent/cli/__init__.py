"""The `recagent` command line: plumbing over library calls, one module per area.

app.py (the group and its error handling), options.py (shared options), catalog.py (index, search, models, data),
chat.py (ask, chat, forget), evaluate.py (eval voice, images, redial, redial-curve, movielens, feedback),
dialogues.py (eval dialogues, simulate), serve.py (serve), train.py (train-...), bench.py (bench ...).
"""

from . import bench, catalog, chat, dialogues, evaluate, serve, train  # noqa: F401  (each registers its commands on `main`)
from .app import main

__all__ = ["main"]
