"""The profile's cost model from measured points: table at a reference context, context slope,
and its error on held-out points (pure numpy, no vLLM)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def median_iqr(samples: Sequence[float]) -> tuple[float, float]:
    """Median and interquartile range of step samples."""
    a = np.asarray(samples, dtype=float)
    if a.size == 0:
        raise ValueError("no samples")
    q1, med, q3 = np.percentile(a, [25, 50, 75])
    return float(med), float(q3 - q1)


@dataclass(frozen=True)
class Point:
    """One measured decode point: batch B, speculation K, mean context per sequence, median ms."""

    batch: int
    k: int
    context: float
    ms: float


def interp_batch(batches: Sequence[int], values: Sequence[float], b: float) -> float:
    """Piecewise-linear value at batch b (linear extrapolation beyond the ends)."""
    xs = np.asarray(batches, dtype=float)
    ys = np.asarray(values, dtype=float)
    if len(xs) == 1:
        return float(ys[0])
    i = int(np.clip(np.searchsorted(xs, b) - 1, 0, len(xs) - 2))
    x0, x1, y0, y1 = xs[i], xs[i + 1], ys[i], ys[i + 1]
    return float(y0 + (y1 - y0) * (b - x0) / (x1 - x0))


@dataclass
class CostModel:
    """step_ms(B, K, context) = table[B][K] (interpolated in B) + slope * B * (context - ref)."""

    batch_sizes: list[int]
    ks: list[int]
    table: list[list[float]]
    reference_context: float
    slope: float

    def predict(self, batch: float, k: int, context: float) -> float:
        """Predicted step time in ms."""
        j = self.ks.index(k)
        base = interp_batch(self.batch_sizes, [row[j] for row in self.table], batch)
        return base + self.slope * batch * (context - self.reference_context)


def fit_slope(points: Sequence[Point], reference: dict[tuple[int, int], Point]) -> float:
    """Least-squares ms per (sequence x context token) from points at other contexts (>= 0)."""
    num = 0.0
    den = 0.0
    for p in points:
        ref = reference.get((p.batch, p.k))
        if ref is None or p.context == ref.context:
            continue
        x = p.batch * (p.context - ref.context)
        num += (p.ms - ref.ms) * x
        den += x * x
    return max(0.0, num / den) if den > 0 else 0.0


def relative_errors(model: CostModel, points: Sequence[Point]) -> list[float]:
    """|predicted - measured| / measured for each held-out point."""
    return [abs(model.predict(p.batch, p.k, p.context) - p.ms) / p.ms for p in points if p.ms > 0]


def fit_report(model: CostModel, heldout: Sequence[Point]) -> dict[str, object]:
    """Summary of the cost model's error on held-out points."""
    errs = relative_errors(model, heldout)
    rows = [
        {
            "batch": p.batch,
            "k": p.k,
            "context": round(p.context, 1),
            "measured_ms": round(p.ms, 3),
            "predicted_ms": round(model.predict(p.batch, p.k, p.context), 3),
        }
        for p in heldout
    ]
    return {
        "model": "table interpolated linearly in batch size + context_ms_per_token * B * (context - reference)",
        "heldout_points": len(errs),
        "mean_abs_rel_error": round(float(np.mean(errs)), 4) if errs else None,
        "max_abs_rel_error": round(float(np.max(errs)), 4) if errs else None,
        "heldout": rows,
    }
