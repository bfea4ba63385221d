"""Speech input: real espeak-ng recordings in every supported format, broken files, both backends, and the
CTranslate2 -> openai-whisper checkpoint converter."""

import json
import subprocess
from pathlib import Path

import pytest
import whisper
from conftest import run_cli

from recagent.evals.eval_voice import word_errors
from recagent.tools.errors import AudioError, ConfigError
from recagent.tools.models import resolve_model
from recagent.tools.speech import (
    _openai_checkpoint,
    catalog_vocabulary,
    load_audio,
    speech_only,
    speech_recognizer,
    transcribe_audio,
)
from recagent.tools.text import plain_words
from recagent.tools.train.whisper_convert import convert_to_file

FORMATS = ["wav", "flac", "mp3", "ogg", "m4a", "webm"]
REQUEST = "I want a red dress for a summer wedding."
SENTENCES = [
    "Have you seen the Shawshank Redemption? I loved it.",
    REQUEST,
    "Something like Inception or The Matrix would be great.",
]


def espeak(text: str, wav: Path) -> Path:
    subprocess.run(["espeak-ng", "-s", "140", "-w", str(wav), text], check=True)
    return wav


def ffmpeg(source: Path, target: Path) -> Path:
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(source), "-ar", "16000", str(target)], check=True)
    return target


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    """One spoken request converted into every format, the spoken test sentences, silence, and broken files."""
    folder = tmp_path_factory.mktemp("speech")
    spoken = espeak(REQUEST, folder / "spoken.wav")
    for ext in FORMATS:
        ffmpeg(spoken, folder / f"request.{ext}")
    for i, sentence in enumerate(SENTENCES):
        espeak(sentence, folder / f"sentence{i}.wav")
    subprocess.run(["sox", "-n", "-r", "16000", "-c", "1", str(folder / "silence.wav"), "trim", "0", "3"], check=True)
    (folder / "cut.mp3").write_bytes((folder / "request.mp3").read_bytes()[:1024])
    (folder / "cut.wav").write_bytes(spoken.read_bytes()[:20_000])  # the header declares all of it
    (folder / "header-only.wav").write_bytes(spoken.read_bytes()[:44])
    (folder / "not-audio.ogg").write_text("this is not audio")
    (folder / "empty.webm").write_bytes(b"")
    subprocess.run(
        ["sox", "-n", "-r", "16000", "-c", "1", str(folder / "long.wav"), "synth", "5", "sine", "440"], check=True
    )
    return folder


@pytest.mark.parametrize("ext", FORMATS)
def test_every_format_transcribes(audio, settings, ext):
    text = transcribe_audio(str(audio / f"request.{ext}"), settings)
    edits, words = word_errors(REQUEST, text)
    assert edits <= 1, text  # lossy codecs may blur one word of espeak's voice ("red breast" in opus)
    assert "summer wedding" in text.lower()


@pytest.mark.parametrize("backend", ["faster-whisper", "openai-whisper"])
@pytest.mark.parametrize(
    "name, message",
    [
        ("missing.wav", "no such file"),
        ("empty.webm", "the file is empty"),
        ("not-audio.ogg", "not a readable audio file"),
        ("cut.mp3", "the file is cut short"),
        ("cut.wav", "the file is cut short"),
        ("header-only.wav", "the file is cut short"),
        ("silence.wav", "I didn't catch that"),
    ],
)
def test_unusable_recordings_get_a_clear_message(audio, settings, backend, name, message):
    with pytest.raises(AudioError, match=message):
        transcribe_audio(str(audio / name), settings, model="whisper-tiny-en", backend=backend)


def test_too_long_recording_is_refused(audio, settings, monkeypatch):
    monkeypatch.setenv("RECAGENT_MAX_AUDIO_SECONDS", "3")
    loaded = settings.load(home=settings.home)  # the settings read the environment when they are loaded
    assert loaded.max_audio_seconds == 3
    with pytest.raises(AudioError, match="the recording is 5 s long; the limit is 3 s"):
        transcribe_audio(str(audio / "long.wav"), loaded, model="whisper-tiny-en", backend="openai-whisper")


def test_backend_and_model_come_from_the_environment(audio, settings, monkeypatch):
    monkeypatch.setenv("RECAGENT_ASR_BACKEND", "no-such-backend")
    with pytest.raises(ConfigError, match="unknown speech backend 'no-such-backend'"):
        transcribe_audio(str(audio / "sentence0.wav"), settings.load(home=settings.home))
    monkeypatch.setenv("RECAGENT_ASR_BACKEND", "openai-whisper")
    monkeypatch.setenv("RECAGENT_ASR_MODEL", "whisper-tiny-en")
    assert (
        transcribe_audio(str(audio / "sentence0.wav"), settings.load(home=settings.home))
        == "Have you seen the Shawshank Redemption? I loved it."
    )


