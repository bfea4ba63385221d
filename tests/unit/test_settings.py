"""One settings object: every option from, in order, the argument, the environment, the config file, a default."""

import pytest

from recagent.tools.errors import ConfigError
from recagent.tools.settings import Settings

ENV = (
    "RECAGENT_CONFIG",
    "RECAGENT_CHROMA_URL",
    "RECAGENT_DATA",
    "RECAGENT_ASR_BACKEND",
    "RECAGENT_ASR_MODEL",
    "RECAGENT_MAX_AUDIO_SECONDS",
    "RECAGENT_USER",
    "RECAGENT_FEEDBACK",
    "RECAGENT_FEEDBACK_TEXT",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for var in ENV:
        monkeypatch.delenv(var, raising=False)


def test_options_beat_environment_beats_config(tmp_path, monkeypatch):
    cfg = tmp_path / "config.toml"
    cfg.write_text('chroma_url = "http://from-config:1"\ndata = "/from/config"\n')
    monkeypatch.setenv("RECAGENT_CONFIG", str(cfg))
    s = Settings.load(home=tmp_path)
    assert s.chroma_url == "http://from-config:1" and str(s.data) == "/from/config"
    monkeypatch.setenv("RECAGENT_CHROMA_URL", "http://from-env:2")
    assert Settings.load(home=tmp_path).chroma_url == "http://from-env:2"
    assert Settings.load(home=tmp_path, chroma_url="http://from-option:3").chroma_url == "http://from-option:3"
    cfg.write_text("not = [toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        Settings.load(home=tmp_path)


def test_speech_and_feedback_options_follow_the_same_order(tmp_path, monkeypatch):
    (tmp_path / "config.toml").write_text('asr_model = "whisper-tiny-en"\nfeedback = "0"\nuser = "cfg"\n')
    s = Settings.load(home=tmp_path)
    assert (s.asr_backend, s.asr_model, s.max_audio_seconds) == (None, "whisper-tiny-en", None)
    assert (s.user, s.feedback, s.share_text) == ("cfg", False, False)
    monkeypatch.setenv("RECAGENT_ASR_MODEL", "whisper-base")
    monkeypatch.setenv("RECAGENT_MAX_AUDIO_SECONDS", "30")
    monkeypatch.setenv("RECAGENT_FEEDBACK", "1")
    monkeypatch.setenv("RECAGENT_FEEDBACK_TEXT", "yes")
    s = Settings.load(home=tmp_path)
    assert (s.asr_model, s.max_audio_seconds, s.feedback, s.share_text) == ("whisper-base", 30.0, True, True)
    s = Settings.load(home=tmp_path, asr_model="tiny.en", feedback=False, user="ana")
    assert (s.asr_model, s.feedback, s.user) == ("tiny.en", False, "ana")
    assert s.with_(asr_backend="openai-whisper").asr_backend == "openai-whisper"
    monkeypatch.setenv("RECAGENT_MAX_AUDIO_SECONDS", "long")
    with pytest.raises(ConfigError, match="RECAGENT_MAX_AUDIO_SECONDS='long' is not a number"):
        Settings.load(home=tmp_path)
    with pytest.raises(TypeError, match="unknown settings: colour"):
        Settings.load(home=tmp_path, colour="red")
