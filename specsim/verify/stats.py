"""Metrics from per-request columns, and bootstrap confidence intervals over requests and repeats.

Every candidate replays the same trace in every repeat, so its runs pair up with the other
candidates' by repeat and by request. The intervals resample repeats (paired across candidates:
a repeat is one interleaved round, so drift within a round hits every candidate alike) and, inside
each chosen repeat, requests (paired by request index). Pure numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from specsim.metrics import Metric, meets_slo

Columns = dict[str, np.ndarray]


def metric_value(metric: Metric, cols: Columns, slo: dict[str, float], offered_rps: float | None,
                 idx: np.ndarray | None = None) -> float:
    """The metric over the requests `idx` (all when None) of one run.

    Goodput in open loop is the offered rate times the share of requests in SLO (the tuner's
    definition, `tuner.evaluate.with_goodput`); throughputs divide by first arrival to last finish."""
    c = cols if idx is None else {k: v[idx] for k, v in cols.items()}
    done = np.isfinite(c["e2e"])
    key = metric.key
    if key in ("goodput", "goodput_rps", "slo_attainment"):
        ok = meets_slo(c, slo.get("ttft"), slo.get("tpot"))
        share = float(ok.mean()) if len(ok) else float("nan")
        if key == "slo_attainment":
            return share
        if offered_rps is not None and key == "goodput":
            return offered_rps * share
        return float(ok.sum()) / _span(c, done)
    if key == "output_tokens_per_s":
        return float(c["output_length"][done].sum()) / _span(c, done)
    if key == "requests_per_s":
        return float(done.sum()) / _span(c, done)
    what, _, stat = key.rpartition("_")
    col = {"queue": None}.get(what, what)
    if col is None or col not in c:
        raise ValueError(f"metric {metric.name!r} cannot be measured live")
    x = c[col][done]
    x = x[np.isfinite(x)]
    if not len(x):
        return float("nan")
    return float(x.mean()) if stat == "mean" else float(np.percentile(x, float(stat[1:])))


def _span(c: Columns, done: np.ndarray) -> float:
    if not done.any():
        return float("inf")
    finish = c["arrival"][done] + c["e2e"][done]
    return max(float(finish.max() - c["arrival"].min()), 1e-9)


@dataclass
class Interval:
    """A point estimate (mean over repeats) and its bootstrap interval."""

    value: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}


def bootstrap(metric: Metric, runs: dict[str, Sequence[Columns]], slo: dict[str, float],
              offered_rps: float | None, reference: str | None = None, confidence: float = 0.95,
              samples: int = 2000, seed: int = 0) -> tuple[dict[str, Interval], dict[str, Interval]]:
    """Intervals for each candidate's metric, and for each candidate's relative gain over
    `reference` ((candidate - reference) / |reference|, signed so that positive is better)."""
    rng = np.random.default_rng(seed)
    names = list(runs)
    n_rep = min(len(v) for v in runs.values())
    n_req = min(len(cols["e2e"]) for v in runs.values() for cols in v[:n_rep])
    point = {n: float(np.mean([metric_value(metric, runs[n][r], slo, offered_rps) for r in range(n_rep)]))
             for n in names}
    draws = {n: np.empty(samples) for n in names}
    for s in range(samples):
        reps = rng.integers(0, n_rep, n_rep)
        idxs = [rng.integers(0, n_req, n_req) for _ in reps]
        for n in names:
            draws[n][s] = np.mean([metric_value(metric, runs[n][r], slo, offered_rps, idx)
                                   for r, idx in zip(reps, idxs, strict=True)])
    lo_q, hi_q = (1 - confidence) / 2 * 100, (1 + confidence) / 2 * 100
    values = {n: Interval(point[n], float(np.nanpercentile(draws[n], lo_q)), float(np.nanpercentile(draws[n], hi_q)))
              for n in names}
    gains: dict[str, Interval] = {}
    if reference is not None:
        sign = 1.0 if metric.direction == "maximize" else -1.0
        ref = draws[reference]
        for n in names:
            if n == reference:
                continue
            with np.errstate(divide="ignore", invalid="ignore"):
                g = sign * (draws[n] - ref) / np.abs(ref)
                g0 = sign * (point[n] - point[reference]) / abs(point[reference]) if point[reference] else np.nan
            gains[n] = Interval(float(g0), float(np.nanpercentile(g, lo_q)), float(np.nanpercentile(g, hi_q)))
    return values, gains
