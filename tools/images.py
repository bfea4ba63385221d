"""Photos in: `load_image` (safe decoding with clear errors) and `embed_image` (vectors in a text-aligned space).

Two sources of image encoders, one interface (`ImageEncoder`):
- the offline default, "catalog": recagent's own tower (image_encoder.py) trained on the catalogs' image-text
  pairs into the MiniLM text space, so text queries use the same MiniLM vectors as text retrieval;
- a real pretrained open_clip model: `open_clip:ARCH:WEIGHTS`, WEIGHTS being a local checkpoint file or, for
  users online, one of open_clip's pretrained tags (`open_clip:ViT-B-32:laion2b_s34b_b79k`); ARCH is an
  open_clip model name or the path of a model config .json; its own text tower then embeds text queries.
Choose with RECAGENT_MODEL_IMAGE_ENCODER or `image-encoder` under [models] in config.toml.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import warnings
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from .catalog import singular
from .models import MissingModelError, shared
from .settings import Settings

MAX_PIXELS = 50_000_000   # larger images are refused before they are decoded (decompression bombs)
MAX_BYTES = 50 * 1024 * 1024
FACET_FLOOR = -5.0  # a log-probability term is floored here: one unlikely field cannot bury an item


class ImageError(Exception):
    """The image cannot be used; the message says why."""


def load_image(source: str | Path | bytes):
    """Open a photo safely as RGB: transparency over white, CMYK converted, first frame of an animation."""
    from PIL import Image, ImageFile, UnidentifiedImageError

    ImageFile.LOAD_TRUNCATED_IMAGES = False
    name = "the image" if isinstance(source, bytes) else str(source)
    if isinstance(source, bytes):
        data = source
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise ImageError(f"{name}: no such file")
        size = path.stat().st_size
        if size == 0:
            raise ImageError(f"{name}: the file is empty")
        if size > MAX_BYTES:
            raise ImageError(f"{name}: the file is {size / 1e6:.0f} MB; images up to {MAX_BYTES // 2**20} MB are read")
        data = path.read_bytes()
    if not data:
        raise ImageError(f"{name}: the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ImageError(f"{name}: {width}x{height} pixels is too large to read safely "
                                 f"(limit {MAX_PIXELS // 1_000_000} megapixels)")
            image.seek(0)  # an animated GIF or WebP: its first frame
            image.load()
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file (or a format that cannot be read)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{name}: the image is too large to read safely "
                         f"(more than {MAX_PIXELS // 1_000_000} megapixels)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"{name}: the image data is damaged or truncated ({exc})") from None
    return to_rgb(image)


def to_rgb(image):
    """Any PIL mode as RGB; transparent pixels become white (product-photo background)."""
    from PIL import Image

    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")


def pixels(images, size: int):
    """PIL images -> float tensor (B, 3, size, size) in [0, 1], each squashed to a square."""
    import torch
    from PIL import Image

    arrays = [np.asarray(im.resize((size, size), Image.BILINEAR), dtype=np.uint8) for im in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0


# ---- encoders -------------------------------------------------------------------------------------

@dataclass
class ImageEncoder:
    """An image tower and the text tower that shares its space; `key` names the space (index, caches)."""

    key: str
    model: object
    preprocess: object  # PIL image -> tensor (B-less); None for the catalog tower
    tokenizer: object  # open_clip tokenizer; None: text goes through MiniLM (the catalog tower)
    settings: Settings
    image_size: int = 96
    facet_weights: dict = field(default_factory=dict)  # catalog field -> weight of its head in photo retrieval
    text_facet_weights: dict = field(default_factory=dict)  # ... in words-against-photos search

    @property
    def shares_text_space(self) -> bool:
        """True when image vectors live in the MiniLM space of the text index."""
        return self.tokenizer is None

    def embed_images(self, images: list, batch_size: int = 64) -> np.ndarray:
        """PIL images -> L2-normalised float32 (N, D)."""
        import torch

        out = []
        with torch.inference_mode():
            for lo in range(0, len(images), batch_size):
                batch = images[lo: lo + batch_size]
                if self.preprocess is None:
                    vectors = self.model(pixels(batch, self.image_size))
                else:
                    vectors = self.model.encode_image(torch.stack([self.preprocess(im) for im in batch]))
                    vectors = torch.nn.functional.normalize(vectors, dim=-1)
                out.append(vectors.float().numpy())
        dim = out[0].shape[1] if out else 384
        return np.concatenate(out) if out else np.zeros((0, dim), np.float32)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Texts -> L2-normalised float32 (N, D) in this encoder's image space."""
        if self.tokenizer is None:
            from .models import embed_texts

            return self.adapt_texts(embed_texts(texts, self.settings))
        import torch

        with torch.inference_mode():
            vectors = self.model.encode_text(self.tokenizer(texts))
            return torch.nn.functional.normalize(vectors, dim=-1).float().numpy()


    def adapt_texts(self, vectors: np.ndarray) -> np.ndarray:
        """MiniLM text vectors (N, 384) (the text index's) -> vectors to compare with image vectors."""
        adapter = getattr(self.model, "adapter", None)
        if adapter is None or len(vectors) == 0:
            return np.asarray(vectors, dtype=np.float32)
        import torch

        with torch.inference_mode():
            return self.model.adapt_texts(torch.from_numpy(np.asarray(vectors, dtype=np.float32))).numpy()

    def named_field_values(self, text: str) -> dict[str, str]:
        """The head values a request names outright: "red t-shirt" -> {baseColour: Red, articleType: Tshirts}."""
        heads = getattr(getattr(self.model, "config", None), "heads", None) or {}
        return named_head_values(text, {n: v for n, v in heads.items() if self.text_facet_weights.get(n)})

    def text_facet_terms(self, text: str, vectors: np.ndarray) -> np.ndarray:
        """Per photo (N,): sum over the head values the text names of weight * max(log p(value | photo), floor)."""
        named = self.named_field_values(text)
        terms = np.zeros(len(vectors), np.float32)
        if not named or len(vectors) == 0:
            return terms
        import torch

        with torch.inference_mode():
            logits = self.model.head_logits(torch.from_numpy(np.asarray(vectors, dtype=np.float32)))
        for name, value in named.items():
            logp = torch.log_softmax(logits[name], -1)[:, self.model.config.heads[name].index(value)].numpy()
            terms += self.text_facet_weights[name] * np.maximum(logp, FACET_FLOOR)
        return terms

    def field_logprobs(self, vector: np.ndarray) -> dict[str, dict[str, float]]:
        """{field: {value: log p(value | photo)}} from the tower's attribute heads (empty without heads)."""
        heads = getattr(self.model, "heads", None)
        if not heads or not self.facet_weights:
            return {}
        import torch

        with torch.inference_mode():
            logits = self.model.head_logits(torch.from_numpy(np.asarray(vector, dtype=np.float32))[None])
        return {name: dict(zip(self.model.config.heads[name], torch.log_softmax(x[0], -1).tolist()))
                for name, x in logits.items() if self.facet_weights.get(name)}


