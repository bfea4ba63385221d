"""The Chroma index of a catalog: build it (batched, resumable, incremental) and search it with filters."""

from __future__ import annotations

import json
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable
from urllib.parse import urlparse

from .catalog import Catalog, Item
from .settings import ConfigError, Settings

# HNSW settings chosen by measurement on the catalogs' real MiniLM embeddings (docs/benchmarks.md):
# Chroma's defaults (M=16, ef=100) found 0.92-0.95 of the exact top 10; these find >= 0.99 at catalog
# size for about 1 ms more a query. Construction settings are fixed when a collection is created.
HNSW = {"space": "cosine", "ef_construction": 200, "ef_search": 400, "max_neighbors": 32}
FACET_LIMIT = 300  # string fields with at most this many distinct values get their values recorded


class StoreError(Exception):
    """The index cannot be used (store unreachable, collection missing); the message says what to do."""




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


@dataclass
class Hit:
    """One search result."""

    id: str
    title: str
    score: float  # cosine similarity, higher is better
    metadata: dict

    def as_dict(self) -> dict:
        return {"id": self.id, "title": self.title, "score": round(self.score, 4), **self.public_metadata()}

    def public_metadata(self) -> dict:
        return public_metadata(self.metadata)


def public_metadata(metadata: dict) -> dict:
    """An item's own fields, without the index's bookkeeping (keys starting with '_') and the title."""
    return {k: v for k, v in metadata.items() if not k.startswith("_") and k != "title"}


def collection_name(catalog: str) -> str:
    """A valid Chroma collection name for a catalog name or file path."""
    stem = Path(catalog).stem if ("/" in catalog or "." in catalog) else catalog
    slug = re.sub(r"[^a-zA-Z0-9_-]+", "-", stem).strip("-_") or "catalog"
    return f"recagent-{slug}"[:60]