def test_converted_checkpoint_is_written_once_and_loads_in_openai_whisper(tmp_path):
    target = tmp_path / "tiny.pt"
    convert_to_file(resolve_model("whisper-tiny-en"), target)
    written = target.stat().st_mtime_ns
    convert_to_file(resolve_model("whisper-tiny-en"), target)
    assert target.stat().st_mtime_ns == written and [p.name for p in tmp_path.iterdir()] == ["tiny.pt"]
    model = whisper.load_model(str(target), device="cpu")
    assert (model.dims.n_vocab, model.dims.n_audio_layer, model.dims.n_text_state) == (51864, 4, 384)
    assert not model.is_multilingual  # tiny.en: openai-whisper picks the English-only tokenizer


def test_standard_whisper_names_go_to_openai_whisper_unchanged(settings):
    assert _openai_checkpoint("tiny.en", "tiny.en", settings) == "tiny.en"
    assert _openai_checkpoint("base", "base", settings) == "base"


@pytest.mark.parametrize("model", ["whisper-tiny-en", "whisper-base"])
def test_openai_whisper_on_the_converted_weights_hears_what_faster_whisper_hears(audio, settings, model):
    # the same weights at the same precision: faster-whisper's default int8 can hear a word differently on some CPUs
    faster_float32 = speech_recognizer(settings, model, "faster-whisper", compute_type="float32")
    for i, sentence in enumerate(SENTENCES):
        faster = faster_float32.transcribe(speech_only(load_audio(str(audio / f"sentence{i}.wav"))))
        openai = transcribe_audio(str(audio / f"sentence{i}.wav"), settings, model=model, backend="openai-whisper")
        assert openai == faster
        assert word_errors(sentence, openai)[0] <= 1, openai
    # cached beside the other assembled models, converted once: asking again reuses the same file
    converted = Path(_openai_checkpoint(resolve_model(model, settings), model, settings))
    assert converted.parent == settings.cache / "models" and converted.suffix == ".pt"
    written = converted.stat().st_mtime_ns
    assert _openai_checkpoint(resolve_model(model, settings), model, settings) == str(converted)
    assert converted.stat().st_mtime_ns == written


def test_ask_takes_the_speech_backend_and_model_options(audio, env, tmp_path, movies_index):
    answers = [{"tool": "search_catalog", "args": {"query": "prison drama", "filters": []}}, "Prison dramas."]
    script = tmp_path / "script.json"
    script.write_text(json.dumps(answers))
    done = run_cli(
        env,
        "ask",
        "--audio",
        str(audio / "sentence0.wav"),
        "--asr-backend",
        "openai-whisper",
        "--asr-model",
        "whisper-tiny-en",
        "--llm",
        "scripted",
        "--model",
        str(script),
        "--json",
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    # told the movie catalog's words, Whisper may punctuate otherwise ("The Shawshank Redemption, I loved it?")
    transcript = json.loads(done.stdout)["transcript"]
    assert plain_words(transcript) == plain_words("Have you seen the Shawshank Redemption? I loved it."), transcript


# Misheard by Whisper base on espeak-ng's voice without the catalog's words ("Blackpots choose for men", "port
# shoes": issue 14), heard right once Whisper is told the fashion catalog's vocabulary (`catalog_vocabulary`).
CATALOG_REQUESTS = ["Black sports shoes for men.", "I need sports shoes for men, preferably black."]


@pytest.mark.parametrize("backend", ["faster-whisper", "openai-whisper"])
@pytest.mark.parametrize("number", range(len(CATALOG_REQUESTS)))
def test_the_catalog_vocabulary_makes_whisper_hear_the_catalog_words(tmp_path, settings, backend, number):
    wav = espeak(CATALOG_REQUESTS[number], tmp_path / "request.wav")
    plain = transcribe_audio(str(wav), settings.with_(asr_vocabulary=False), backend=backend, catalog="fashion")
    told = transcribe_audio(str(wav), settings, backend=backend, catalog="fashion")
    assert "sports shoes" not in plain.lower(), plain
    assert "sports shoes" in plain_words(told) and "black" in plain_words(told), told


def test_the_vocabulary_is_built_once_per_catalog_from_its_own_words(settings, tmp_path):
    fashion = catalog_vocabulary("fashion", settings)
    assert fashion is catalog_vocabulary("fashion", settings)  # cached: the catalog is read once
    assert fashion.startswith("We sell ") and all(w in fashion for w in ("sports shoes", "black", "kurtas", "men"))
    movies = catalog_vocabulary("movies", settings)
    assert "comedy" in movies and "Forrest Gump" in movies and "(1994)" not in movies
    assert len(movies) < 600 and len(fashion) < 600  # well under Whisper's 223 prompt tokens
    # a user's catalog file: its own categorical fields; a catalog that cannot be read: no vocabulary, no error
    shop = tmp_path / "shop.csv"
    shop.write_text("id,title,kind\n1,Oak table,furniture\n2,Pine chair,furniture\n3,Wool rug,textile\n")
    assert catalog_vocabulary(str(shop), settings) == "We sell furniture, textile."
    assert catalog_vocabulary(str(tmp_path / "missing.csv"), settings) is None
