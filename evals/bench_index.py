"""Index benchmark: insert throughput, query latency p50/p95 with and without a filter, recall@10 vs exact search.

Run with `recagent bench index [--sizes 10000,100000,1000000] --json OUT`. It measures
- the real catalogs (MiniLM embeddings of movies and fashion) under several HNSW settings, to choose them;
- random 384-d vectors at growing sizes, in the embedded store and in a Chroma server on loopback,
  with Chroma's default HNSW settings and with recagent's.
"""

from __future__ import annotations

import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from recagent.tools.catalog import load_catalog
from recagent.tools.index import HNSW
from recagent.tools.models import embed_texts
from recagent.tools.settings import Settings

from .common import percentile
from .loopback import free_port, start_server, stop_server

if TYPE_CHECKING:
    from chromadb.api import ClientAPI
    from chromadb.api.collection_configuration import CreateCollectionConfiguration
    from chromadb.api.types import Where

DEFAULT_HNSW = {"space": "cosine", "ef_construction": 100, "ef_search": 100, "max_neighbors": 16}
CANDIDATES = [  # (label, settings) tried on the real catalogs
    ("chroma default M16 efc100 ef100", DEFAULT_HNSW),
    ("M16 efc100 ef200", {**DEFAULT_HNSW, "ef_search": 200}),
    ("M32 efc200 ef100", {**DEFAULT_HNSW, "max_neighbors": 32, "ef_construction": 200}),
    ("M32 efc200 ef200", {**DEFAULT_HNSW, "max_neighbors": 32, "ef_construction": 200, "ef_search": 200}),
    ("recagent M32 efc200 ef400", dict(HNSW)),
    ("M48 efc400 ef400", {**DEFAULT_HNSW, "max_neighbors": 48, "ef_construction": 400, "ef_search": 400}),
]
FILTER_BUCKETS = 10  # the filtered query keeps one bucket in ten (10% of the items)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _exact_threshold(vectors: np.ndarray, queries: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Per query, the similarity of the exact 10th neighbour: ties (catalogs hold duplicate texts) all count."""
    out = []
    for q in queries:
        sims = vectors @ q
        if mask is not None:
            sims = np.where(mask, sims, -np.inf)
        out.append(np.partition(-sims, 9)[9] * -1)
    return np.asarray(out)


