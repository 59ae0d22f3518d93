"""PNG plots of one simulation: batch size and K over time, and latency distributions."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from specsim.io import atomic_path
from specsim.simulator.metrics import SimResult

POLICY_COLOR, OFF_COLOR, K_COLOR = "tab:blue", "tab:gray", "tab:red"
"""One colour per series in every panel: the policy's run, the run without speculation, K."""


def plot_run(result: SimResult, path: str | Path, title: str = "", off: SimResult | None = None) -> None:
    """Three panels: running batch and K per step over time, TTFT CDF, TPOT CDF (atomic write); with
    `off`, the same traffic without speculation beside the policy in every panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    st = result.steps
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    ax = axes[0]
    t = st["start"]
    order = np.argsort(t, kind="stable")
    lines = []
    if off is not None:
        so = off.steps
        oo = np.argsort(so["start"], kind="stable")
        lines += ax.plot(so["start"][oo], so["basis_batch"][oo], lw=0.6, color=OFF_COLOR, alpha=0.8,
                         label="batch size, no speculation")
    lines += ax.plot(t[order], st["basis_batch"][order], lw=0.6, color=POLICY_COLOR, label="batch size (K basis)")
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("requests")
    ax2 = ax.twinx()
    lines += ax2.plot(t[order], st["k"][order], lw=0.6, color=K_COLOR, alpha=0.7, label="K (right axis)")
    ax2.set_ylabel("K", color=K_COLOR)
    ax.set_title("batch size and K per step")
    ax.legend(lines, [str(x.get_label()) for x in lines], loc="upper center", bbox_to_anchor=(0.5, -0.18),
              ncol=len(lines), fontsize=8, frameon=False)
    runs = [(result, POLICY_COLOR, "policy" if off is not None else "")]
    if off is not None:
        runs.append((off, OFF_COLOR, "no speculation"))
    for ax, key, label in ((axes[1], "ttft", "TTFT (s)"), (axes[2], "tpot", "TPOT (ms)")):
        for res, color, name in runs:
            x = res.requests[key]
            x = np.sort(x[np.isfinite(x)]) * (1e3 if key == "tpot" else 1.0)
            if len(x):
                ax.plot(x, np.arange(1, len(x) + 1) / len(x), color=color, label=name or None)
        if off is not None:
            ax.legend(loc="lower right", fontsize=8)
        ax.set_xlabel(label)
        ax.set_ylabel("fraction of requests")
        ax.set_title(f"{key.upper()} distribution")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
