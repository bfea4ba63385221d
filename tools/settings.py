"""Where recagent keeps its data, models and stores: one settings object from options, environment and config file."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import tomllib

from .errors import ConfigError

# The repository root when running from a checkout (tools/ lies one level below it).
CHECKOUT_ROOT = Path(__file__).resolve().parent.parent


def _default_home() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "recagent"


def _default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "recagent"


_OFF = {"0", "false", "no", "off"}
_ON = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    """Every option of recagent, resolved; build with `Settings.load()` and adjust with `.with_()`."""

    home: Path  # Chroma store, checkpoints, feedback: RECAGENT_HOME
    cache: Path  # assembled model files, shared by every home: RECAGENT_CACHE
    data: Path | None  # catalogs and benchmarks: --data, RECAGENT_DATA, or ../shared/data
    chroma_url: str | None  # a Chroma server instead of the embedded store: --chroma-url, RECAGENT_CHROMA_URL
    models: dict[str, str] = field(default_factory=dict)  # per-asset overrides: path or hub name
    config_file: Path | None = None
    # speech (tools/speech.py): None means the default chosen by `recagent eval voice`
    asr_backend: str | None = None  # --asr-backend, RECAGENT_ASR_BACKEND
    asr_model: str | None = None  # --asr-model, RECAGENT_ASR_MODEL
    max_audio_seconds: float | None = None  # RECAGENT_MAX_AUDIO_SECONDS
    asr_vocabulary: bool = True  # tell Whisper the catalog's own words first: RECAGENT_ASR_VOCABULARY=0 turns it off
    asr_language: str | None = None  # RECAGENT_ASR_LANGUAGE: en (None), fr, es, de, it, or auto: the one heard
    # the agent (agent/rules.py): plain code plans the turns it can read whole; RECAGENT_CODE_PLANS=0: the LLM plans all
    code_plans: bool = True
    # feedback (tools/feedback.py)
    user: str | None = None  # whose feedback: --user, RECAGENT_USER; None: the login name
    feedback: bool = True  # store likes and dislikes: --feedback/--no-feedback, RECAGENT_FEEDBACK=0
    share_text: bool = False  # store the conversation text with them: --share-text, RECAGENT_FEEDBACK_TEXT=1
    # conversations and feedback (tools/store.py): a SQLAlchemy URL; None means a SQLite file in the home
    db_url: str | None = None  # --db, RECAGENT_DB

    def database_url(self) -> str:
        """Where conversations and feedback are stored: the db_url, else sqlite:///HOME/recagent.sqlite3."""
        return self.db_url or f"sqlite:///{self.home / 'recagent.sqlite3'}"

    @classmethod
    def load(
        cls,
        *,
        home: str | Path | None = None,
        data: str | Path | None = None,
        chroma_url: str | None = None,
        config_file: str | Path | None = None,
        **options: object,
    ) -> Settings:
        """Settings from explicit arguments, then environment variables, then the config file, then defaults.

        `options` are the other fields (asr_backend, user, feedback, ...); None means "not given"."""
        env = os.environ
        home_path = Path(home or env.get("RECAGENT_HOME") or _default_home()).expanduser()
        cfg_path = Path(config_file or env.get("RECAGENT_CONFIG") or home_path / "config.toml").expanduser()
        cfg: dict = {}
        if cfg_path.is_file():
            try:
                cfg = tomllib.loads(cfg_path.read_text())
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{cfg_path}: not valid TOML ({exc})") from None
        models = {str(k): str(v) for k, v in (cfg.get("models") or {}).items()}
        for key, value in env.items():  # RECAGENT_MODEL_TEXT_EMBEDDER=/path -> models["text-embedder"]
            if key.startswith("RECAGENT_MODEL_") and value:
                models[key[len("RECAGENT_MODEL_") :].lower().replace("_", "-")] = value
        data_value = data or env.get("RECAGENT_DATA") or cfg.get("data")
        unknown = set(options) - set(_OPTION_ENV)
        if unknown:
            raise TypeError(f"unknown settings: {', '.join(sorted(unknown))}")
        chosen: dict[str, Any] = {name: _option(name, options.get(name), cfg) for name in _OPTION_ENV}
        return cls(
            home=home_path,
            cache=Path(env.get("RECAGENT_CACHE") or cfg.get("cache") or _default_cache()).expanduser(),
            data=Path(data_value).expanduser() if data_value else _default_data(),
            chroma_url=chroma_url or env.get("RECAGENT_CHROMA_URL") or cfg.get("chroma_url") or None,
            models=models,
            config_file=cfg_path if cfg_path.is_file() else None,
            **{k: v for k, v in chosen.items() if v is not None},
        )

    def with_(self, **changes: Any) -> Settings:
        """A copy with some fields changed."""
        return replace(self, **changes)

    def require_data(self) -> Path:
        """The data folder, or a ConfigError that says how to get it."""
        if self.data is None or not self.data.is_dir():
            where = f" ({self.data} does not exist)" if self.data else ""
            raise ConfigError(
                f"no data folder found{where}. Point recagent at one with --data DIR or RECAGENT_DATA=DIR "
                "(a folder holding movielens/, fashion/, redial/), or download MovieLens latest-small with "
                "`recagent data download` (needs internet)."
            )
        return self.data


# option -> (environment variable, kind); the config file uses the option's own name as its key
_OPTION_ENV = {
    "asr_backend": ("RECAGENT_ASR_BACKEND", str),
    "asr_model": ("RECAGENT_ASR_MODEL", str),
    "max_audio_seconds": ("RECAGENT_MAX_AUDIO_SECONDS", float),
    "asr_vocabulary": ("RECAGENT_ASR_VOCABULARY", bool),
    "asr_language": ("RECAGENT_ASR_LANGUAGE", str),
    "code_plans": ("RECAGENT_CODE_PLANS", bool),
    "user": ("RECAGENT_USER", str),
    "feedback": ("RECAGENT_FEEDBACK", bool),
    "share_text": ("RECAGENT_FEEDBACK_TEXT", bool),
    "db_url": ("RECAGENT_DB", str),
}


def _option(name: str, given: object, cfg: dict) -> object:
    """One option: the value given, else its environment variable, else the config file; None if none says."""
    if given is not None:
        return given
    var, kind = _OPTION_ENV[name]
    raw = os.environ.get(var, "").strip()
    if not raw and name in cfg:
        raw = str(cfg[name]).strip()
    if not raw:
        return None
    if kind is bool:
        if raw.lower() in _OFF:
            return False
        return True if raw.lower() in _ON else None  # anything else: the default
    if kind is float:
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{var}={raw!r} is not a number") from None
    return raw


def _default_data() -> Path | None:
    """`../shared/data` beside the checkout or the working directory, else the downloaded copy in the home."""
    for root in (CHECKOUT_ROOT, Path.cwd()):
        candidate = root.parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    downloaded = Path(os.environ.get("RECAGENT_HOME") or _default_home()).expanduser() / "data"
    return downloaded if downloaded.is_dir() else None
