"""What every evaluation and benchmark shares: writing figures as JSON, percentiles and rates."""

from __future__ import annotations

import json
import math
from pathlib import Path

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
