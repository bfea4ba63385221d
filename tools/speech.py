"""Speech to text: `transcribe_audio`, with faster-whisper or openai-whisper on the offline Whisper weights.

Both backends hear the same samples: the file is decoded once (PyAV, through faster-whisper, so openai-whisper
needs no ffmpeg program) and cut to its speech with the same voice-activity filter, then transcribed with
the same decoding settings (English, beam 5, temperature 0). openai-whisper runs the offline CTranslate2
weights converted once into its own checkpoint format (tools/train/whisper_convert.py). Defaults come from
`recagent eval voice` (docs/benchmarks.md, "Voice").
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from .errors import AudioError, ConfigError, ConversionError, MissingModelError, RecagentError
from .models import resolve_model, shared
from .settings import Settings
from .train.whisper_convert import convert_to_file

MAX_SECONDS = 120.0  # longer recordings are refused (Settings.max_audio_seconds, RECAGENT_MAX_AUDIO_SECONDS)
MIN_SECONDS = 0.3  # shorter ones cannot hold a request
SAMPLE_RATE = 16000
BACKENDS = ("faster-whisper", "openai-whisper")
SPEECH_ASSETS = ("whisper-tiny-en", "whisper-base")  # model assets (tools/models.py) holding Whisper weights
# Chosen by `recagent eval voice` (docs/benchmarks.md, "Voice"): base makes fewer word errors than tiny.en with
# every backend (about 1 point of WER), and faster-whisper int8 runs it 2.5x faster than openai-whisper for a
# WER within run-to-run noise (at most 1.3 points) of the float32 weights.
DEFAULT_BACKEND = "faster-whisper"
DEFAULT_MODEL = "whisper-base"
BEAM_SIZE = 5
LANGUAGES = ("en", "fr", "es", "de", "it")  # what recagent reads (agent/understanding.py: to_english)
# float32 would give openai-whisper's transcripts word for word (49-50 of 50), for 1.5x the time.
FASTER_WHISPER_COMPUTE_TYPE = "int8"
# With a vocabulary prompt, Whisper decodes no timestamp tokens: requests are short, and it pays for the prompt's
# decoding time (about 10% faster). Without one, decoding is as before: on its own, dropping the timestamps turned
# "Shawshank Redemption" into "Shoshank revampation" (tests/test_speech.py).
# Whisper reads at most 223 prompt tokens; a catalog's vocabulary is kept well under that (about 4 characters a
# token in English), so that the prompt costs little decoding time.
VOCABULARY_CHARS = 480
VOCABULARY_VALUES = 100  # a field with more distinct values than this is free text or ids, not the catalog's words
NOT_A_VALUE = {"", "na", "n/a", "none", "null", "unknown", "other", "misc", "(no genres listed)"}


def transcribe_audio(
    path: str,
    settings: Settings | None = None,
    model: str | None = None,
    backend: str | None = None,
    catalog: str | None = None,
) -> str:
    """Transcribe a spoken request (wav, flac, mp3, ogg, m4a, webm) to English text (backend, model: see `choose`).

    With a catalog (a built-in name or a catalog file), Whisper is told the catalog's own words first (its genres,
    types, colours, popular titles: `catalog_vocabulary`), so that they are heard right; settings.asr_vocabulary
    False (RECAGENT_ASR_VOCABULARY=0) turns that off."""
    settings = settings or Settings.load()
    limit = MAX_SECONDS if settings.max_audio_seconds is None else settings.max_audio_seconds
    audio = load_audio(path, limit)
    vocabulary = catalog_vocabulary(catalog, settings) if catalog and settings.asr_vocabulary else None
    return transcribe_samples(audio, settings, model, backend, vocabulary)


def load_audio(path: str, max_seconds: float = MAX_SECONDS) -> np.ndarray:
    """The recording as 16 kHz mono float32 samples, or an AudioError saying why it cannot be used."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise AudioError(f"{path}: no such file")
    if file.stat().st_size == 0:
        raise AudioError(f"{path}: the file is empty")
    # faster-whisper (PyAV, CTranslate2) takes a second to import: only once a recording is heard
    from faster_whisper.audio import decode_audio  # noqa: PLC0415

    try:
        audio = decode_audio(str(file), sampling_rate=SAMPLE_RATE)
    except Exception as exc:  # PyAV raises many kinds of error for a file that is not audio
        raise AudioError(f"{path}: not a readable audio file ({exc.__class__.__name__})") from None
    seconds = len(audio) / SAMPLE_RATE
    declared = _declared_seconds(file)
    # The decoder stops quietly where a file ends early; the header tells how long it should have been.
    if declared is not None and seconds < 0.9 * declared and declared - seconds > 0.5:
        raise AudioError(f"{path}: the file is cut short ({seconds:.1f} s of its {declared:.1f} s could be read)")
    if seconds > max_seconds:
        raise AudioError(f"{path}: the recording is {seconds:.0f} s long; the limit is {max_seconds:.0f} s")
    if seconds < MIN_SECONDS:
        raise AudioError(f"I didn't catch that: the recording is only {seconds:.1f} s long")
    return audio.astype(np.float32, copy=False)