def connect(settings: Settings):
    """A Chroma client: the embedded store in RECAGENT_HOME, or a server when a Chroma URL is set."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False)
    if settings.chroma_url:
        url = urlparse(settings.chroma_url if "://" in settings.chroma_url else "http://" + settings.chroma_url)
        try:
            client = chromadb.HttpClient(host=url.hostname or "127.0.0.1", port=url.port or 8000,
                                         ssl=url.scheme == "https", settings=chroma_settings)
            client.heartbeat()
        except Exception as exc:  # connection refused, DNS, TLS: all mean the same to the user
            raise StoreError(f"cannot reach the Chroma server at {settings.chroma_url} ({exc.__class__.__name__}: "
                              f"{exc}). Start one with `chroma run --path DIR --port {url.port or 8000}` "
                              "or drop --chroma-url to use the embedded store.") from None
        return client
    path = settings.home / "chroma"
    path.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(path=str(path), settings=chroma_settings)


def _chroma_metadata(item: Item) -> dict:
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
    return {k: {"type": t, **({"values": sorted(values[k])} if k in values and len(values[k]) <= FACET_LIMIT else {})}
            for k, t in sorted(types.items())}


class CatalogIndex:
    """One catalog's Chroma collection."""

    def __init__(self, catalog: str, settings: Settings | None = None, client=None):
        self.settings = settings or Settings.load()
        self.catalog = catalog
        self.name = collection_name(catalog)
        self.client = client or connect(self.settings)
        self._collection = None
        self._images = None

    def _failure(self, exc: Exception, what: str = "") -> StoreError:
        where = self.settings.chroma_url or str(self.settings.home / "chroma")
        return StoreError(f"the Chroma store at {where} failed ({exc.__class__.__name__}: {exc})"
                          + (f" {what}" if what else ""))

    # -- collection ---------------------------------------------------------------------------------
    def collection(self, create: bool = False):
        if self._collection is None:
            if create:
                self._collection = self.client.get_or_create_collection(
                    self.name, configuration={"hnsw": dict(HNSW)}, embedding_function=None)
            else:
                try:
                    self._collection = self.client.get_collection(self.name, embedding_function=None)
                except Exception:
                    raise StoreError(f"catalog '{self.catalog}' is not indexed in "
                                      f"{self.settings.chroma_url or self.settings.home / 'chroma'}: run "
                                      f"`recagent index --catalog {self.catalog}` first.") from None
        return self._collection

    def fields(self) -> dict:
        """The filterable metadata fields, as recorded by the last index run."""
        meta = self.collection().metadata or {}
        return json.loads(meta.get("fields", "{}"))

    def count(self) -> int:
        try:
            return self.collection().count()
        except StoreError:
            raise
        except Exception as exc:
            raise self._failure(exc) from None

    def fingerprints(self) -> dict[str, str]:
        """Item id -> fingerprint of every indexed item."""
        return self._fingerprints(self.collection(create=True))

    def _fingerprints(self, col) -> dict[str, str]:
        out, offset, page = {}, 0, 5000
        while True:
            try:
                got = col.get(include=["metadatas"], limit=page, offset=offset)
            except Exception as exc:
                raise self._failure(exc) from None
            for item_id, meta in zip(got["ids"], got["metadatas"]):
                out[item_id] = (meta or {}).get("_fp", "")
            if len(got["ids"]) < page:
                return out
            offset += page

    # -- indexing -----------------------------------------------------------------------------------
    def index(self, catalog: Catalog, batch_size: int = 256, progress: bool = True,
              embed=None) -> IndexReport:
        """Embed and upsert new or changed items; remove items no longer in the catalog.

        Each batch is one upsert, so an interrupted run leaves only whole batches behind and a rerun
        continues where it stopped. Ctrl-C finishes the current batch, then stops.
        """
        start = time.perf_counter()
        report = IndexReport(self.name, total=len(catalog.items), errors=list(catalog.errors))
        existing = self.fingerprints()
        todo = [it for it in catalog.items if existing.get(it.id) != it.fingerprint()]
        report.unchanged = len(catalog.items) - len(todo)
        current = {it.id for it in catalog.items}
        stale = [i for i in existing if i not in current]
        if catalog.errors and stale:
            # A row that failed to parse may be one of these: keep what is indexed rather than lose it.
            stale = []
        if not todo and not stale:
            self._record_fields(catalog)
            report.seconds = time.perf_counter() - start
            return report
        if embed is None:
            from .models import embed_texts

            embed = lambda texts: embed_texts(texts, self.settings)  # noqa: E731
        col = self.collection(create=True)
        with _StopFlag() as stop, _progress(len(todo), progress, f"indexing {catalog.name}") as bar:
            for lo in range(0, len(todo), batch_size):
                if stop.requested:
                    report.interrupted = True
                    break
                batch = todo[lo: lo + batch_size]
                vectors = embed([it.document() for it in batch])
                try:
                    col.upsert(ids=[it.id for it in batch], embeddings=vectors,
                               metadatas=[_chroma_metadata(it) for it in batch],
                               documents=[it.document() for it in batch])
                except Exception as exc:
                    raise self._failure(exc, f"after writing {report.added + report.updated} items; "
                                             "rerun the same command to continue") from None
                report.updated += sum(it.id in existing for it in batch)
                report.added += sum(it.id not in existing for it in batch)
                bar.update(len(batch))
        if not report.interrupted:
            try:
                for lo in range(0, len(stale), 1000):
                    col.delete(ids=stale[lo: lo + 1000])
            except Exception as exc:
                raise self._failure(exc, "while removing items no longer in the catalog") from None
            report.removed = len(stale)
            self._record_fields(catalog)
        report.seconds = time.perf_counter() - start
        return report

    def _record_fields(self, catalog: Catalog) -> None:
        col = self.collection(create=True)
        meta = dict(col.metadata or {})
        wanted = {"fields": json.dumps(describe_fields(catalog.items)), "catalog": catalog.name,
                  "source": catalog.source}
        if any(meta.get(k) != v for k, v in wanted.items()):
            meta.update(wanted)
            col.modify(metadata=meta)

    # -- search -------------------------------------------------------------------------------------
    def search(self, query: str | None = None, k: int = 10, where: dict | None = None,
               vector=None, exclude: Iterable[str] = ()) -> list[Hit]:
        """Top-k items by cosine similarity to the query text (or a given vector), optionally filtered."""
        if vector is None:
            from .models import embed_texts

            vector = embed_texts([query or ""], self.settings)[0]
        return self._query(self.collection(), vector, k, where, exclude)

    def _query(self, col, vector, k: int, where: dict | None, exclude: Iterable[str]) -> list[Hit]:
        exclude = set(exclude)
        try:
            n = min(k + len(exclude), max(col.count(), 1))
            got = col.query(query_embeddings=[list(map(float, vector))], n_results=n, where=where or None,
                            include=["metadatas", "distances"])
        except Exception as exc:
            raise self._failure(exc) from None
        hits = []
        for item_id, meta, dist in zip(got["ids"][0], got["metadatas"][0], got["distances"][0]):
            if item_id in exclude:
                continue
            meta = meta or {}
            hits.append(Hit(item_id, meta.get("title", item_id), 1.0 - float(dist), meta))
        return hits[:k]

    # -- image vectors ------------------------------------------------------------------------------
    def image_collection(self, create: bool = False):
        """The collection of image vectors (one per item with an image), beside the text collection."""
        if self._images is None:
            name = self.name[:54] + "-images"
            try:
                self._images = (self.client.get_or_create_collection(name, configuration={"hnsw": dict(HNSW)},
                                                                     embedding_function=None) if create
                                else self.client.get_collection(name, embedding_function=None))
            except Exception:
                raise StoreError(f"catalog '{self.catalog}' has no image vectors: run "
                                 f"`recagent index --catalog {self.catalog}` (with images)") from None
        return self._images

    def image_encoder_key(self) -> str | None:
        """Which image encoder made the stored image vectors (None: no image vectors)."""
        try:
            return (self.image_collection().metadata or {}).get("encoder")
        except StoreError:
            return None

    def index_images(self, catalog: Catalog, encoder, batch_size: int = 64, progress: bool = True) -> IndexReport:
        """Embed and upsert the photo of every new or changed item with an image; resumable like `index`."""
        from .images import ImageError, load_image

        start = time.perf_counter()
        items = [it for it in catalog.items if it.image]
        report = IndexReport(self.name[:54] + "-images", total=len(items))
        col = self.image_collection(create=True)
        if (col.metadata or {}).get("encoder") not in (None, encoder.key):
            # Vectors from another encoder live in another space: replace them all.
            self.client.delete_collection(col.name)
            self._images = None
            col = self.image_collection(create=True)
        if (col.metadata or {}).get("encoder") != encoder.key:
            col.modify(metadata={**(col.metadata or {}), "encoder": encoder.key})
        existing = self._fingerprints(col)
        prints = {it.id: f"{it.fingerprint()}:{encoder.key}" for it in items}
        todo = [it for it in items if existing.get(it.id) != prints[it.id]]
        report.unchanged = len(items) - len(todo)
        stale = [] if catalog.errors else [i for i in existing if i not in prints]
        with _StopFlag() as stop, _progress(len(todo), progress, f"indexing {catalog.name} images") as bar:
            for lo in range(0, len(todo), batch_size):
                if stop.requested:
                    report.interrupted = True
                    break
                batch, photos = [], []
                for it in todo[lo: lo + batch_size]:
                    try:
                        photos.append(load_image(it.image))
                        batch.append(it)
                    except ImageError as exc:
                        report.errors.append(f"{it.id}: {exc}")
                if batch:
                    vectors = encoder.embed_images(photos)
                    metas = [{**_chroma_metadata(it), "_fp": prints[it.id]} for it in batch]
                    try:
                        col.upsert(ids=[it.id for it in batch], embeddings=vectors, metadatas=metas)
                    except Exception as exc:
                        raise self._failure(exc, "while writing image vectors; rerun to continue") from None
                    report.updated += sum(it.id in existing for it in batch)
                    report.added += sum(it.id not in existing for it in batch)
                bar.update(len(todo[lo: lo + batch_size]))
        if not report.interrupted and stale:
            try:
                for lo in range(0, len(stale), 1000):
                    col.delete(ids=stale[lo: lo + 1000])
            except Exception as exc:
                raise self._failure(exc, "while removing image vectors no longer in the catalog") from None
            report.removed = len(stale)
        report.seconds = time.perf_counter() - start
        return report

    def search_images(self, vector, k: int = 10, where: dict | None = None, exclude: Iterable[str] = (),
                      encoder_key: str | None = None) -> list[Hit]:
        """Top-k items whose photo is closest to the vector (a photo's or, in a shared space, a text's)."""
        col = self.image_collection()
        stored = (col.metadata or {}).get("encoder")
        if encoder_key and stored != encoder_key:
            raise StoreError(f"the image vectors of '{self.catalog}' were made by another image encoder "
                             f"({stored}); rerun `recagent index --catalog {self.catalog}`")
        return self._query(col, vector, k, where, exclude)

    def vectors(self, ids: list[str], images: bool = False) -> dict:
        """Item id -> stored vector (text, or image with images=True); ids without one are left out."""
        import numpy as np

        col = self.image_collection() if images else self.collection()
        try:
            got = col.get(ids=list(ids), include=["embeddings"])
        except Exception as exc:
            raise self._failure(exc) from None
        return {i: np.asarray(v, dtype=np.float32) for i, v in zip(got["ids"], got["embeddings"])}

    def get(self, ids: list[str]) -> dict[str, dict]:
        """Metadata of the given ids (missing ids are left out)."""
        try:
            got = self.collection().get(ids=list(ids), include=["metadatas"])
        except Exception as exc:
            raise self._failure(exc) from None
        return {i: (m or {}) for i, m in zip(got["ids"], got["metadatas"])}


