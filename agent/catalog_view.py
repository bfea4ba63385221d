"""The agent's read-only view of one indexed catalog: its fields, every item's metadata, a title lookup, and how
to speak of it (its profile). Shared by every conversation; built from the index on first use."""

from __future__ import annotations

import threading
from collections import Counter
from functools import cached_property

import numpy as np

from recagent.tools.catalog import CatalogProfile, catalog_profile
from recagent.tools.index import CatalogIndex
from recagent.tools.settings import Settings
from recagent.tools.text import plain_words, strip_year, title_key, title_year

TITLE_MATCH = 0.8  # a title not found by name is taken from a text search only when this similar


class CatalogView:
    """One catalog as the agent sees it. Nothing per user is kept here."""

    def __init__(self, index: CatalogIndex, profile: CatalogProfile | None = None):
        self.index = index
        self.name = index.catalog
        self.profile = profile or catalog_profile(index.catalog)
        self._lock = threading.Lock()

    @classmethod
    def open(cls, catalog: str, settings: Settings | None = None) -> CatalogView:
        """The view of an indexed catalog by name or file path (nothing is read until it is used)."""
        return cls(CatalogIndex(catalog, settings or Settings.load()))

    @property
    def settings(self) -> Settings:
        return self.index.settings

    @cached_property
    def fields(self) -> dict:
        """The filterable fields, as the last index run recorded them."""
        return self.index.fields()

    @cached_property
    def meta(self) -> dict[str, dict]:
        """Item id -> its metadata (title included), read once from the index."""
        with self._lock:
            return self.index.get_all()

    @cached_property
    def by_title(self) -> dict[str, list[str]]:
        """title_key -> the ids of the items with that title."""
        out: dict[str, list[str]] = {}
        for item_id, meta in self.meta.items():
            out.setdefault(title_key(meta.get("title", "")), []).append(item_id)
        return out

    @cached_property
    def words(self) -> dict[str, int]:
        """Every word of the catalog's titles, tags and field values, with how many items use it (typo correction)."""
        counts: Counter[str] = Counter()
        for meta in self.meta.values():
            text = [strip_year(str(meta.get("title", "")))]
            for key, value in meta.items():
                if key != "title" and not key.startswith("_") and isinstance(value, (str, list)):
                    text += value if isinstance(value, list) else [value]
            counts.update(set(plain_words(" ".join(map(str, text))).split()))
        return dict(counts)

    def with_metadata(self, item_id: str, changes: dict) -> CatalogView:
        """A copy of the view in which one item's metadata reads differently (the index is untouched): for
        evaluation fixtures such as an instruction planted in a catalog field."""
        view = CatalogView(self.index, self.profile)
        view.meta = {**self.meta, item_id: {**self.meta[item_id], **changes}}
        view.fields = self.fields
        return view

    def find_title(self, title: str) -> str | None:
        """The id of the item with this title (ignoring case, articles and year); the most rated on ties; a close
        text match when no title is the same."""
        year = title_year(title)
        ids = self.by_title.get(title_key(title))
        if not ids:
            hits = self.index.search(title, k=1)
            if (
                hits
                and hits[0].score > TITLE_MATCH
                and (year is None or str(hits[0].metadata.get("year")) == str(year))
            ):
                return hits[0].id
            return None
        if year is not None:
            ids = [i for i in ids if str(self.meta[i].get("year")) == str(year)] or ids
        return max(ids, key=lambda i: self.meta[i].get(self.profile.rating_count, 0))

    def find_reference(self, title: str) -> str | None:
        """The item a user means by a title ("Star Wars" -> Star Wars: Episode IV): find_title, else the most rated
        item whose title begins with the words given."""
        found = self.find_title(title)
        key = title_key(title)
        if found or len(key) < 3:
            return found
        ids = [i for k, group in self.by_title.items() if k.startswith(key + " ") for i in group]
        return max(ids, key=lambda i: self.meta[i].get(self.profile.rating_count, 0)) if ids else None

    def title(self, item_id: str) -> str:
        """The item's title, or its id when the catalog does not hold it."""
        return self.meta.get(item_id, {}).get("title", item_id)

    def vectors(self, ids: list[str]) -> np.ndarray:
        """The stored text vectors of these items, in the order given (ids without one are left out)."""
        found = self.index.vectors(ids)
        return np.stack([found[i] for i in ids if i in found]) if found else np.zeros((0, 384), np.float32)
