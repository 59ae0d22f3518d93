"""Human-readable rendering of simulation summaries (rich tables)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.table import Table

from specsim.metrics import fmt_slo  # noqa: F401 - re-exported
from specsim.terminal import console as make_console

# (key, label, scale, format): the rows a capacity planner reads first
ROWS: tuple[tuple[str, str, float, str], ...] = (
    ("completed", "completed requests", 1, "{:.0f}"),
    ("output_tokens_per_s", "output tokens/s", 1, "{:.1f}"),
    ("requests_per_s", "requests/s", 1, "{:.3f}"),
    ("goodput_rps", "goodput (req/s in SLO)", 1, "{:.3f}"),
    ("slo_attainment", "SLO attainment", 100, "{:.1f}%"),
    ("ttft_p50", "TTFT p50 (ms)", 1e3, "{:.1f}"),
    ("ttft_p99", "TTFT p99 (ms)", 1e3, "{:.1f}"),
    ("tpot_mean", "TPOT mean (ms)", 1e3, "{:.2f}"),
    ("tpot_p50", "TPOT p50 (ms)", 1e3, "{:.2f}"),
    ("tpot_p99", "TPOT p99 (ms)", 1e3, "{:.2f}"),
    ("itl_p99", "ITL p99 (ms)", 1e3, "{:.2f}"),
    ("e2e_p50", "end-to-end p50 (s)", 1, "{:.3f}"),
    ("e2e_p99", "end-to-end p99 (s)", 1, "{:.3f}"),
    ("queue_mean", "queueing mean (ms)", 1e3, "{:.1f}"),
    ("mean_acceptance_length", "mean acceptance length", 1, "{:.2f}"),
    ("mean_k", "mean K", 1, "{:.2f}"),
    ("mean_batch_size", "mean batch size", 1, "{:.1f}"),
    ("busy_fraction", "busy fraction", 100, "{:.1f}%"),
    ("preemptions", "preemptions", 1, "{:.0f}"),
)


SLO_KEYS = ("goodput_rps", "slo_attainment", "goodput")
"""Metrics that need an SLO: null in a summary simulated or measured without one, shown as n/a."""


def _fmt(v: Any, scale: float, fmt: str) -> str:
    if v is None:
        return "-"
    try:
        x = float(v) * scale
    except (TypeError, ValueError):
        return str(v)
    return "-" if x != x else fmt.format(x)


def summary_table(summaries: Mapping[str, Mapping[str, Any]], title: str = "simulation") -> Table:
    """One column per named summary (e.g. 'no speculation', 'policy'), one row per metric."""
    table = Table(title=title)
    table.add_column("metric")
    for name in summaries:
        table.add_column(name, justify="right")
    for key, label, scale, fmt in ROWS:
        show = fmt_slo if key in SLO_KEYS else _fmt
        table.add_row(label, *(show(s.get(key), scale, fmt) for s in summaries.values()))
    return table


def caveats(summaries: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Lines a reader must see beside the numbers: extrapolated costs and the start-to-start band."""
    out: list[str] = []
    share = max((float(s.get("extrapolated_step_share") or 0.0) for s in summaries.values()), default=0.0)
    if share > 0:
        out.append(f"warning: {share:.1%} of steps lay outside the batch sizes, tokens or contexts the profile "
                   "measured; their costs are extrapolated")
    from specsim.simulator.acceptance import summary_warning

    for s in summaries.values():
        line = summary_warning(s)
        if line and line not in out:
            out.append(line)
    spread = next((s.get("start_spread") for s in summaries.values() if s.get("start_spread")), None)
    if spread:
        out.append(f"note: step costs varied by +-{float(spread):.0%} between engine starts of the same "
                   "configuration; a live server's latencies can differ from these by about that much")
    return out


def print_summaries(summaries: Mapping[str, Mapping[str, Any]], title: str = "simulation") -> None:
    console = make_console()
    console.print(summary_table(summaries, title))
    for line in caveats(summaries):
        print(line, flush=True)  # one line each, never wrapped or read as markup