# ---- filters --------------------------------------------------------------------------------------

_WHERE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(>=|<=|!=|=|>|<|~)\s*(.+?)\s*$")


def parse_where(expressions: Iterable[str], fields: dict) -> dict | None:
    """CLI filters as a Chroma `where`: 'genre=Comedy', 'year>=1990', 'year=1990..1999', 'colour!=Black'.

    Field names match case-insensitively and singular or plural ('genre' finds 'genres'); text values
    match the catalog's own spelling case-insensitively ('red' finds 'Red'); for list fields '='
    means "contains".
    """
    clauses = []
    for expr in expressions:
        match = _WHERE.match(expr)
        if not match:
            raise ConfigError(f"cannot read filter '{expr}': use FIELD=VALUE, FIELD>=N, FIELD<N or FIELD=A..B")
        key, op, raw = match.groups()
        key = _field_name(key, fields)
        info = fields[key]
        if op == "=" and ".." in raw and info["type"] in ("int", "float"):
            lo, hi = (_number(v, key) for v in raw.split("..", 1))
            clauses += [{key: {"$gte": lo}}, {key: {"$lte": hi}}]
            continue
        value = _number(raw, key) if info["type"] in ("int", "float") else _text(raw, info, key)
        if info["type"] == "list":
            if op not in ("=", "!="):
                raise ConfigError(f"filter '{expr}': '{key}' is a list, use = (contains) or != (does not contain)")
            clauses.append({key: {"$contains" if op == "=" else "$not_contains": value}})
        else:
            chroma_op = {"=": "$eq", "!=": "$ne", ">=": "$gte", "<=": "$lte", ">": "$gt", "<": "$lt"}.get(op)
            if chroma_op is None or (chroma_op in ("$gte", "$lte", "$gt", "$lt") and info["type"] not in ("int", "float")):
                raise ConfigError(f"filter '{expr}': operator '{op}' does not apply to text field '{key}'")
            clauses.append({key: {chroma_op: value}})
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def _field_name(key: str, fields: dict) -> str:
    lowered = {k.lower(): k for k in fields}
    for candidate in (key.lower(), key.lower() + "s", key.lower().rstrip("s"),
                      {"color": "basecolour", "colour": "basecolour", "type": "articletype",
                       "category": "mastercategory"}.get(key.lower(), "")):
        if candidate in lowered:
            return lowered[candidate]
    raise ConfigError(f"unknown filter field '{key}'; this catalog has: {', '.join(sorted(fields)) or 'no fields'}")


def _number(raw: str, key: str) -> int | float:
    try:
        return int(raw) if re.fullmatch(r"-?\d+", raw.strip()) else float(raw)
    except ValueError:
        raise ConfigError(f"filter on '{key}' needs a number, got '{raw}'") from None


def _text(raw: str, info: dict, key: str) -> str:
    values = info.get("values")
    if values:
        by_lower = {v.lower(): v for v in values}
        if raw.lower() in by_lower:
            return by_lower[raw.lower()]
        raise ConfigError(f"'{raw}' is not a value of '{key}'; known values: {', '.join(values[:40])}"
                          + (" ..." if len(values) > 40 else ""))
    return raw


# ---- plumbing -------------------------------------------------------------------------------------

class _StopFlag:
    """Turns the first Ctrl-C into a request to stop after the current batch (main thread only)."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after this batch (Ctrl-C again to abort now)...", file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


def _progress(total: int, enabled: bool, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="item", disable=not enabled, file=sys.stderr,
                dynamic_ncols=True, mininterval=0.5)
