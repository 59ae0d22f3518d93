"""Per-request latencies and aggregate serving metrics of a finished simulation."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import specsim.simulator.kernel as kernel
from specsim.io import atomic_path, atomic_write_text
from specsim.metrics import PERCENTILES, meets_slo, percentile_stats, slo_metrics  # noqa: F401 - re-exported
from specsim.metrics import percentile_stats as _pcts
from specsim.simulator.state import RequestTable


def request_columns(t: RequestTable) -> dict[str, np.ndarray]:
    """Per-request metrics in seconds: queueing, TTFT, TPOT, end-to-end, ITL mean and max."""
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(t.out > 1, (t.last_token - t.first_token) / (t.out - 1), np.nan)
        # inter-token gaps telescope: their sum is last token time minus first token time
        mean_itl = np.where(t.decode_steps > 0, (t.last_token - t.first_token) / np.maximum(t.decode_steps, 1), np.nan)
    return {
        "replica": t.replica,
        "arrival": t.arrival,
        "input_length": t.inp,
        "output_length": t.out,
        "queue_delay": t.first_scheduled - t.arrival,
        "ttft": t.first_token - t.arrival,
        "tpot": tpot,
        "e2e": t.finish - t.arrival,
        "mean_itl": mean_itl,
        "max_itl": np.where(t.decode_steps > 0, t.itl_max, np.nan),
        "decode_steps": t.decode_steps,
        "accepted_tokens": t.accepted,
        "draft_tokens": t.drafted,
        "verify_steps": t.verify_steps,
        "preemptions": t.preemptions,
        "cached_tokens": t.cached_tokens,
    }


@dataclass
class SimResult:
    """What a simulation produced: per-request columns, per-step log, aggregate summary."""

    summary: dict[str, Any]
    requests: dict[str, np.ndarray]
    request_ids: tuple[str, ...]
    categories: tuple[str | None, ...]
    steps: dict[str, np.ndarray] = field(default_factory=dict)
    detail: dict[str, np.ndarray] | None = None
    """With simulate(detail=True): every scheduled row [replica, step, request, tokens, drafts,
    padded] and every preemption [replica, step, request]."""

    def write_json(self, path: str | Path) -> None:
        """Summary as JSON (atomic), validated against the run contract (formats.run.RunSummary)."""
        from specsim.formats.run import run_summary

        data = run_summary(self.summary, "simulated").to_json()
        atomic_write_text(path, json.dumps(data, indent=2, default=_jsonable) + "\n")

    def write_csv(self, path: str | Path) -> None:
        """One row per request (atomic)."""
        cols = self.requests
        names = list(cols)
        with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["request_id", "category", *names])
            arrays = [cols[n] for n in names]
            for i, rid in enumerate(self.request_ids):
                row: list[Any] = [rid, self.categories[i] or ""]
                for a in arrays:
                    v = a[i]
                    row.append(f"{v:.6f}" if isinstance(v, (float, np.floating)) else int(v))
                w.writerow(row)


def _jsonable(x: Any) -> Any:
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def histogram_percentiles(hist: np.ndarray, total: float, prefix: str) -> dict[str, float]:
    """Mean and p50/p90/p99 from the engine's log-spaced ITL histogram (bin width 0.12%)."""
    n = int(hist.sum())
    out: dict[str, float] = {f"{prefix}_mean": total / n if n else float("nan")}
    if not n:
        for p in PERCENTILES:
            out[f"{prefix}_p{p}"] = float("nan")
        return out
    cum = np.cumsum(hist)
    per = kernel.ITL_BINS_PER_DECADE
    for p in PERCENTILES:
        b = int(np.searchsorted(cum, p / 100.0 * n, side="left"))
        # bin b >= 1 covers [lo*10^((b-1)/per), lo*10^(b/per)): report its geometric middle
        out[f"{prefix}_p{p}"] = kernel.ITL_LO * 10 ** ((b - 0.5) / per) if b >= 1 else kernel.ITL_LO
    return out


def summarise(
    t: RequestTable,
    steps: dict[str, np.ndarray],
    itl_hist: np.ndarray,
    itl_sum: float,
    busy_time: float,
    replicas: int,
    slo_ttft: float | None,
    slo_tpot: float | None,
) -> dict[str, Any]:
    """Aggregate metrics: throughput, goodput, latency percentiles, acceptance, utilisation."""
    cols = request_columns(t)
    done = np.isfinite(t.finish)
    n_done = int(done.sum())
    start = float(np.nanmin(t.arrival)) if n_done else 0.0
    end = float(np.nanmax(t.finish)) if n_done else 0.0
    duration = max(end - start, 1e-12)
    ok = meets_slo(cols, slo_ttft, slo_tpot)
    verify = int(t.verify_steps.sum())
    drafted = int(t.drafted.sum())
    accepted = int(t.accepted.sum())
    dec = steps.get("decoding", np.zeros(0))
    has_dec = dec > 0
    s: dict[str, Any] = {
        "requests": int(t.n),
        "completed": n_done,
        "duration_s": duration,
        "output_tokens": int(t.gen.sum()),
        "output_tokens_per_s": float(t.gen.sum()) / duration,
        "requests_per_s": n_done / duration,
        **slo_metrics(ok, duration, slo_ttft, slo_tpot),
        "slo_ttft_s": slo_ttft,
        "slo_tpot_s": slo_tpot,
        **_pcts(cols["ttft"], "ttft"),
        **_pcts(cols["tpot"], "tpot"),
        **_pcts(cols["e2e"], "e2e"),
        **histogram_percentiles(itl_hist, itl_sum, "itl"),
        **_pcts(cols["queue_delay"], "queue"),
        "mean_acceptance_length": 1.0 + accepted / verify if verify else 1.0,
        "acceptance_rate": accepted / drafted if drafted else 0.0,
        "draft_tokens": drafted,
        "accepted_tokens": accepted,
        "steps": len(dec),
        "mean_batch_size": float(steps["basis_batch"].mean()) if len(dec) else 0.0,
        "mean_scheduled": float(steps["scheduled"].mean()) if len(dec) else 0.0,
        "mean_decoding_batch": float(dec[has_dec].mean()) if has_dec.any() else 0.0,
        "mean_k": float(steps["k"][has_dec].mean()) if has_dec.any() else 0.0,
        "mean_drafts_per_row": float(steps["spec_tokens"].sum() / dec.sum()) if dec.sum() else 0.0,
        "busy_fraction": busy_time / (replicas * duration),
        "preemptions": int(t.preemptions.sum()),
        "replicas": replicas,
    }
    return s