def image_encoder(settings: Settings | None = None, catalog: str | None = None) -> ImageEncoder:
    """The configured image encoder (for a catalog: the shipped one trained on it, if any), loaded once."""
    settings = settings or Settings.load()
    spec = settings.models.get("image-encoder") or "catalog"
    if spec.startswith("open_clip:"):
        arch, _, weights = spec[len("open_clip:"):].partition(":")
        return shared(("image-encoder", spec), lambda: load_open_clip(arch, weights or None, settings))
    path = shipped_encoder_path(catalog) if spec == "catalog" else Path(spec).expanduser()
    if not path.is_file():
        raise MissingModelError(f"image encoder {path} not found: train one with `recagent train-image-encoder`"
                                " or set RECAGENT_MODEL_IMAGE_ENCODER to a checkpoint")
    return shared(("image-encoder", str(path)), lambda: load_catalog_encoder(path, settings))


def shipped_encoder_path(catalog: str | None = None) -> Path:
    """The trained tower that ships with recagent: the one trained on this catalog, else on all catalogs."""
    weights = Path(str(resources.files("recagent.tools").joinpath("weights")))
    own = weights / f"catalog-clip-{catalog}.pt"
    return own if catalog and own.is_file() else weights / "catalog-clip-all.pt"


def load_catalog_encoder(path: Path, settings: Settings) -> ImageEncoder:
    """recagent's own tower from a checkpoint written by train_image_encoder."""
    import torch

    from .image_encoder import ImageEncoderConfig, ImageTower

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        config = ImageEncoderConfig.from_dict(checkpoint["config"])
        model = ImageTower(config)
        model.load_state_dict({k: v.float() for k, v in checkpoint["model"].items()})
    except Exception as exc:
        raise MissingModelError(f"image encoder {path} cannot be loaded ({exc.__class__.__name__}: {exc})") from None
    model.eval()
    digest = hashlib.sha1(path.read_bytes()).hexdigest()[:10]
    meta = checkpoint.get("meta", {})
    return ImageEncoder(f"catalog-{digest}", model, None, None, settings, config.image_size,
                        meta.get("facet_weights") or {}, meta.get("text_facet_weights") or {})