def _declared_seconds(file: Path) -> float | None:
    """How long the file says it is (WAV: its data chunk; others: the container's duration), if it says."""
    with open(file, "rb") as fh:
        header = fh.read(4096)
    if header[:4] == b"RIFF" and header[8:12] == b"WAVE":
        return _wav_declared_seconds(header)
    import av  # noqa: PLC0415  (PyAV, which faster-whisper brings: only once a recording is heard)

    try:
        with av.open(str(file), metadata_errors="ignore") as container:
            return container.duration / 1_000_000 if container.duration else None
    except Exception:
        return None


def _wav_declared_seconds(header: bytes) -> float | None:
    """A WAV file's data size over its byte rate; None for streaming writers, which leave the size 0 or -1."""
    pos, byte_rate = 12, 0
    while pos + 8 <= len(header):
        chunk, size = header[pos : pos + 4], int.from_bytes(header[pos + 4 : pos + 8], "little")
        if chunk == b"fmt ":
            byte_rate = int.from_bytes(header[pos + 16 : pos + 20], "little")
        elif chunk == b"data":
            return size / byte_rate if byte_rate and 0 < size < 0xFFFFFFFF else None
        pos += 8 + size + size % 2  # chunks are padded to an even size
    return None


# ---- the catalog's own words ------------------------------------------------------------------------------


