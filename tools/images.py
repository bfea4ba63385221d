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
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from .catalog import singular
from .errors import ImageError, MissingModelError
from .models import embed_texts, shared, shipped_encoder_path
from .settings import Settings
from .text import plain_words

if TYPE_CHECKING:
    import torch

MAX_PIXELS = 50_000_000  # larger images are refused before they are decoded (decompression bombs)
MAX_BYTES = 50 * 1024 * 1024
FACET_FLOOR = -5.0  # a log-probability term is floored here: one unlikely field cannot bury an item
NO_VALUE = -100  # the index of a value that is not one of a head's (cross_entropy's ignore_index in training)


def load_image(source: str | Path | bytes) -> Image.Image:
    """Open a photo safely as RGB: transparency over white, CMYK converted, first frame of an animation."""
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
                raise ImageError(
                    f"{name}: {width}x{height} pixels is too large to read safely "
                    f"(limit {MAX_PIXELS // 1_000_000} megapixels)"
                )
            image.seek(0)  # an animated GIF or WebP: its first frame
            image.load()
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file (or a format that cannot be read)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(
            f"{name}: the image is too large to read safely (more than {MAX_PIXELS // 1_000_000} megapixels)"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"{name}: the image data is damaged or truncated ({exc})") from None
    return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode as RGB; transparent pixels become white (product-photo background)."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image.convert("RGB")


