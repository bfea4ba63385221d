"""What every evaluation and benchmark shares: writing figures as JSON, percentiles and rates."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np


def write_json(figures: dict, path: str | Path) -> Path:
    """Write figures as indented JSON, atomically (a temporary file, then a rename); numpy numbers become floats."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(figures, indent=2, ensure_ascii=False, default=float) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def percentile(values: list[float], q: float, digits: int = 3) -> float | None:
    """The q-th percentile of values, rounded; None for no values."""
    return round(float(np.percentile(values, q)), digits) if len(values) else None


def rate(passed: int, total: int) -> float | None:
    """passed / total, rounded to 3 places; None when there is nothing to count."""
    return round(passed / total, 3) if total else None


def wilson_interval(passed: int, total: int, z: float = 1.96) -> list[float] | None:
    """The 95% Wilson score interval of a rate [low, high], rounded to 3 places; None when there is nothing to
    count. Unlike the normal approximation it stays inside [0, 1] and is honest for small n (10 of 10 is not
    [1, 1])."""
    if not total:
        return None
    p = passed / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return [round(max(0.0, centre - half), 3), round(min(1.0, centre + half), 3)]


def bootstrap_interval(
    values: np.ndarray, groups: list[str] | None = None, n: int = 1000, seed: int = 0
) -> list[list[float]]:
    """95% percentile-bootstrap intervals [[low, high], ...] of the column means of values [S, M] (S samples),
    rounded to 3 places. With groups (one per sample, e.g. its dialogue), whole groups are resampled: samples of
    one dialogue are not independent, and resampling them one by one would make the interval too narrow."""
    values = np.asarray(values, np.float64)
    values = values.reshape(len(values), -1) if values.ndim != 2 else values
    if not len(values):
        return [[0.0, 0.0] for _ in range(values.shape[1])]
    keys = groups if groups is not None else [str(k) for k in range(len(values))]
    index = {g: k for k, g in enumerate(dict.fromkeys(keys))}
    rows = np.array([index[g] for g in keys])
    sums = np.zeros((len(index), values.shape[1]))
    np.add.at(sums, rows, values)
    counts = np.bincount(rows, minlength=len(index)).astype(np.float64)
    draw = np.random.default_rng(seed).integers(0, len(index), size=(n, len(index)))  # [n, G]
    means = sums[draw].sum(1) / counts[draw].sum(1)[:, None]  # [n, M]
    low, high = np.percentile(means, [2.5, 97.5], axis=0)
    return [[round(float(lo), 3), round(float(hi), 3)] for lo, hi in zip(low, high)]


def log_linear_fit(xs: list[float], ys: list[float], target: float) -> dict:
    """y = a + b * log2(x) by least squares, and the x at which y would reach target at that rate (None when y does
    not grow, or only past 2^60)."""
    lx = np.log2(np.asarray(xs, np.float64))
    b, a = np.polyfit(lx, np.asarray(ys, np.float64), 1) if len(xs) > 1 else (0.0, float(ys[0]) if ys else 0.0)
    steps = (target - a) / b if b > 1e-9 else math.inf
    needed = round(2**steps) if steps < 60 else None
    return {"a": round(float(a), 4), "per_doubling": round(float(b), 4), "target": target, "needed": needed}


def pyplot() -> Any:
    """matplotlib's pyplot, drawing to files only (imported on first use: heavy, and only plots need it)."""
    import matplotlib  # noqa: PLC0415  (see above)

    matplotlib.use("Agg")  # no screen: files only
    import matplotlib.pyplot as plt  # noqa: PLC0415  (as above)

    return plt


def save_figure(fig: Any, path: str | Path) -> Path:
    """A tight layout, the figure written to path as a PNG (its folder made), then closed."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return path