def vocabulary_prompt(
    items: Iterable[tuple[str, Mapping[str, object]]],
    popularity: str | None = None,
    noun: str = "item",
    shop: bool = True,
    max_chars: int = VOCABULARY_CHARS,
) -> str:
    """Whisper's initial prompt for a catalog: its categorical words (every short string value of a field with at
    most VOCABULARY_VALUES distinct values, some shared by several items: genres, types, colours, usage), most
    frequent first and in
    lower case, then its most popular titles (by the numeric `popularity` field, when the catalog has one), said
    as a sentence within about max_chars: "We sell casual, black, shirts." (a shop) or "We talk about drama, comedy
    movies. Have you seen Forrest Gump, The Matrix?" A bare list of words makes Whisper answer in a list.

    items: (title, metadata) pairs. Years, parenthesised aliases, subtitles and trailing ", The" are left out of
    titles."""
    values: dict[str, Counter[str]] = {}
    ranked: list[tuple[float, str]] = []
    for title, meta in items:
        for key, value in meta.items():
            if key == "title":
                continue
            for v in value if isinstance(value, list) else [value]:
                if isinstance(v, str) and v.strip().lower() not in NOT_A_VALUE and len(v.split()) <= 3:
                    values.setdefault(key, Counter())[v.strip()] += 1
        score = meta.get(popularity) if popularity else None
        if isinstance(score, (int, float)) and not isinstance(score, bool) and score > 0:
            ranked.append((float(score), str(meta.get("title") or title)))
    words: Counter[str] = Counter()
    for counts in values.values():
        # a field of words: a few values, shared by several items (not ids, not one value for every item)
        if 1 < len(counts) <= VOCABULARY_VALUES and max(counts.values()) > 1:
            for v, n in counts.items():
                words[v.lower()] += n
    terms = _distinct(sorted(words, key=lambda v: (-words[v], v)))
    titles = _distinct([_spoken_title(t) for _, t in sorted(ranked, key=lambda x: -x[0])])
    # the catalog's words first, then titles in the room left (at least half of it when there are titles)
    chosen_words = _fit(terms, max_chars // 2 if titles else max_chars)
    chosen_titles = _fit(titles, max_chars - len(chosen_words))
    sentences = []
    if chosen_words:
        sentences.append(f"We sell {chosen_words}." if shop else f"We talk about {chosen_words} {noun}s.")
    if chosen_titles:
        sentences.append(f"Have you seen {chosen_titles}?")
    return " ".join(sentences)


def _spoken_title(title: str) -> str:
    """How a title is said: 'Seven (a.k.a. Se7en) (1995)' -> 'Seven'; 'Matrix, The' -> 'The Matrix';
    'Terminator 2: Judgment Day' -> 'Terminator 2'."""
    title = re.sub(r"\s*\([^)]*\)", "", title).split(": ")[0].strip()
    match = re.match(r"^(.*), (The|A|An)$", title)
    return f"{match.group(2)} {match.group(1)}" if match else title


def _distinct(texts: list[str]) -> list[str]:
    """Texts in order, without case-insensitive repeats or empty ones."""
    seen: set[str] = set()
    out = []
    for text in texts:
        key = text.lower()
        if text and key not in seen:
            seen.add(key)
            out.append(text)
    return out


def _fit(texts: list[str], max_chars: int) -> str:
    """As many texts, in order, as fit in max_chars joined by ', '."""
    out: list[str] = []
    used = 0
    for text in texts:
        cost = len(text) + (2 if out else 0)
        if used + cost > max_chars:
            break
        out.append(text)
        used += cost
    return ", ".join(out)


def catalog_vocabulary(catalog: str, settings: Settings | None = None) -> str | None:
    """The vocabulary prompt of a catalog (built-in name or catalog file), built once per process; None when the
    catalog cannot be read (a turn is then transcribed without it rather than failing)."""
    settings = settings or Settings.load()
    key = ("asr-vocabulary", catalog, str(settings.data))
    return shared(key, lambda: _build_vocabulary(catalog, settings)) or None


def _build_vocabulary(catalog: str, settings: Settings) -> str:
    from .catalog import catalog_profile, load_catalog  # noqa: PLC0415  (catalogs are read only once voice is used)

    try:
        loaded = load_catalog(catalog, settings)
    except RecagentError:
        return ""  # kept as "none", so that the catalog is not read again at every turn
    profile = catalog_profile(loaded.name)
    items = ((i.title, i.metadata) for i in loaded.items)
    return vocabulary_prompt(items, profile.rating_count, profile.noun, shop=profile.kind == "shopping")


def speech_only(audio: np.ndarray) -> np.ndarray:
    """The parts of the recording that hold speech (faster-whisper's Silero filter), or "I didn't catch that"."""
    # faster-whisper (PyAV, CTranslate2) takes a second to import: only once a recording is heard
    from faster_whisper.vad import VadOptions, collect_chunks, get_speech_timestamps  # noqa: PLC0415

    chunks = get_speech_timestamps(audio, VadOptions())  # the options faster-whisper's own vad_filter uses
    if not chunks:
        raise AudioError("I didn't catch that: the recording seems to be silent")
    return np.concatenate(collect_chunks(audio, chunks)[0])


def transcribe_samples(
    audio: np.ndarray,
    settings: Settings | None = None,
    model: str | None = None,
    backend: str | None = None,
    vocabulary: str | None = None,
) -> str:
    """Transcribe decoded 16 kHz samples (see `transcribe_audio` for backend and model; vocabulary: the words
    Whisper is told first, see `vocabulary_prompt`; the language: settings.asr_language)."""
    language = speech_language(settings or Settings.load())
    speech = speech_only(audio)  # before loading a model: a silent recording needs none
    text = speech_recognizer(settings, model, backend).transcribe(speech, vocabulary, language)
    if not text:
        raise AudioError("I didn't catch that: the recording seems to be silent")
    return text


def speech_language(settings: Settings) -> str:
    """The language speech is heard in: settings.asr_language (RECAGENT_ASR_LANGUAGE), English by default."""
    language = (settings.asr_language or "en").lower()
    if language != "auto" and language not in LANGUAGES:
        raise ConfigError(
            f"unknown speech language '{language}': choose auto or one of {', '.join(LANGUAGES)} "
            "(RECAGENT_ASR_LANGUAGE)"
        )
    return language


def most_likely_language(heard: Mapping[str, float]) -> str:
    """Of the languages recagent reads (LANGUAGES), the one Whisper finds most likely: the others it may name for a
    short or oddly spoken clip (Norwegian, Welsh) are no request recagent could read."""
    return max(LANGUAGES, key=lambda language: heard.get(language, 0.0))


def choose(settings: Settings, model: str | None = None, backend: str | None = None) -> tuple[str, str]:
    """(backend, model) from the arguments, else the settings (--asr-backend, --asr-model and their environment
    variables), else the defaults.

    A model is an asset (whisper-tiny-en, whisper-base), a local path, or a Whisper name ("tiny.en") for users online.
    """
    backend = backend or settings.asr_backend or DEFAULT_BACKEND
    if backend not in BACKENDS:
        raise ConfigError(
            f"unknown speech backend '{backend}'; choose one of {', '.join(BACKENDS)} "
            "(--asr-backend or RECAGENT_ASR_BACKEND)"
        )
    return backend, model or settings.asr_model or DEFAULT_MODEL


def speech_recognizer(
    settings: Settings | None = None,
    model: str | None = None,
    backend: str | None = None,
    compute_type: str = FASTER_WHISPER_COMPUTE_TYPE,
) -> FasterWhisper | OpenAIWhisper:
    """The shared recognizer for a backend and model, loaded on first use."""
    settings = settings or Settings.load()
    backend, model = choose(settings, model, backend)
    source = resolve_model(model, settings) if model in SPEECH_ASSETS else model
    if backend == "faster-whisper":
        return shared(("asr", backend, source, compute_type), lambda: _faster_whisper(source, compute_type))
    return shared(("asr", backend, source), lambda: OpenAIWhisper(_openai_checkpoint(source, model, settings)))


class FasterWhisper:
    """faster-whisper (CTranslate2) on the CPU."""

    def __init__(self, source: str, compute_type: str = FASTER_WHISPER_COMPUTE_TYPE) -> None:
        from faster_whisper import WhisperModel  # noqa: PLC0415  (heavy: only once the model is loaded)

        self.model = WhisperModel(source, device="cpu", compute_type=compute_type, cpu_threads=os.cpu_count() or 1)

    def transcribe(self, audio: np.ndarray, vocabulary: str | None = None, language: str = "en") -> str:
        """The transcript of speech samples (already filtered by `speech_only`), told the vocabulary first (then
        without timestamp tokens, which pays for the prompt's time; without one, decoded as before). language:
        one of LANGUAGES, or "auto" for the one of them heard (the English vocabulary is then told only to
        English speech)."""
        if language == "auto":
            _, _, heard = self.model.detect_language(audio)
            language = most_likely_language(dict(heard))
        vocabulary = vocabulary if language == "en" else None
        segments, _ = self.model.transcribe(
            audio,
            language=language,
            beam_size=BEAM_SIZE,
            temperature=0.0,
            vad_filter=False,
            initial_prompt=vocabulary or None,
            without_timestamps=bool(vocabulary),
        )
        return " ".join(s.text.strip() for s in segments).strip()


def _faster_whisper(source: str, compute_type: str) -> FasterWhisper:
    """FasterWhisper, with a hub name that cannot be fetched (offline, misspelt) reported as a missing model."""
    try:
        return FasterWhisper(source, compute_type)
    except OSError as exc:  # huggingface_hub's lookup errors are OSErrors
        if Path(source).expanduser().exists():
            raise
        reason = str(exc).splitlines()[0]
        raise MissingModelError(
            f"speech model '{source}' is neither a model asset ({', '.join(SPEECH_ASSETS)}) nor "
            f"a local path, and fetching it from the hub failed: {reason}"
        ) from None


class OpenAIWhisper:
    """openai-whisper (PyTorch) on the CPU."""

    def __init__(self, checkpoint: str) -> None:
        import whisper  # noqa: PLC0415  (openai-whisper imports torch: only once the model is loaded)

        self.model = whisper.load_model(checkpoint, device="cpu")

    def transcribe(self, audio: np.ndarray, vocabulary: str | None = None, language: str = "en") -> str:
        """The transcript of speech samples, decoded as faster-whisper does (beam 5, temperature 0, no fp16,
        the vocabulary as the initial prompt and then no timestamp tokens, "auto" among LANGUAGES)."""
        if language == "auto":
            import whisper  # noqa: PLC0415  (openai-whisper imports torch: only once the model is loaded)

            mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(audio), self.model.dims.n_mels)
            _, heard = self.model.detect_language(mel.to(self.model.device))
            language = most_likely_language(heard)
        vocabulary = vocabulary if language == "en" else None
        result = self.model.transcribe(
            audio,
            language=language,
            beam_size=BEAM_SIZE,
            temperature=0.0,
            fp16=False,
            verbose=None,
            initial_prompt=vocabulary or None,
            without_timestamps=bool(vocabulary),
        )
        return " ".join(s["text"].strip() for s in result["segments"]).strip()


