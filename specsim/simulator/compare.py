"""`specsim compare RUN RUN ...`: runs side by side, simulated or measured, from their summary.json.

A run is a folder written by `simulate --out`, `loadgen --out` or `traffic import --format vllm-bench
--run-out` (or its summary.json itself). The table has the simulator's summary rows, one column per
run, and with two or more runs the relative difference of each later run from the first.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from specsim.errors import SpecsimError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="put simulated and measured runs side by side (their summary.json)",
        description="Print the summary metrics of runs side by side: folders written by simulate, loadgen or "
        "`traffic import --format vllm-bench --run-out` (or their summary.json files). With two or more runs, "
        "each later run's relative difference from the first is shown.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folder or summary.json (the first is the reference)")
    p.add_argument("--json", action="store_true", help="print the compared metrics as JSON")
    p.set_defaults(func=_cmd_compare)


def load_summary(path: str | Path) -> tuple[str, dict[str, Any]]:
    """(label, summary) of a run folder or summary.json; a one-line error when it is not one."""
    from specsim.formats.run import load_run_summary

    p = Path(path)
    f = p / "summary.json" if p.is_dir() else p
    if p.is_dir() and not f.is_file():
        raise SpecsimError(f"run folder {p} has no summary.json")
    data = load_run_summary(f).to_json()
    label = (p if p.is_dir() else p.parent).name or str(p)
    return label, data


def relative(a: Any, b: Any) -> float | None:
    """(b - a) / |a| when both are finite numbers and a != 0, else None."""
    try:
        x, y = float(a), float(b)
    except (TypeError, ValueError):
        return None
    if not (math.isfinite(x) and math.isfinite(y)) or x == 0:
        return None
    return (y - x) / abs(x)


def _cmd_compare(args: argparse.Namespace) -> int:
    import json

    from rich.table import Table

    from specsim.simulator.report import ROWS, SLO_KEYS, _fmt, fmt_slo
    from specsim.terminal import console

    runs: dict[str, dict[str, Any]] = {}
    for r in args.runs:
        label, s = load_summary(r)
        base, k = label, 2
        while label in runs:
            label, k = f"{base} ({k})", k + 1
        runs[label] = s
    names = list(runs)
    first = runs[names[0]]
    if args.json:
        out = {key: {n: runs[n].get(key) for n in names} for key, *_ in ROWS}
        print(json.dumps(out, indent=2, default=str))
        return 0
    table = Table(title="compare (differences relative to " + names[0] + ")")
    table.add_column("metric")
    for n in names:
        src = runs[n].get("source")
        table.add_column(f"{n}\n({src})" if isinstance(src, str) else f"{n}\n(simulated)", justify="right")
    for n in names[1:]:
        table.add_column(f"{n} vs {names[0]}", justify="right")
    for key, label, scale, fmt in ROWS:
        show = fmt_slo if key in SLO_KEYS else _fmt
        cells = [show(runs[n].get(key), scale, fmt) for n in names]
        for n in names[1:]:
            d = relative(first.get(key), runs[n].get(key))
            cells.append("-" if d is None else f"{d:+.1%}")
        table.add_row(label, *cells)
    console().print(table)
    return 0