def measure(
    client: ClientAPI, name: str, vectors: np.ndarray, queries: np.ndarray, hnsw: dict, batch: int = 4000
) -> dict:
    """Insert `vectors` into a new collection, then time and score `queries` with and without a filter."""
    try:
        client.delete_collection(name)
    except Exception:
        pass
    configuration = cast("CreateCollectionConfiguration", {"hnsw": dict(hnsw)})
    col = client.create_collection(name, configuration=configuration, embedding_function=None)
    n = len(vectors)
    buckets = np.arange(n) % FILTER_BUCKETS
    started = time.perf_counter()
    for lo in range(0, n, batch):
        hi = min(lo + batch, n)
        col.add(
            ids=[str(i) for i in range(lo, hi)],
            embeddings=vectors[lo:hi],
            metadatas=[{"bucket": int(b)} for b in buckets[lo:hi]],
        )
        if n >= 100_000 and (hi // batch) % 25 == 0:
            _say(f"    inserted {hi:,}/{n:,}")
    insert_s = time.perf_counter() - started
    result = {"n": n, "insert_items_per_s": round(n / insert_s, 1), "hnsw": hnsw}
    for label, where, mask in (("unfiltered", None, None), ("filtered", {"bucket": 3}, buckets == 3)):
        thresholds = _exact_threshold(vectors, queries, mask)
        latencies, hits = [], 0
        for q, tenth in zip(queries, thresholds):
            t = time.perf_counter()
            got = col.query(query_embeddings=[q.tolist()], n_results=10, where=cast("Where | None", where), include=[])
            latencies.append(time.perf_counter() - t)
            found = np.asarray([int(i) for i in got["ids"][0]], dtype=np.int64)
            # recall@10: returned items at least as similar as the exact 10th neighbour
            hits += int(np.sum(vectors[found] @ q >= tenth - 1e-5)) if len(found) else 0
        ms = [seconds * 1000 for seconds in latencies]
        result[label] = {
            "p50_ms": percentile(ms, 50, digits=2),
            "p95_ms": percentile(ms, 95, digits=2),
            "recall@10": round(hits / (10 * len(queries)), 4),
        }
    client.delete_collection(name)
    return result


def _catalog_vectors(
    settings: Settings, catalog: str, n_queries: int, rng: random.Random
) -> tuple[np.ndarray, np.ndarray]:
    """The catalog's text vectors, and those of n_queries random requests made of its genres and tags (movies) or
    colours, types and genders (fashion)."""
    cat = load_catalog(catalog, settings)
    _say(f"  embedding {catalog} ({len(cat.items):,} items; cached after the first run)")
    vectors = embed_texts([it.document() for it in cat.items], settings)
    if catalog == "movies":
        genres = sorted({g for it in cat.items for g in it.metadata.get("genres", [])})
        tags = sorted({t for it in cat.items for t in it.metadata.get("tags", [])})
        texts = [f"a {rng.choice(genres).lower()} movie, {rng.choice(tags)}" for _ in range(n_queries)]
    else:
        pick = lambda key: rng.choice(sorted({str(it.metadata.get(key, "")) for it in cat.items}))  # noqa: E731
        texts = [f"{pick('baseColour')} {pick('articleType')} for {pick('gender')}" for _ in range(n_queries)]
    return vectors.astype(np.float32), embed_texts(texts, settings).astype(np.float32)


def _random_unit(n: int, dim: int, seed: int) -> np.ndarray:
    gen = np.random.default_rng(seed)
    v = gen.standard_normal((n, dim), dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


class _Server:
    """`chroma run` on a free loopback port, in a temporary folder."""

    def __enter__(self) -> _Server:
        import chromadb  # noqa: PLC0415  (heavy: loaded only when a store is measured)

        self.port = free_port()
        self.path = tempfile.mkdtemp(prefix="recagent-bench-chroma-")
        chroma = shutil.which("chroma", path=str(Path(sys.executable).parent)) or "chroma"
        self.client = None

        def ready():
            self.client = chromadb.HttpClient(host="127.0.0.1", port=self.port)
            self.client.heartbeat()

        self.proc = start_server(
            [chroma, "run", "--path", self.path, "--host", "127.0.0.1", "--port", str(self.port)],
            ready,
            60,
            what="chroma server",
        )
        return self

    def __exit__(self, *exc: object) -> None:
        stop_server(self.proc)
        shutil.rmtree(self.path, ignore_errors=True)


def run_index_benchmark(
    settings: Settings,
    sizes: list[int],
    queries: int = 200,
    server: bool = True,
    catalogs: bool = True,
    big_builds: bool = False,
    embedded_store: bool = True,
) -> dict:
    """Run the benchmark, print tables, and return every figure."""
    import chromadb  # noqa: PLC0415  (heavy: loaded only when the benchmark runs)
    from chromadb.config import Settings as ChromaSettings  # noqa: PLC0415  (as above)

    rng = random.Random(0)
    results: dict = {"queries": queries, "catalogs": [], "random": [], "machine": _machine()}
    work = tempfile.mkdtemp(prefix="recagent-bench-")
    embedded = chromadb.PersistentClient(path=work, settings=ChromaSettings(anonymized_telemetry=False))
    try:
        if catalogs:
            for catalog in ("movies", "fashion"):
                vectors, qv = _catalog_vectors(settings, catalog, queries, rng)
                for label, hnsw in CANDIDATES:
                    _say(f"  {catalog}: {label}")
                    row = measure(embedded, "bench-catalog", vectors, qv, hnsw)
                    results["catalogs"].append({"catalog": catalog, "settings": label, "store": "embedded", **row})
                    _say("  " + json.dumps(results["catalogs"][-1]))
        stores: list[tuple[str, Callable[[], AbstractContextManager[Any]]]] = []
        if embedded_store:
            stores.append(("embedded", lambda: nullcontext(embedded)))
        if server:
            stores.append(("server", _Server))
        for size in sizes:
            vectors = _random_unit(size, 384, seed=size)
            qv = _random_unit(queries, 384, seed=size + 1)
            for store, ctx in stores:
                for label, hnsw in (("chroma default", DEFAULT_HNSW), ("recagent", dict(HNSW))):
                    if size >= 1_000_000 and label == "recagent" and not big_builds:
                        # Building a million random vectors with M=32, ef_construction=200 runs at about
                        # 300 items/s on 2 cores (about an hour per store): only with --big-builds.
                        continue
                    _say(f"  random {size:,} vectors, {store}, {label}")
                    with ctx() as handle:
                        client = handle if store == "embedded" else handle.client
                        row = measure(client, "bench-random", vectors, qv, hnsw)
                    results["random"].append({"store": store, "settings": label, **row})
                    _say("  " + json.dumps(results["random"][-1]))  # each row as soon as it is measured
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(format_tables(results))
    return results


def _machine() -> dict:
    import chromadb  # noqa: PLC0415  (heavy: loaded only when the benchmark runs)

    return {"cpus": os.cpu_count(), "python": platform.python_version(), "chromadb": chromadb.__version__}


def format_tables(results: dict) -> str:
    """The figures as Markdown tables."""
    lines = []
    if results["catalogs"]:
        lines += _table(
            "### Real catalogs (MiniLM embeddings), embedded store",
            ["catalog", "HNSW settings"],
            "|---|---|",
            [f"{r['catalog']} ({r['n']:,}) | {r['settings']}" for r in results["catalogs"]],
            results["catalogs"],
        )
        lines.append("")
    if results["random"]:
        lines += _table(
            "### Random 384-d vectors",
            ["vectors", "store", "HNSW settings"],
            "|---:|---|---|",
            [f"{r['n']:,} | {r['store']} | {r['settings']}" for r in results["random"]],
            results["random"],
        )
    return "\n".join(lines)


MEASURED = [
    "insert items/s",
    "p50 ms",
    "p95 ms",
    "recall@10",
    "filtered p50 ms",
    "filtered p95 ms",
    "filtered recall@10",
]


def _table(title: str, keys: list[str], key_rule: str, labels: list[str], rows: list[dict]) -> list[str]:
    """A Markdown table: the key columns given, then the measured ones (_cells) of each row."""
    head = "| " + " | ".join(keys + MEASURED) + " |"
    rule = key_rule + "---:|" * len(MEASURED)
    return [title, "", head, rule] + [f"| {label} | {_cells(r)} |" for label, r in zip(labels, rows)]


def _cells(r: dict) -> str:
    """The measured columns of one row: insert rate, then latency and recall without and with the filter."""
    u, f = r["unfiltered"], r["filtered"]
    return (
        f"{r['insert_items_per_s']:,.0f} | {u['p50_ms']} | {u['p95_ms']} | {u['recall@10']:.3f} | "
        f"{f['p50_ms']} | {f['p95_ms']} | {f['recall@10']:.3f}"
    )
