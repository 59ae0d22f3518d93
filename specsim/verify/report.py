"""verify.json, report.md and verify.png of one verification (atomic writes)."""

from __future__ import annotations

import json
from pathlib import Path

from specsim.io import atomic_path, atomic_write_text
from specsim.verify.run import VerifyResult


def write_json(res: VerifyResult, path: Path) -> None:
    atomic_write_text(path, json.dumps(res.to_dict(), indent=1, default=float) + "\n")


def markdown(res: VerifyResult, title: str) -> str:
    unit = res.objective
    lines = [f"# {title}", "", f"**Verdict: {res.verdict}.** {res.reason}", "",
             f"Objective: {unit} ({res.direction}); {res.runs} runs in {res.wall_s:.0f} s"
             + (" (incomplete: time limit)" if res.incomplete else "") + ".", "",
             "| candidate | role | measured (mean over repeats) | 95% interval | predicted | measured gain over best "
             "baseline [interval] | predicted gain |", "|---|---|---|---|---|---|---|"]
    for name, c in res.candidates.items():
        mv = c["measured"]
        g = c.get("gain_over_best_baseline")
        gain = f"{g['value']:+.1%} [{g['low']:+.1%}, {g['high']:+.1%}]" if g else "-"
        pg = f"{c['predicted_gain']:+.1%}" if c.get("predicted_gain") is not None else "-"
        mark = " (best baseline)" if name == res.best_baseline else ""
        lines.append(f"| {name}{mark} | {c['role']} | {mv['value']:.4g} | {mv['low']:.4g} .. {mv['high']:.4g} | "
                     f"{c['predicted']:.4g} | {gain} | {pg} |")
    lines += ["", "Intervals: bootstrap over repeats (paired across candidates) and requests (paired by index).", ""]
    return "\n".join(lines)


def plot(res: VerifyResult, path: Path) -> None:
    """Measured (with interval) against predicted, one bar pair per candidate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(res.candidates)
    fig, ax = plt.subplots(figsize=(1.6 * len(names) + 2, 3.6), dpi=110)
    x = range(len(names))
    meas = [res.candidates[n]["measured"] for n in names]
    ax.bar([i - 0.18 for i in x], [m["value"] for m in meas], width=0.35, label="measured",
           yerr=[[m["value"] - m["low"] for m in meas], [m["high"] - m["value"] for m in meas]], capsize=3)
    ax.bar([i + 0.18 for i in x], [res.candidates[n]["predicted"] for n in names], width=0.35, label="simulated")
    ax.set_xticks(list(x), names)
    ax.set_ylabel(res.objective)
    ax.set_title(f"verify: {res.verdict}", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