def pixels(images: list[Image.Image], size: int) -> torch.Tensor:
    """PIL images -> float tensor (B, 3, size, size) in [0, 1], each squashed to a square."""
    import torch  # noqa: PLC0415  (torch takes seconds to import: only once a photo is embedded)

    arrays = [np.asarray(im.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8) for im in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0


# ---- encoders -------------------------------------------------------------------------------------


@dataclass
class ImageEncoder:
    """An image tower and the text tower that shares its space; `key` names the space (index, caches)."""

    key: str
    model: Any  # the catalog tower (image_encoder.ImageTower) or an open_clip CLIP model
    preprocess: Any  # PIL image -> tensor (B-less); None for the catalog tower
    tokenizer: Any  # open_clip tokenizer; None: text goes through MiniLM (the catalog tower)
    settings: Settings
    image_size: int = 96
    facet_weights: dict[str, float] = field(default_factory=dict)  # catalog field -> its head's weight in photo search
    text_facet_weights: dict[str, float] = field(default_factory=dict)  # ... in words-against-photos search

    @property
    def shares_text_space(self) -> bool:
        """True when image vectors live in the MiniLM space of the text index."""
        return self.tokenizer is None

    def embed_images(self, images: list[Image.Image], batch_size: int = 64) -> np.ndarray:
        """PIL images -> L2-normalised float32 (N, D)."""
        import torch  # noqa: PLC0415  (torch takes seconds to import: only once a photo is embedded)

        out = []
        with torch.inference_mode():
            for lo in range(0, len(images), batch_size):
                batch = images[lo : lo + batch_size]
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
            return self.adapt_texts(embed_texts(texts, self.settings))
        import torch  # noqa: PLC0415  (torch takes seconds to import: only once a text is embedded)

        with torch.inference_mode():
            vectors = self.model.encode_text(self.tokenizer(texts))
            return torch.nn.functional.normalize(vectors, dim=-1).float().numpy()

    def adapt_texts(self, vectors: np.ndarray) -> np.ndarray:
        """MiniLM text vectors (N, 384) (the text index's) -> vectors to compare with image vectors."""
        adapter = getattr(self.model, "adapter", None)
        if adapter is None or len(vectors) == 0:
            return np.asarray(vectors, dtype=np.float32)
        import torch  # noqa: PLC0415  (torch takes seconds to import: only once a text is embedded)

        with torch.inference_mode():
            return self.model.adapt_texts(torch.from_numpy(np.asarray(vectors, dtype=np.float32))).numpy()

    def named_field_values(self, text: str) -> dict[str, str]:
        """The head values a request names outright: "red t-shirt" -> {baseColour: Red, articleType: Tshirts}."""
        heads = getattr(getattr(self.model, "config", None), "heads", None) or {}
        return named_head_values(text, {n: v for n, v in heads.items() if self.text_facet_weights.get(n)})

    def text_facet_terms(self, text: str, vectors: np.ndarray) -> np.ndarray:
        """Per photo (N,): sum over the head values the text names of weight * max(log p(value | photo), floor)."""
        named = self.named_field_values(text)
        zeros = np.zeros(len(vectors), np.float32)
        if not named or len(vectors) == 0:
            return zeros
        terms = named_value_terms(head_logprobs(self.model, vectors), self.model.config.heads, named)
        return with_facets(zeros, terms, self.text_facet_weights)

    def photo_facet_terms(
        self, vector: np.ndarray, metadata: Sequence[Mapping[str, object]], skip: Iterable[str] = ()
    ) -> dict[str, np.ndarray]:
        """{field: (N,) max(log p(each candidate's value | the photo), floor)} for the heads used in photo search
        (floor for a candidate without one of the head's values); fields in `skip` are left out."""
        if not getattr(self.model, "heads", None) or not self.facet_weights:
            return {}
        skip = set(skip)
        names = [n for n in self.model.config.heads if self.facet_weights.get(n) and n not in skip]
        if not names:
            return {}
        logp = head_logprobs(self.model, np.asarray(vector, dtype=np.float32)[None])
        return {
            n: facet_terms(logp[n][0], value_indices([m.get(n) for m in metadata], self.model.config.heads[n]))
            for n in names
        }

    def field_logprobs(self, vector: np.ndarray) -> dict[str, dict[str, float]]:
        """{field: {value: log p(value | photo)}} from the tower's heads used in photo search (empty without)."""
        heads = getattr(self.model, "heads", None)
        if not heads or not self.facet_weights:
            return {}
        logp = head_logprobs(self.model, np.asarray(vector, dtype=np.float32)[None])
        return {
            name: dict(zip(self.model.config.heads[name], logp[name][0].tolist()))
            for name in logp
            if self.facet_weights.get(name)
        }


def image_encoder(settings: Settings | None = None, catalog: str | None = None) -> ImageEncoder:
    """The configured image encoder (for a catalog: the shipped one trained on it, if any), loaded once."""
    settings = settings or Settings.load()
    spec = settings.models.get("image-encoder") or "catalog"
    if spec.startswith("open_clip:"):
        arch, _, weights = spec[len("open_clip:") :].partition(":")
        return shared(("image-encoder", spec), lambda: load_open_clip(arch, weights or None, settings))
    path = shipped_encoder_path(catalog) if spec == "catalog" else Path(spec).expanduser()
    if not path.is_file():
        raise MissingModelError(
            f"image encoder {path} not found: train one with `recagent train-image-encoder`"
            " or set RECAGENT_MODEL_IMAGE_ENCODER to a checkpoint"
        )
    return shared(("image-encoder", str(path)), lambda: load_catalog_encoder(path, settings))


def load_catalog_encoder(path: Path, settings: Settings) -> ImageEncoder:
    """recagent's own tower from a checkpoint written by tools/train/image_encoder.py."""
    # torch (which the model file imports) takes seconds: only once an encoder is needed
    import torch  # noqa: PLC0415

    from .image_encoder import ImageEncoderConfig, ImageTower  # noqa: PLC0415

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
    return ImageEncoder(
        f"catalog-{digest}",
        model,
        None,
        None,
        settings,
        config.image_size,
        meta.get("facet_weights") or {},
        meta.get("text_facet_weights") or {},
    )


def load_open_clip(arch: str, weights: str | None, settings: Settings) -> ImageEncoder:
    """A real open_clip model: weights from a local checkpoint file, or a pretrained tag (downloads; online)."""
    import open_clip  # noqa: PLC0415  (an optional dependency, and heavy: only when configured)

    if arch.endswith(".json") and Path(arch).expanduser().is_file():  # a custom architecture's config file
        open_clip.add_model_config(Path(arch).expanduser())
        arch = Path(arch).stem
    local = weights and Path(weights).expanduser().is_file()
    if weights and not local and os.environ.get("HF_HUB_OFFLINE") == "1":
        raise MissingModelError(f"open_clip weights '{weights}' are neither a local file nor reachable offline")
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            arch, pretrained=str(Path(weights).expanduser()) if weights and local else weights, device="cpu"
        )
        tokenizer = open_clip.get_tokenizer(arch)
    except Exception as exc:
        raise MissingModelError(
            f"open_clip model {arch} with weights {weights!r} cannot be loaded ({exc.__class__.__name__}: {exc})"
        ) from None
    model.eval()
    tag = hashlib.sha1(f"{arch}:{weights}".encode()).hexdigest()[:10]
    return ImageEncoder(f"open_clip-{arch}-{tag}", model, preprocess, tokenizer, settings)


def embed_image(source: str | Path | bytes, settings: Settings | None = None, catalog: str | None = None) -> np.ndarray:
    """One photo (path or bytes) -> its L2-normalised vector in the configured encoder's space."""
    return image_encoder(settings, catalog).embed_images([load_image(source)])[0]


# ---- near-duplicates ------------------------------------------------------------------------------

DUPLICATE_SIDE = 48
DUPLICATE_SCALES = tuple(round(0.62 + 0.02 * i, 2) for i in range(20))  # 0.62 .. 1.00


