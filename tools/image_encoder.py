"""The offline image tower: a small CNN plus a colour histogram, trained to land in the MiniLM text space.

No pretrained CLIP weights can be had offline, so recagent trains its own image encoder in CLIP form,
LiT-style: the text tower is the locked MiniLM sentence embedder that retrieval already uses, and only this
image tower is learned (see tools/train/image_encoder.py). A photo and a sentence therefore meet in one 384-d
space, and image vectors can be searched with the text vectors that retrieval already computes.

Colour is what a small CNN trained for minutes gets wrong (navy vs blue), so the tower also reads an
explicit colour histogram of the product's pixels (background left out) and mixes it into the projection.

MiniLM itself barely separates colours ("navy blue shirt" sits next to "black shirt"), so two small learned
parts sit on top of the locked text tower and the image vector:
- a text adapter (a linear map, identity at the start) that sharpens the text side where the photos show a
  difference; text vectors compared with image vectors go through it;
- attribute heads (one linear classifier per catalog field, e.g. articleType and baseColour) on the image
  vector: they add the fields' supervision to training, and retrieval uses the predicted field values of
  a query photo to re-rank candidates by their catalog fields (tools/retrieval.py).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

# Images are squashed to a square, scaled to [0, 1], then normalised with these (ImageNet) statistics.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


@dataclass
class ImageEncoderConfig:
    image_size: int = 96  # input side, pixels
    widths: tuple[int, ...] = (16, 32, 64, 128, 256)  # channels per stage; stages after the first halve the side
    blocks: tuple[int, ...] = (1, 1, 1, 1, 1)  # residual blocks per stage
    colour_bins: int = 6  # bins per RGB channel: 6**3 = 216 colour cells
    hidden: int = 768  # width of the projection MLP
    embed_dim: int = 384  # = the MiniLM text space
    text_model: str = "sentence-transformers/all-MiniLM-L6-v2"  # the locked text tower
    text_adapter: bool = False  # learn a linear map on the text side (identity at the start)
    heads: dict = field(default_factory=dict)  # catalog field -> its values: one classifier each on the vector
    extra: dict = field(default_factory=dict)  # anything else worth keeping with the checkpoint

    def to_dict(self) -> dict:
        """The config as plain data (stored in checkpoints)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ImageEncoderConfig:
        """The config stored in a checkpoint (keys it does not know are left out)."""
        data = dict(data)
        for key in ("widths", "blocks"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


class ResidualBlock(nn.Module):
    """conv-bn-relu-conv-bn plus a (strided, projected when needed) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


def colour_histogram(pixels: torch.Tensor, bins: int) -> torch.Tensor:
    """Soft RGB histogram of the foreground pixels, plus the foreground fraction.

    pixels: (B, 3, H, W) in [0, 1] -> (B, bins**3 + 1). Near-white pixels count as background (product
    photos are shot on white); an image that is all background (a white item) gets an empty histogram and
    a foreground fraction of 0, which the projection learns to read as "white".
    """
    x = F.interpolate(pixels, size=(32, 32), mode="area")  # (B, 3, 32, 32)
    b = x.shape[0]
    x = x.flatten(2)  # (B, 3, P)
    foreground = (x.min(dim=1).values < 0.92).float()  # (B, P)
    centres = (torch.arange(bins, dtype=x.dtype, device=x.device) + 0.5) / bins
    # triangular soft assignment of each channel value to its two nearest bins
    weights = F.relu(1 - (x.unsqueeze(2) - centres.view(1, 1, bins, 1)).abs() * bins)  # (B, 3, bins, P)
    weights = weights * foreground.view(b, 1, 1, -1)
    hist = torch.einsum("bip,bjp,bkp->bijk", weights[:, 0], weights[:, 1], weights[:, 2]).reshape(b, -1)
    hist = hist / hist.sum(dim=1, keepdim=True).clamp_min(1e-6)
    fraction = foreground.mean(dim=1, keepdim=True)
    return torch.cat([hist.sqrt(), fraction], dim=1)  # Hellinger-style scaling


class ImageTower(nn.Module):
    """Image (B, 3, S, S) normalised -> L2-normalised embedding (B, embed_dim) in the text space."""

    mean: torch.Tensor  # buffers: the input normalisation
    std: torch.Tensor

    def __init__(self, config: ImageEncoderConfig) -> None:
        super().__init__()
        self.config = config
        w = config.widths
        self.stem = nn.Sequential(nn.Conv2d(3, w[0], 3, 2, 1, bias=False), nn.BatchNorm2d(w[0]), nn.ReLU())
        stages, cin = [], w[0]
        for i, (cout, n) in enumerate(zip(w, config.blocks)):
            for j in range(n):
                stages.append(ResidualBlock(cin, cout, 2 if (j == 0 and i > 0) else 1))
                cin = cout
        self.stages = nn.Sequential(*stages)
        colour_dim = config.colour_bins**3 + 1
        self.colour = nn.Sequential(nn.Linear(colour_dim, 256), nn.ReLU())
        self.project = nn.Sequential(
            nn.Linear(cin + 256, config.hidden), nn.ReLU(), nn.Linear(config.hidden, config.embed_dim)
        )
        self.adapter = nn.Linear(config.embed_dim, config.embed_dim) if config.text_adapter else None
        if self.adapter is not None:
            nn.init.eye_(self.adapter.weight)
            nn.init.zeros_(self.adapter.bias)
        self.heads = nn.ModuleDict(
            {name: nn.Linear(config.embed_dim, len(values)) for name, values in config.heads.items()}
        )
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1))

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels (B, 3, S, S) in [0, 1] -> pre-projection features (B, widths[-1] + 256)."""
        x = self.stem((pixels - self.mean) / self.std)  # (B, w0, S/2, S/2)
        x = self.stages(x)  # (B, w[-1], S/16, S/16)
        x = x.mean(dim=(2, 3))  # (B, w[-1])
        c = self.colour(colour_histogram(pixels, self.config.colour_bins))  # (B, 256)
        return torch.cat([x, c], dim=1)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.project(self.features(pixels)), dim=-1)  # (B, embed_dim)

    def adapt_texts(self, texts: torch.Tensor) -> torch.Tensor:
        """Locked text vectors (B, embed_dim) -> L2-normalised vectors comparable with image vectors."""
        return F.normalize(self.adapter(texts) if self.adapter is not None else texts, dim=-1)

    def head_logits(self, vectors: torch.Tensor) -> dict[str, torch.Tensor]:
        """Image vectors (B, embed_dim) -> {field: logits (B, number of values)}."""
        return {name: head(vectors) for name, head in self.heads.items()}


def count_parameters(model: nn.Module) -> int:
    """How many numbers the model learns."""
    return sum(p.numel() for p in model.parameters())
