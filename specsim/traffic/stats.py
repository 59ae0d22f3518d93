"""Summary statistics of a traffic trace: rate, burstiness and length percentiles."""

from __future__ import annotations

from typing import Any

import numpy as np
from rich.table import Table

from specsim.formats.traffic import Traffic

NO_CATEGORY = "(none)"


def _lengths(arr: np.ndarray) -> dict[str, float]:
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])
    return {
        "mean": float(arr.mean()),
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "max": int(arr.max()),
        "total": int(arr.sum()),
    }


def burstiness(timestamps: np.ndarray) -> float | None:
    """Coefficient of variation of inter-arrival gaps (1 for Poisson), None with under 2 gaps."""
    if len(timestamps) < 3:
        return None
    gaps = np.diff(timestamps)
    mean = gaps.mean()
    return float(gaps.std() / mean) if mean > 0 else None


def traffic_stats(traffic: Traffic) -> dict[str, Any]:
    """Count, duration, rate, burstiness, length percentiles and per-category counts as a dict."""
    cats: dict[str, int] = {}
    for c in traffic.categories:
        key = NO_CATEGORY if c is None else c
        cats[key] = cats.get(key, 0) + 1
    out: dict[str, Any] = {
        "requests": len(traffic),
        "duration_s": traffic.duration,
        "rate_rps": traffic.rate,
        "burstiness_cv": burstiness(traffic.timestamps),
        "input_length": _lengths(traffic.input_lengths),
        "output_length": _lengths(traffic.output_lengths),
        "categories": dict(sorted(cats.items(), key=lambda kv: (-kv[1], kv[0]))),
    }
    if traffic.metadata.get("lengths_estimated"):
        out["lengths_estimated"] = str(traffic.metadata.get("token_counts") or "estimated")
    return out


def _fmt(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def stats_table(stats: dict[str, Any], title: str = "traffic") -> Table:
    """Render `traffic_stats` output as a rich table."""
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("requests", f"{stats['requests']:,}")
    table.add_row("duration (s)", _fmt(stats["duration_s"]))
    table.add_row("rate (req/s)", _fmt(stats["rate_rps"], 3))
    table.add_row("burstiness (CV of gaps)", _fmt(stats["burstiness_cv"], 3))
    for side in ("input_length", "output_length"):
        d = stats[side]
        name = side.replace("_", " ")
        table.add_row(f"{name} mean", f"{d['mean']:,.1f}")
        table.add_row(f"{name} p50 / p90 / p99", f"{d['p50']:,.0f} / {d['p90']:,.0f} / {d['p99']:,.0f}")
        table.add_row(f"{name} max", f"{d['max']:,}")
    if stats.get("lengths_estimated"):
        table.add_row("token lengths", f"estimates ({stats['lengths_estimated']})")
    for cat, count in stats["categories"].items():
        table.add_row(f"category {cat}", f"{count:,} ({100.0 * count / max(stats['requests'], 1):.1f}%)")
    return table