def duplicate_scores(query: Image.Image, candidates: list[Image.Image]) -> np.ndarray:
    """How surely each candidate photo is the query's source (cropped, resized, re-encoded): 0..1.

    Geometric verification for near-duplicate lookup: the query, shrunk to each plausible crop scale, is
    slid over the candidate's grey thumbnail; the best normalised cross-correlation is the score (about 1
    for the same photo, lower for a merely similar product). Brightness and contrast changes cancel out.
    """
    # torch takes seconds to import: only once a photo is looked up
    import torch  # noqa: PLC0415
    import torch.nn.functional as F  # noqa: PLC0415

    def grey(image: Image.Image, side: int) -> torch.Tensor:
        return torch.from_numpy(np.asarray(image.convert("L").resize((side, side)), dtype=np.float32) / 255.0)

    if not candidates:
        return np.zeros(0, np.float32)
    board = torch.stack([grey(c, DUPLICATE_SIDE) for c in candidates]).unsqueeze(1)  # (N, 1, S, S)
    best = torch.full((len(candidates),), -1.0)
    for scale in DUPLICATE_SCALES:
        k = max(8, round(DUPLICATE_SIDE * scale))
        q = grey(query, k)
        q = (q - q.mean()) / (q.std() + 1e-6)  # (k, k), zero mean, unit std
        n = k * k
        dot = F.conv2d(board, q.view(1, 1, k, k))  # (N, 1, P, P): sum(window * q)
        mean = F.avg_pool2d(board, k, stride=1)
        var = (F.avg_pool2d(board * board, k, stride=1) - mean * mean).clamp_min(1e-8)
        ncc = dot / (n * var.sqrt())  # correlation per offset
        best = torch.maximum(best, ncc.flatten(1).max(dim=1).values)
    return best.clamp(-1, 1).numpy()


# ---- attribute heads: a photo's predicted catalog fields (the catalog tower only) -------------------
# Both photo searches (tools/retrieval.py) and the choice of the heads' weights (tools/train/
# image_encoder_calibration.py) score with these: a term max(log p(value | photo), FACET_FLOOR) per head,
# weighted and added to the cosine score.


def head_logprobs(model: Any, vectors: np.ndarray) -> dict[str, np.ndarray]:
    """{field: (N, its values) log p(value | photo)} from a tower's attribute heads, for image vectors (N, D)."""
    import torch  # noqa: PLC0415  (torch takes seconds to import: only where a tower is loaded)

    with torch.inference_mode():
        logits = model.head_logits(torch.from_numpy(np.asarray(vectors, dtype=np.float32)))
        return {name: torch.log_softmax(x, -1).numpy() for name, x in logits.items()}


def value_indices(values: Iterable[object], head: list[str]) -> np.ndarray:
    """int64 index of each value among a head's values; NO_VALUE for one that is not among them (or None)."""
    position: dict[object, int] = {v: n for n, v in enumerate(head)}
    return np.array([position.get(v, NO_VALUE) for v in values], np.int64)


def facet_terms(logp: np.ndarray, values: np.ndarray | int) -> np.ndarray:
    """A head's say on values: max(log p(value), FACET_FLOOR) for each value index into logp's last axis, and
    FACET_FLOOR for a negative index (an item without one of the head's values)."""
    values = np.asarray(values)
    chosen = np.take(logp, np.maximum(values, 0), axis=-1)
    return np.where(values >= 0, np.maximum(chosen, FACET_FLOOR), FACET_FLOOR)


def named_value_terms(
    logp: Mapping[str, np.ndarray], heads: Mapping[str, list[str]], named: Mapping[str, str]
) -> dict[str, np.ndarray]:
    """Words against photos: {field: (N,) facet term of the value the words name} from photos' (N, V) log p."""
    return {name: facet_terms(logp[name], heads[name].index(value)) for name, value in named.items()}


def with_facets(base: np.ndarray, terms: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """base + the sum over fields of weight * term: a score with the heads' say added."""
    return base + sum(weights[name] * term for name, term in terms.items())


def named_head_values(text: str, heads: dict[str, list[str]]) -> dict[str, str]:
    """{field: value} for each head value the text names outright, longest first ("Navy Blue" before "Blue")."""
    said = f" {plain_words(text, drop='-')} "
    out = {}
    for name, values in heads.items():
        for value in sorted(values, key=len, reverse=True):
            forms = {plain_words(value, drop="-"), plain_words(singular(value), drop="-")}
            if any(f and f" {f} " in said for f in forms):
                out[name] = value
                break
    return out


def attribute_phrase(colour: str, kind: str) -> str:
    """How a person asks for a catalog colour and type: ("Red", "Tshirts") -> "red t-shirt"."""
    return f"{colour} {singular(kind)}".lower().replace("tshirt", "t-shirt")
