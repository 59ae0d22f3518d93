"""PNG plots of one simulation: batch size and K over time, and latency distributions."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from specsim.io import atomic_path
from specsim.simulator.metrics import SimResult


def plot_run(result: SimResult, path: str | Path, title: str = "") -> None:
    """Three panels: running batch and K per step over time, TTFT CDF, TPOT CDF (atomic write)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    st = result.steps
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    ax = axes[0]
    t = st["start"]
    order = np.argsort(t, kind="stable")
    ax.plot(t[order], st["basis_batch"][order], lw=0.6, label="batch size (K basis)")
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("requests")
    ax2 = ax.twinx()
    ax2.plot(t[order], st["k"][order], lw=0.6, color="tab:red", alpha=0.7, label="K")
    ax2.set_ylabel("K", color="tab:red")
    ax.set_title("batch size and K per step")
    for ax, key, label in ((axes[1], "ttft", "TTFT (s)"), (axes[2], "tpot", "TPOT (ms)")):
        x = result.requests[key]
        x = np.sort(x[np.isfinite(x)]) * (1e3 if key == "tpot" else 1.0)
        if len(x):
            ax.plot(x, np.arange(1, len(x) + 1) / len(x))
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
