"""Which language speech is heard in (tools/speech.py)."""

import pytest

from recagent.tools.errors import ConfigError
from recagent.tools.settings import Settings
from recagent.tools.speech import LANGUAGES, most_likely_language, speech_language

pytestmark = pytest.mark.unit


def test_the_language_heard_is_one_recagent_reads():
    assert most_likely_language({"nn": 0.6, "fr": 0.3, "en": 0.1}) == "fr"  # Norwegian is no request we read
    assert most_likely_language({"de": 0.2, "en": 0.7}) == "en"
    assert most_likely_language({}) == "en"
    assert set(LANGUAGES) == {"en", "fr", "es", "de", "it"}


def test_english_unless_the_settings_say_otherwise(tmp_path):
    settings = Settings.load(home=tmp_path)
    assert speech_language(settings) == "en"
    assert speech_language(settings.with_(asr_language="AUTO")) == "auto"
    assert speech_language(settings.with_(asr_language="it")) == "it"
    with pytest.raises(ConfigError, match="unknown speech language 'xx'.*RECAGENT_ASR_LANGUAGE"):
        speech_language(settings.with_(asr_language="xx"))