def _openai_checkpoint(source: str, model: str, settings: Settings) -> str:
    """What `whisper.load_model` should open: a .pt file, a CTranslate2 folder converted once into the
    cache, or a standard Whisper name ("tiny.en", "base": openai-whisper downloads it, for users online)."""
    path = Path(source).expanduser()
    if path.is_file():
        return str(path)
    if not path.is_dir():
        import whisper  # noqa: PLC0415  (openai-whisper imports torch: only once the model is loaded)

        if source in whisper.available_models():
            return source
        try:  # a hub name of CTranslate2 weights, such as Systran/faster-whisper-base
            from faster_whisper.utils import download_model  # noqa: PLC0415  (heavy: only for a hub name)

            path = Path(download_model(source))
        except Exception as exc:
            raise MissingModelError(
                f"speech model '{source}' is neither a model asset ({', '.join(SPEECH_ASSETS)}), "
                f"a local path, nor a Whisper name ({', '.join(whisper.available_models())}): "
                f"{exc.__class__.__name__}"
            ) from None
    if not (path / "model.bin").is_file():
        raise MissingModelError(f"speech model {path}: no model.bin (CTranslate2 weights) in it")
    # Named by where the weights are and their size, so that other weights under the same name reconvert.
    stamp = hashlib.sha1(f"{path.resolve()}:{(path / 'model.bin').stat().st_size}".encode()).hexdigest()[:10]
    name = model if model in SPEECH_ASSETS else path.name
    try:
        return str(convert_to_file(path, settings.cache / "models" / f"openai-whisper-{name}-{stamp}.pt"))
    except ConversionError as exc:  # shown to the user as one line, like any model that cannot be used
        raise MissingModelError(f"speech model {path} cannot be used with openai-whisper: {exc}") from None
