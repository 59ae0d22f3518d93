"""A measured run in the simulator's output shape: per-request columns and a summary with the
simulator's key names, written as `summary.json` + `requests.csv` (what `specsim simulate --out`
writes). Shared by the load generator, `verify` and the `vllm bench serve` importer.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from specsim.io import atomic_path, atomic_write_text, output_set
from specsim.metrics import meets_slo, percentile_stats, slo_metrics

RUN_FILES = ("summary.json", "requests.csv")
"""Every file of one measured run's set."""


@dataclass
class MeasuredRun:
    """Per-request columns in the simulator's format plus a summary."""

    summary: dict[str, Any]
    requests: dict[str, np.ndarray]
    request_ids: tuple[str, ...]
    categories: tuple[str | None, ...]
    errors: list[str]

    def write(self, out_dir: str | Path, force: bool = False) -> None:
        """requests.csv and summary.json (same names and columns as `specsim simulate --out`), moved
        into the folder together (`force`: beside files specsim did not write)."""
        with output_set(out_dir, RUN_FILES, force=force) as files:
            self._write(files.path("summary.json"), files.path("requests.csv"))

    def _write(self, summary: Path, requests: Path) -> None:
        from specsim.formats.run import run_summary

        data = run_summary(self.summary, str(self.summary.get("source", "measured"))).to_json()
        atomic_write_text(summary, json.dumps(data, indent=2) + "\n")
        names = list(self.requests)
        with atomic_path(requests) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["request_id", "category", *names])
            for i, rid in enumerate(self.request_ids):
                row: list[Any] = [rid, self.categories[i] or ""]
                for n in names:
                    v = self.requests[n][i]
                    row.append(f"{v:.6f}" if isinstance(v, (float, np.floating)) else int(v))
                w.writerow(row)


def summarise(cols: dict[str, np.ndarray], itl: np.ndarray, slo_ttft: float | None = None,
              slo_tpot: float | None = None) -> dict[str, Any]:
    """Aggregate metrics with the simulator's key names (`specsim.simulator.metrics.summarise`)."""
    done = np.isfinite(cols["e2e"])
    n_done = int(done.sum())
    arrival = cols["arrival"]
    finish = arrival + cols["e2e"]
    start = float(arrival.min()) if len(arrival) else 0.0
    end = float(np.nanmax(finish)) if n_done else start
    duration = max(end - start, 1e-12)
    out_tokens = int(cols["output_length"][done].sum())
    ok = meets_slo(cols, slo_ttft, slo_tpot)
    return {
        "requests": int(len(arrival)),
        "completed": n_done,
        "failed": int(len(arrival)) - n_done,
        "duration_s": duration,
        "output_tokens": out_tokens,
        "output_tokens_per_s": out_tokens / duration,
        "requests_per_s": n_done / duration,
        **slo_metrics(ok, duration, slo_ttft, slo_tpot),
        "slo_ttft_s": slo_ttft,
        "slo_tpot_s": slo_tpot,
        **percentile_stats(cols["ttft"], "ttft"),
        **percentile_stats(cols["tpot"], "tpot"),
        **percentile_stats(cols["e2e"], "e2e"),
        **percentile_stats(itl, "itl"),
    }
