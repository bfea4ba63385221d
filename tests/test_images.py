"""Photos: safe loading of bad files, open_clip checkpoints, the shipped encoder's retrieval, training."""

import io
import json
import random
import struct
import zlib
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from conftest import run_cli
from PIL import Image

from recagent.evals.eval_images import held_out_items, perturb
from recagent.tools.catalog import Item
from recagent.tools.errors import ImageError, MissingModelError
from recagent.tools.filters import where_fields
from recagent.tools.images import embed_image, image_encoder, load_image, load_open_clip, named_head_values
from recagent.tools.retrieval import retrieve_candidates


def photo_of(item: Item) -> str:
    """A held-out product's photo (every one has one)."""
    assert item.image, item.id
    return item.image


@pytest.fixture(scope="module")
def photo(settings) -> Path:
    """A real product photo: a blue shirt."""
    return settings.data / "fashion" / "images" / "15970.jpg"


def png_bomb(path: Path, side: int = 30000) -> Path:
    """A valid 1-bit PNG of side x side pixels that is only ~100 KB on disk."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + (side + 7) // 8)
    packer = zlib.compressobj(9)
    body = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
        + chunk(b"IDAT", body)
        + chunk(b"IEND", b"")
    )
    return path


@pytest.fixture(scope="module")
def bad_images(tmp_path_factory, photo) -> dict:
    # A path longer than a terminal line: a message naming it must still reach a pipe whole.
    d = tmp_path_factory.mktemp("bad-images") / ("a-folder-with-a-long-name-" * 4)
    d.mkdir()
    (d / "notes.jpg").write_text("this is a shopping list, not a photo\n")
    (d / "empty.jpg").write_bytes(b"")
    data = photo.read_bytes()
    (d / "truncated.jpg").write_bytes(data[: len(data) // 2])
    return {
        "not an image": (d / "notes.jpg", "not an image"),
        "empty": (d / "empty.jpg", "empty"),
        "truncated": (d / "truncated.jpg", "truncated"),
        "bomb": (png_bomb(d / "bomb.png"), "too large"),
        "missing": (d / "nope.jpg", "no such file"),
    }


@pytest.mark.parametrize("case", ["not an image", "empty", "truncated", "bomb", "missing"])
def test_bad_images_get_a_clear_message(bad_images, case):
    path, words = bad_images[case]
    with pytest.raises(ImageError, match=words):
        load_image(path)


def test_cmyk_transparency_and_animation_are_handled(tmp_path, photo, settings, fashion_images):
    original = Image.open(photo).convert("RGB")
    cmyk = tmp_path / "cmyk.jpg"
    original.convert("CMYK").save(cmyk, quality=95)
    loaded = load_image(cmyk)
    assert loaded.mode == "RGB" and loaded.size == original.size
    # the CMYK copy is the same photo to the encoder
    assert float(embed_image(cmyk, settings) @ embed_image(photo, settings)) > 0.9

    rgba = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    rgba.paste((200, 0, 0, 255), (16, 16, 48, 48))
    rgba.save(tmp_path / "cutout.png")
    img = load_image(tmp_path / "cutout.png")
    assert img.getpixel((2, 2)) == (255, 255, 255) and img.getpixel((32, 32)) == (200, 0, 0)

    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    pixel = load_image(tmp_path / "anim.gif").getpixel((5, 5))
    assert isinstance(pixel, tuple) and pixel[0] > 200 and pixel[2] < 50


def test_open_clip_checkpoint_from_a_local_file(tmp_path, settings, photo):
    config = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    }
    arch = tmp_path / "tiny-clip.json"
    arch.write_text(json.dumps(config))
    open_clip.add_model_config(arch)
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms("tiny-clip")
    model.eval()
    torch.save({"state_dict": model.state_dict()}, tmp_path / "tiny.pt")

    encoder = load_open_clip(str(arch), str(tmp_path / "tiny.pt"), settings)
    assert not encoder.shares_text_space
    image = load_image(photo)
    with torch.no_grad():
        expected = torch.nn.functional.normalize(model.encode_image(preprocess(image)[None]), dim=-1)[0].numpy()
        text_expected = torch.nn.functional.normalize(
            model.encode_text(open_clip.get_tokenizer("tiny-clip")(["a blue shirt"])), dim=-1
        )[0].numpy()
    np.testing.assert_allclose(encoder.embed_images([image])[0], expected, atol=1e-5)
    np.testing.assert_allclose(encoder.embed_texts(["a blue shirt"])[0], text_expected, atol=1e-5)

    # through the configuration, as users set it: the checkpoint's weights are what is used
    configured = settings.with_(models={**settings.models, "image-encoder": f"open_clip:{arch}:{tmp_path / 'tiny.pt'}"})
    np.testing.assert_allclose(embed_image(photo, configured), expected, atol=1e-5)
    with pytest.raises(MissingModelError, match="cannot be loaded|not found|neither"):
        load_open_clip(str(arch), str(tmp_path / "missing.pt"), settings)


# ---- the shipped encoder on the real fashion index ----------------------------------------------


def test_a_photo_finds_items_of_its_type(settings, fashion_images):
    shares = []
    for kind in ("Tshirts", "Watches", "Handbags"):
        for item in held_out_items(settings, 8, articleType=kind):
            hits = retrieve_candidates(fashion_images, photo=item.image, k=5, exclude={item.id})
            shares.append(np.mean([h.metadata["articleType"] == kind for h in hits]))
    # held-out photos (never trained on): most of each top 5 has the photo's type (random: about 0.07)
    assert np.mean(shares) >= 0.7, shares


def test_a_photo_keeps_its_colour(settings, fashion_images):
    shares = []
    for colour, kind in (("Red", "Tshirts"), ("Blue", "Shirts"), ("Black", "Casual Shoes")):
        for item in held_out_items(settings, 5, baseColour=colour, articleType=kind):
            hits = retrieve_candidates(fashion_images, photo=item.image, k=5, exclude={item.id})
            shares.append(
                np.mean([(h.metadata["baseColour"], h.metadata["articleType"]) == (colour, kind) for h in hits])
            )
    # held-out photos: most of each top 5 has both the photo's colour and its type (random: under 0.01)
    assert np.mean(shares) >= 0.6, shares


def test_attribute_heads_predict_held_out_fields(settings):
    encoder = image_encoder(settings, "fashion")
    assert set(encoder.facet_weights) == set(encoder.text_facet_weights) == {"articleType", "baseColour"}
    items = held_out_items(settings, 200)
    vectors = encoder.embed_images([load_image(photo_of(it)) for it in items])
    right: dict[str, list[bool]] = {"articleType": [], "baseColour": []}
    for item, vector in zip(items, vectors):
        for name, logp in encoder.field_logprobs(vector).items():
            right[name].append(max(logp, key=lambda value: logp[value]) == item.metadata.get(name))
    assert np.mean(right["articleType"]) >= 0.7 and np.mean(right["baseColour"]) >= 0.5, {
        k: np.mean(v) for k, v in right.items()
    }


def test_words_that_name_a_colour_and_a_kind():
    heads = {"baseColour": ["Blue", "Navy Blue", "Red"], "articleType": ["Tshirts", "Casual Shoes", "Jeans"]}
    assert named_head_values("a red T-shirt please", heads) == {"baseColour": "Red", "articleType": "Tshirts"}
    assert named_head_values("navy blue jeans", heads) == {"baseColour": "Navy Blue", "articleType": "Jeans"}
    assert named_head_values("black casual shoe", heads) == {"articleType": "Casual Shoes"}
    assert named_head_values("something nice", heads) == {}


def test_a_constrained_field_is_left_to_the_filter():
    assert where_fields({"$and": [{"baseColour": "Black"}, {"year": {"$gte": 2010}}]}) == {"baseColour", "year"}
    assert where_fields({"gender": "Men"}) == {"gender"} and where_fields(None) == set()


def test_text_finds_photos(settings, fashion_images):
    hits = retrieve_candidates(fashion_images, "black watch", by="image", k=10)
    assert sum(h.metadata["articleType"] == "Watches" for h in hits) >= 8
    assert sum(h.metadata["baseColour"] == "Black" for h in hits) >= 6
    hits = retrieve_candidates(fashion_images, "a red t-shirt", by="image", k=10)
    assert sum((h.metadata["baseColour"], h.metadata["articleType"]) == ("Red", "Tshirts") for h in hits) >= 8


def test_a_perturbed_photo_finds_itself(settings, fashion_images):
    rng = random.Random(1)
    items = held_out_items(settings, 10)
    found = 0
    for item in items:
        query = perturb(load_image(photo_of(item)), rng)
        buffer = io.BytesIO()
        query.save(buffer, "PNG")
        hits = retrieve_candidates(fashion_images, photo=buffer.getvalue(), k=10)
        found += item.id in [h.id for h in hits]
    assert found >= 9


def test_ask_like_this_but_in_black(env, tmp_path, settings, fashion_images):
    """Acceptance 2 with the scripted planner: black items of the photo's type."""
    [red] = held_out_items(settings, 1, articleType="Tshirts", baseColour="Red")
    script = tmp_path / "script.json"
    script.write_text(
        json.dumps(
            [{"tool": "search_catalog", "args": {"query": "t-shirt in black", "filters": []}}, "Here are black ones."]
        )
    )
    done = run_cli(
        env,
        "ask",
        "something like this but in black",
        "--catalog",
        "fashion",
        "--image",
        photo_of(red),
        "--json",
        "--llm",
        "scripted",
        "--model",
        str(script),
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    items = json.loads(done.stdout)["items"][:5]
    assert len(items) == 5
    assert all(i["baseColour"] == "Black" for i in items), items
    assert sum(i["articleType"] == "Tshirts" for i in items) >= 4, items


@pytest.mark.parametrize("case", ["not an image", "truncated", "bomb", "empty"])
def test_bad_image_in_ask_and_the_repl(env, tmp_path, bad_images, fashion_images, case):
    path, words = bad_images[case]
    script = tmp_path / "script.json"
    script.write_text(json.dumps([{"tool": "search_catalog", "args": {"query": "blue shirt", "filters": []}}, "Ok."]))
    conv = tmp_path / "conv.json"
    done = run_cli(
        env,
        "ask",
        "like this",
        "--catalog",
        "fashion",
        "--image",
        str(path),
        "--json",
        "--conversation",
        str(conv),
        "--llm",
        "scripted",
        "--model",
        str(script),
        timeout=300,
    )
    assert done.returncode == 1
    out = json.loads(done.stdout)
    assert words in out["error"] and not out["items"] and "Traceback" not in done.stderr
    assert not conv.exists()  # nothing saved from a failed turn

    repl = run_cli(
        env,
        "chat",
        "--catalog",
        "fashion",
        "--llm",
        "scripted",
        "--model",
        str(script),
        stdin=f"/image {path} but in black\nblue shirt for men\n/quit\n",
        timeout=300,
    )
    assert repl.returncode == 0, repl.stderr
    assert words in repl.stdout and "Traceback" not in repl.stdout + repl.stderr
    assert "shirt" in repl.stdout.split(words, 1)[1].lower()  # the next turn still works


def test_train_image_encoder_short_run_resumes_and_loads(env, tmp_path, settings, photo):
    out = tmp_path / "enc.pt"
    args = [
        "train-image-encoder",
        "--catalog",
        "fashion",
        "--limit",
        "96",
        "--batch-size",
        "32",
        "--out",
        str(out),
        "--quiet",
    ]
    first = run_cli(env, *args, "--epochs", "1")
    assert first.returncode == 0, first.stderr
    assert out.is_file() and out.with_suffix(".state.pt").is_file()
    # more epochs: the epoch count shapes the learning-rate schedule, so the saved state does not fit and
    # training starts afresh (two epochs)
    second = run_cli(env, *args, "--epochs", "2")
    assert second.returncode == 0, second.stderr
    assert "starting afresh" in second.stderr
    # the same command again: it resumes from the saved epoch (the last: nothing left to train)
    again = run_cli(env, *args, "--epochs", "2")
    assert "resuming from epoch 2 of 2" in again.stderr, again.stderr

    meta = torch.load(out, map_location="cpu", weights_only=True)["meta"]
    assert meta["catalogs"] == ["fashion"] and len(meta["history"]) == 2
    configured = settings.with_(models={**settings.models, "image-encoder": str(out)})
    vector = embed_image(photo, configured)
    assert vector.shape == (384,) and abs(float(np.linalg.norm(vector)) - 1) < 1e-4
    assert float(vector @ embed_image(photo, settings)) < 0.99  # a different model than the shipped one
