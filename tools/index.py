"""The Chroma index of a catalog: build it (batched, resumable, incremental) and search it with filters."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

from .catalog import Catalog
from .errors import ImageError, StoreError
from .images import ImageEncoder, load_image
from .indexing import IndexReport, StopFlag, chroma_metadata, describe_fields, progress_bar
from .models import embed_texts
from .settings import Settings

# HNSW settings chosen by measurement on the catalogs' real MiniLM embeddings (docs/benchmarks.md):
# Chroma's defaults (M=16, ef=100) found 0.92-0.95 of the exact top 10; these find >= 0.99 at catalog
# size for about 1 ms more a query. Construction settings are fixed when a collection is created.
HNSW = {"space": "cosine", "ef_construction": 200, "ef_search": 400, "max_neighbors": 32}


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


def connect(settings: Settings) -> Any:
    """A Chroma client: the embedded store in RECAGENT_HOME, or a server when a Chroma URL is set."""
    import chromadb  # noqa: PLC0415  (seconds to import: only commands that open the store pay for it)
    from chromadb.config import Settings as ChromaSettings  # noqa: PLC0415

    chroma_settings = ChromaSettings(anonymized_telemetry=False)
    if settings.chroma_url:
        url = urlparse(settings.chroma_url if "://" in settings.chroma_url else "http://" + settings.chroma_url)
        try:
            client = chromadb.HttpClient(
                host=url.hostname or "127.0.0.1",
                port=url.port or 8000,
                ssl=url.scheme == "https",
                settings=chroma_settings,
            )
            client.heartbeat()
        except Exception as exc:  # connection refused, DNS, TLS: all mean the same to the user
            raise StoreError(
                f"cannot reach the Chroma server at {settings.chroma_url} ({exc.__class__.__name__}: "
                f"{exc}). Start one with `chroma run --path DIR --port {url.port or 8000}` "
                "or drop --chroma-url to use the embedded store."
            ) from None
        return client
    path = settings.home / "chroma"
    path.mkdir(parents=True, exist_ok=True)
    return chromadb.PersistentClient(path=str(path), settings=chroma_settings)


class CatalogIndex:
    """One catalog's Chroma collection."""

    def __init__(self, catalog: str, settings: Settings | None = None, client: object | None = None):
        self.settings = settings or Settings.load()
        self.catalog = catalog
        self.name = collection_name(catalog)
        self._client = client
        self._collection = None
        self._images = None

    @property
    def client(self) -> Any:
        """The Chroma client, connected on first use (so that building an index object costs nothing)."""
        if self._client is None:
            self._client = connect(self.settings)
        return self._client

    def _where(self) -> str:
        return self.settings.chroma_url or str(self.settings.home / "chroma")

    def _failure(self, exc: Exception, what: str = "") -> StoreError:
        return StoreError(
            f"the Chroma store at {self._where()} failed ({exc.__class__.__name__}: {exc})"
            + (f" {what}" if what else "")
        )

    # -- collection ---------------------------------------------------------------------------------
    def collection(self, create: bool = False) -> Any:
        if self._collection is None:
            if create:
                self._collection = self.client.get_or_create_collection(
                    self.name, configuration={"hnsw": dict(HNSW)}, embedding_function=None
                )
            else:
                self._collection = self._open(
                    self.name,
                    f"catalog '{self.catalog}' is not indexed in {self._where()}: "
                    f"run `recagent index --catalog {self.catalog}` first.",
                )
        return self._collection

    def _open(self, name: str, missing: str) -> Any:
        """An existing collection; a StoreError that says `missing` when there is none, or what else failed."""
        from chromadb.errors import NotFoundError  # noqa: PLC0415  (see connect)

        try:
            return self.client.get_collection(name, embedding_function=None)
        except NotFoundError:
            raise StoreError(missing) from None
        except StoreError:
            raise
        except Exception as exc:  # noqa: BLE001 - the store's client fails in many ways; say which
            raise self._failure(exc) from None

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
    def index(
        self,
        catalog: Catalog,
        batch_size: int = 256,
        progress: bool = True,
        embed: Callable[[list[str]], np.ndarray] | None = None,
    ) -> IndexReport:
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
            embed = lambda texts: embed_texts(texts, self.settings)  # noqa: E731
        col = self.collection(create=True)
        with StopFlag() as stop, progress_bar(len(todo), progress, f"indexing {catalog.name}") as bar:
            for lo in range(0, len(todo), batch_size):
                if stop.requested:
                    report.interrupted = True
                    break
                batch = todo[lo : lo + batch_size]
                vectors = embed([it.document() for it in batch])
                try:
                    col.upsert(
                        ids=[it.id for it in batch],
                        embeddings=vectors,
                        metadatas=[chroma_metadata(it) for it in batch],
                        documents=[it.document() for it in batch],
                    )
                except Exception as exc:
                    raise self._failure(
                        exc, f"after writing {report.added + report.updated} items; rerun the same command to continue"
                    ) from None
                report.updated += sum(it.id in existing for it in batch)
                report.added += sum(it.id not in existing for it in batch)
                bar.update(len(batch))
        if not report.interrupted:
            report.removed = self._delete(col, stale, "items")
            self._record_fields(catalog)
        report.seconds = time.perf_counter() - start
        return report

    def _delete(self, col: Any, ids: list[str], what: str) -> int:
        """Remove the entries of items no longer in the catalog, in pages; how many."""
        try:
            for lo in range(0, len(ids), 1000):
                col.delete(ids=ids[lo : lo + 1000])
        except Exception as exc:
            raise self._failure(exc, f"while removing {what} no longer in the catalog") from None
        return len(ids)

    def _record_fields(self, catalog: Catalog) -> None:
        col = self.collection(create=True)
        meta = dict(col.metadata or {})
        wanted = {
            "fields": json.dumps(describe_fields(catalog.items)),
            "catalog": catalog.name,
            "source": catalog.source,
        }
        if any(meta.get(k) != v for k, v in wanted.items()):
            meta.update(wanted)
            col.modify(metadata=meta)

    # -- search -------------------------------------------------------------------------------------
    def search(
        self,
        query: str | None = None,
        k: int = 10,
        where: dict | None = None,
        vector: np.ndarray | None = None,
        exclude: Iterable[str] = (),
    ) -> list[Hit]:
        """Top-k items by cosine similarity to the query text (or a given vector), optionally filtered."""
        if vector is None:
            vector = embed_texts([query or ""], self.settings)[0]
        return self._query(self.collection(), vector, k, where, exclude)

    def _query(self, col, vector, k: int, where: dict | None, exclude: Iterable[str]) -> list[Hit]:
        exclude = set(exclude)
        try:
            n = min(k + len(exclude), max(col.count(), 1))
            got = col.query(
                query_embeddings=[list(map(float, vector))],
                n_results=n,
                where=where or None,
                include=["metadatas", "distances"],
            )
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
    def image_collection(self, create: bool = False) -> Any:
        """The collection of image vectors (one per item with an image), beside the text collection."""
        if self._images is None:
            name = self.name[:54] + "-images"
            if create:
                self._images = self.client.get_or_create_collection(
                    name, configuration={"hnsw": dict(HNSW)}, embedding_function=None
                )
            else:
                self._images = self._open(
                    name,
                    f"catalog '{self.catalog}' has no image vectors: run "
                    f"`recagent index --catalog {self.catalog}` (with images)",
                )
        return self._images

    def image_encoder_key(self) -> str | None:
        """Which image encoder made the stored image vectors (None: no image vectors)."""
        try:
            return (self.image_collection().metadata or {}).get("encoder")
        except StoreError:
            return None

    def index_images(
        self, catalog: Catalog, encoder: ImageEncoder, batch_size: int = 64, progress: bool = True
    ) -> IndexReport:
        """Embed and upsert the photo of every new or changed item with an image; resumable like `index`."""
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
        with StopFlag() as stop, progress_bar(len(todo), progress, f"indexing {catalog.name} images") as bar:
            for lo in range(0, len(todo), batch_size):
                if stop.requested:
                    report.interrupted = True
                    break
                batch, photos = [], []
                for it in todo[lo : lo + batch_size]:
                    try:
                        photos.append(load_image(str(it.image)))  # items without an image were left out
                        batch.append(it)
                    except ImageError as exc:
                        report.errors.append(f"{it.id}: {exc}")
                if batch:
                    vectors = encoder.embed_images(photos)
                    metas = [{**chroma_metadata(it), "_fp": prints[it.id]} for it in batch]
                    try:
                        col.upsert(ids=[it.id for it in batch], embeddings=vectors, metadatas=metas)
                    except Exception as exc:
                        raise self._failure(exc, "while writing image vectors; rerun to continue") from None
                    report.updated += sum(it.id in existing for it in batch)
                    report.added += sum(it.id not in existing for it in batch)
                bar.update(len(todo[lo : lo + batch_size]))
        if not report.interrupted:
            report.removed = self._delete(col, stale, "image vectors")
        report.seconds = time.perf_counter() - start
        return report

    def search_images(
        self,
        vector: np.ndarray,
        k: int = 10,
        where: dict | None = None,
        exclude: Iterable[str] = (),
        encoder_key: str | None = None,
    ) -> list[Hit]:
        """Top-k items whose photo is closest to the vector (a photo's or, in a shared space, a text's)."""
        col = self.image_collection()
        stored = (col.metadata or {}).get("encoder")
        if encoder_key and stored != encoder_key:
            raise StoreError(
                f"the image vectors of '{self.catalog}' were made by another image encoder "
                f"({stored}); rerun `recagent index --catalog {self.catalog}`"
            )
        return self._query(col, vector, k, where, exclude)

    def vectors(self, ids: list[str], images: bool = False) -> dict:
        """Item id -> stored vector (text, or image with images=True); ids without one are left out."""
        col = self.image_collection() if images else self.collection()
        try:
            got = col.get(ids=list(ids), include=["embeddings"])
        except Exception as exc:
            raise self._failure(exc) from None
        return {i: np.asarray(v, dtype=np.float32) for i, v in zip(got["ids"], got["embeddings"])}

    def get_all(self) -> dict[str, dict]:
        """Every item's metadata: id -> metadata."""
        try:
            got = self.collection().get(include=["metadatas"])
        except Exception as exc:
            raise self._failure(exc) from None
        return {i: (m or {}) for i, m in zip(got["ids"], got["metadatas"])}

    def get(self, ids: list[str]) -> dict[str, dict]:
        """Metadata of the given ids (missing ids are left out)."""
        try:
            got = self.collection().get(ids=list(ids), include=["metadatas"])
        except Exception as exc:
            raise self._failure(exc) from None
        return {i: (m or {}) for i, m in zip(got["ids"], got["metadatas"])}
