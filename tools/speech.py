"""Speech to text: `transcribe_audio`, with faster-whisper on the offline Whisper weights.

The openai-whisper backend, its checkpoint converter, and the measured choice of backend and model come
with the voice-input work (issue 4); the interface stays this function.
"""

from __future__ import annotations

import os
from pathlib import Path

from .models import resolve_model, shared
from .settings import Settings

MAX_SECONDS = 120.0  # longer recordings are refused (RECAGENT_MAX_AUDIO_SECONDS)


class AudioError(Exception):
    """The recording cannot be used; the message says why."""


def transcribe_audio(path: str, settings: Settings | None = None, model: str = "whisper-base") -> str:
    """Transcribe a spoken request (wav, flac, mp3, ogg, m4a, webm) to English text."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise AudioError(f"{path}: no such file")
    if file.stat().st_size == 0:
        raise AudioError(f"{path}: the file is empty")
    from faster_whisper.audio import decode_audio

    try:
        audio = decode_audio(str(file), sampling_rate=16000)
    except Exception as exc:  # PyAV raises many kinds of error for a file that is not audio
        raise AudioError(f"{path}: not a readable audio file ({exc.__class__.__name__})") from None
    seconds = len(audio) / 16000
    limit = float(os.environ.get("RECAGENT_MAX_AUDIO_SECONDS", MAX_SECONDS))
    if seconds > limit:
        raise AudioError(f"{path}: the recording is {seconds:.0f} s long; the limit is {limit:.0f} s")
    source = resolve_model(model, settings)

    def load():
        from faster_whisper import WhisperModel

        return WhisperModel(source, device="cpu", compute_type="int8", cpu_threads=os.cpu_count() or 1)

    segments, _ = shared(("whisper", source), load).transcribe(audio, language="en", beam_size=5, vad_filter=True)
    text = " ".join(s.text.strip() for s in segments).strip()
    if not text or seconds < 0.3:
        raise AudioError("I didn't catch that: the recording seems to be silent")
    return text