def load_open_clip(arch: str, weights: str | None, settings: Settings) -> ImageEncoder:
    """A real open_clip model: weights from a local checkpoint file, or a pretrained tag (downloads; online)."""
    import open_clip

    if arch.endswith(".json") and Path(arch).expanduser().is_file():  # a custom architecture's config file
        open_clip.add_model_config(Path(arch).expanduser())
        arch = Path(arch).stem
    local = weights and Path(weights).expanduser().is_file()
    if weights and not local and os.environ.get("HF_HUB_OFFLINE") == "1":
        raise MissingModelError(f"open_clip weights '{weights}' are neither a local file nor reachable offline")
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            arch, pretrained=str(Path(weights).expanduser()) if local else weights, device="cpu")
        tokenizer = open_clip.get_tokenizer(arch)
    except Exception as exc:
        raise MissingModelError(f"open_clip model {arch} with weights {weights!r} cannot be loaded "
                                f"({exc.__class__.__name__}: {exc})") from None
    model.eval()
    tag = hashlib.sha1(f"{arch}:{weights}".encode()).hexdigest()[:10]
    return ImageEncoder(f"open_clip-{arch}-{tag}", model, preprocess, tokenizer, settings)


DUPLICATE_SIDE = 48
DUPLICATE_SCALES = tuple(round(0.62 + 0.02 * i, 2) for i in range(20))  # 0.62 .. 1.00


def duplicate_scores(query, candidates: list) -> np.ndarray:
    """How surely each candidate photo is the query's source (cropped, resized, re-encoded): 0..1.

    Geometric verification for near-duplicate lookup: the query, shrunk to each plausible crop scale, is
    slid over the candidate's grey thumbnail; the best normalised cross-correlation is the score (about 1
    for the same photo, lower for a merely similar product). Brightness and contrast changes cancel out.
    """
    import torch
    import torch.nn.functional as F

    def grey(image, side):
        return torch.from_numpy(np.asarray(image.convert("L").resize((side, side)), dtype=np.float32) / 255.0)

    if not candidates:
        return np.zeros(0, np.float32)
    board = torch.stack([grey(c, DUPLICATE_SIDE) for c in candidates]).unsqueeze(1)  # (N, 1, S, S)
    best = torch.full((len(candidates),), -1.0)
    for scale in DUPLICATE_SCALES:
        k = max(8, round(DUPLICATE_SIDE * scale))
        q = grey(query, k)
        q = (q - q.mean()) / (q.std() + 1e-6)                                 # (k, k), zero mean, unit std
        n = k * k
        dot = F.conv2d(board, q.view(1, 1, k, k))                                # (N, 1, P, P): sum(window * q)
        mean = F.avg_pool2d(board, k, stride=1)
        var = (F.avg_pool2d(board * board, k, stride=1) - mean * mean).clamp_min(1e-8)
        ncc = dot / (n * var.sqrt())                                             # correlation per offset
        best = torch.maximum(best, ncc.flatten(1).max(dim=1).values)
    return best.clamp(-1, 1).numpy()


def embed_image(source: str | Path | bytes, settings: Settings | None = None, catalog: str | None = None) -> np.ndarray:
    """One photo (path or bytes) -> its L2-normalised vector in the configured encoder's space."""
    return image_encoder(settings, catalog).embed_images([load_image(source)])[0]


def named_head_values(text: str, heads: dict[str, list[str]]) -> dict[str, str]:
    """{field: value} for each head value the text names outright, longest first ("Navy Blue" before "Blue")."""
    said = f" {_plain_words(text)} "
    out = {}
    for name, values in heads.items():
        for value in sorted(values, key=len, reverse=True):
            if any(f and f" {f} " in said for f in {_plain_words(value), _plain_words(singular(value))}):
                out[name] = value
                break
    return out


def _plain_words(text: str) -> str:
    """Lower case, hyphens dropped, other non-letters as spaces: "T-Shirts" -> "tshirts"."""
    return " ".join(re.sub(r"[^a-z0-9 ]+", " ", text.lower().replace("-", "")).split())


def attribute_phrase(colour: str, kind: str) -> str:
    """How a person asks for a catalog colour and type: ("Red", "Tshirts") -> "red t-shirt"."""
    return f"{colour} {singular(kind)}".lower().replace("tshirt", "t-shirt")
