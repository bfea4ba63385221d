"""The parts of building an index: what a run did, what is stored with each item, the fields it records,
Ctrl-C between batches, and the progress bar (tools/index.py does the building)."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import FrameType

from tqdm import tqdm

from .catalog import Item

FACET_LIMIT = 300  # string fields with at most this many distinct values get their values recorded


@dataclass
class IndexReport:
    """What one `index` run did."""

    collection: str
    total: int = 0
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    errors: list = field(default_factory=list)

    @property
    def changed(self) -> int:
        return self.added + self.updated + self.removed


def chroma_metadata(item: Item) -> dict:
    """What the store keeps with an item: its fields, its title, a fingerprint of what was indexed, its image."""
    meta = {k: v for k, v in item.metadata.items() if not k.startswith("_")}
    meta["title"] = item.title
    meta["_fp"] = item.fingerprint()
    if item.image:
        meta["_image"] = item.image
    return meta


def describe_fields(items: Iterable[Item]) -> dict:
    """Field name -> {"type": str|int|float|bool|list, "values": [...] for low-cardinality text fields}."""
    types: dict[str, str] = {}
    values: dict[str, set] = {}
    for item in items:
        for key, value in item.metadata.items():
            kind = "list" if isinstance(value, list) else type(value).__name__
            if types.get(key) == "int" and kind == "float":
                types[key] = "float"  # a field with 3 and 4.5 is a float field
            else:
                types.setdefault(key, kind)
            if kind in ("str", "list"):
                bucket = values.setdefault(key, set())
                if len(bucket) <= FACET_LIMIT:
                    bucket.update(value if isinstance(value, list) else [value])
    return {
        k: {"type": t, **({"values": sorted(values[k])} if k in values and len(values[k]) <= FACET_LIMIT else {})}
        for k, t in sorted(types.items())
    }


class StopFlag:
    """Turns the first Ctrl-C into a request to stop after the current batch (main thread only)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: object = None

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after this batch (Ctrl-C again to abort now)...", file=sys.stderr, flush=True)

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)  # type: ignore[arg-type]


def progress_bar(total: int, enabled: bool, desc: str) -> tqdm:
    """A progress bar on stderr (none when not enabled)."""
    return tqdm(
        total=total, desc=desc, unit="item", disable=not enabled, file=sys.stderr, dynamic_ncols=True, mininterval=0.5
    )
