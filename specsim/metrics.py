"""Metrics, SLOs and objectives every stage reads the same way: percentiles, SLO attainment and goodput
over per-request columns, SLO and duration parsing, and the named objectives (`Metric`).

Shared below the simulator, the tuner, the load generator and `verify`, so that a measured run and a
simulated one are scored by one piece of code.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from specsim.errors import SpecsimError

PERCENTILES = (50, 90, 99)


def parse_duration(text: str) -> float:
    """'2s', '50ms', '1.5' (seconds) -> seconds."""
    t = text.strip().lower()
    try:
        if t.endswith("ms"):
            v = float(t[:-2]) / 1e3
        elif t.endswith("us"):
            v = float(t[:-2]) / 1e6
        elif t.endswith("s"):
            v = float(t[:-1])
        else:
            v = float(t)
    except ValueError:
        raise SpecsimError(f"cannot read duration {text!r} (use e.g. 2s or 50ms)") from None
    if not (v > 0 and math.isfinite(v)):
        raise SpecsimError(f"duration must be a finite positive number, got {text!r}")
    return v


def parse_slo(text: str | None) -> dict[str, float]:
    """'ttft=2s,tpot=50ms' -> {'ttft': 2.0, 'tpot': 0.05}."""
    out: dict[str, float] = {}
    if not text:
        return out
    for part in text.split(","):
        if "=" not in part:
            raise SpecsimError(f"cannot read SLO {part!r} (use ttft=2s,tpot=50ms)")
        key, val = (x.strip().lower() for x in part.split("=", 1))
        if key not in ("ttft", "tpot"):
            raise SpecsimError(f"unknown SLO {key!r} (known: ttft, tpot)")
        if key in out:
            raise SpecsimError(f"SLO {key!r} given twice in {text!r}")
        try:
            out[key] = parse_duration(val)
        except SpecsimError as exc:
            raise SpecsimError(f"SLO {key}: {exc}") from None
    return out


def fmt_slo(v: Any, scale: float = 1.0, fmt: str = "{:.3f}") -> str:
    """An SLO metric for display: n/a when there was no SLO (None or NaN)."""
    try:
        x = float(v) * scale
    except (TypeError, ValueError):
        return "n/a"
    return "n/a" if x != x else fmt.format(x)


def percentile_stats(x: np.ndarray, prefix: str) -> dict[str, float]:
    """`{prefix}_mean` and `{prefix}_p50/p90/p99` over the finite values (NaN when none)."""
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    out: dict[str, float] = {f"{prefix}_mean": float(x.mean()) if len(x) else float("nan")}
    for p in PERCENTILES:
        out[f"{prefix}_p{p}"] = float(np.percentile(x, p)) if len(x) else float("nan")
    return out




def meets_slo(cols: dict[str, np.ndarray], slo_ttft: float | None, slo_tpot: float | None) -> np.ndarray:
    """Boolean per request: finished and within both SLOs (a missing SLO is no limit)."""
    ok = np.isfinite(cols["e2e"])
    if slo_ttft is not None:
        ok &= cols["ttft"] <= slo_ttft
    if slo_tpot is not None:
        ok &= ~(cols["tpot"] > slo_tpot)  # NaN TPOT (one-token outputs) passes
    return ok


def slo_metrics(ok: np.ndarray, duration: float, slo_ttft: float | None, slo_tpot: float | None
                ) -> dict[str, float | None]:
    """`goodput_rps` (requests in SLO per second) and `slo_attainment` (their share); both None (JSON
    null, printed n/a) when no SLO is given: every request would trivially "meet" it."""
    if slo_ttft is None and slo_tpot is None:
        return {"goodput_rps": None, "slo_attainment": None}
    return {"goodput_rps": float(ok.sum()) / duration, "slo_attainment": float(ok.sum()) / max(len(ok), 1)}


DEFAULT_SLO = {"ttft": 2.0, "tpot": 0.05}
"""SLO used for goodput when none is given (the issue's example: TTFT 2 s, TPOT 50 ms)."""

_NAMED: dict[str, tuple[str, str, str]] = {
    # name: (summary key, direction, label)
    "goodput": ("goodput", "maximize", "goodput (req/s in SLO)"),
    "throughput": ("output_tokens_per_s", "maximize", "output tokens/s"),
    "requests": ("requests_per_s", "maximize", "requests/s"),
    "slo-attainment": ("slo_attainment", "maximize", "SLO attainment"),
}
_LATENCY = re.compile(r"^(mean|p50|p90|p99)-(tpot|ttft|e2e|itl|queue)$")
PARETO_DEFAULT = ("throughput", "p99-tpot")


@dataclass(frozen=True)
class Metric:
    """One optimised quantity: a summary key and a direction."""

    name: str
    key: str
    direction: str
    label: str

    def better(self, a: float, b: float) -> bool:
        """True if a is strictly better than b."""
        return a > b if self.direction == "maximize" else a < b

    def gain(self, tuned: float, base: float) -> float | None:
        """Relative improvement of tuned over base (positive = better), None if undefined."""
        if not (math.isfinite(tuned) and math.isfinite(base)) or base == 0:
            return None
        return (tuned - base) / abs(base) if self.direction == "maximize" else (base - tuned) / abs(base)


def metric(name: str) -> Metric:
    """Look up an objective name: goodput, throughput, requests, slo-attainment, or e.g. p99-tpot."""
    key = name.strip().lower()
    if key in _NAMED:
        k, d, label = _NAMED[key]
        return Metric(key, k, d, label)
    m = _LATENCY.match(key)
    if m:
        stat, what = m.groups()
        return Metric(key, f"{what}_{stat}", "minimize", f"{stat} {what.upper()} (s)")
    known = ", ".join([*_NAMED, "pareto", "mean|p50|p90|p99-tpot|ttft|e2e|itl|queue"])
    raise SpecsimError(f"unknown objective {name!r} (known: {known})")


