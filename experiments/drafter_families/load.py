"""Drafter families across load: where does each stop paying?

One analytic profile (Llama-3.1-8B on one H100, calibrated; a Llama-3.2-1B draft model) holding one
drafter per family: chains (the draft model, an EAGLE-style head, n-gram lookup), Medusa-style heads,
parallel drafting (P-EAGLE), block drafting, an EAGLE-2-style tree and the draft model overlapped with
verification. The Azure LLM conversation trace's first requests (synthetic Azure-like traffic when the
shared data is absent) are replayed at rising load under each family's static policy (K = 4, the
whole tree) and speculation off. Acceptance is synthetic (see `specsim.profiler.analytic`), so this
compares what the families' costs do with load, given their assumed acceptance.

    python experiments/drafter_families/load.py     # about a minute on 2 cores; writes load.md, load.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from specsim.formats.policy import DrafterRef, Policy
from specsim.formats.traffic import Traffic
from specsim.io import atomic_path, atomic_write_text
from specsim.profiler.analytic import analytic_profile
from specsim.shared_data import azure_trace_path
from specsim.simulator import SimConfig, simulate

HERE = Path(__file__).resolve().parent
REQUESTS = 3000
RATES = [0.5, 1, 2, 4, 8, 16, 32]


def traffic() -> tuple[Traffic, str]:
    path = azure_trace_path("conv")
    if path.is_file():
        from specsim.traffic.azure import import_azure

        tr = import_azure(path, limit=REQUESTS)
        what = f"the first {len(tr)} requests of the Azure LLM conversation trace (2023)"
    else:
        rng = np.random.default_rng(0)
        ts = np.cumsum(rng.exponential(1.0, REQUESTS))
        tr = Traffic.from_arrays(ts - ts[0], np.clip(rng.lognormal(np.log(1000), 0.8, REQUESTS), 16, 8000).astype(int),
                                 np.clip(rng.lognormal(np.log(200), 0.9, REQUESTS), 4, 2000).astype(int),
                                 ["conv"] * REQUESTS)
        what = f"{REQUESTS} synthetic Azure-conversation-like requests (no shared data)"
    return tr, what


def main() -> int:
    prof = analytic_profile(target="llama-8b", drafter_model="llama-1b", gpu="h100", k_max=4, eagle=True,
                            families=("heads", "parallel", "block", "tree", "overlapped"))
    tr, what = traffic()
    policies = {"off": Policy()}
    for name, spec in prof.drafters.items():
        k = spec.static_ks(4)[-1]
        policies[f"{name} ({spec.family_kind}, K={k})"] = Policy.static(DrafterRef.from_profile(prof, name), k)
    rows: dict[str, list[dict[str, float]]] = {}
    for label, pol in policies.items():
        rows[label] = []
        for rate in RATES:
            s = simulate(prof, tr.rate_scaled(rate / tr.rate), pol, SimConfig(seed=0, max_num_seqs=256)).summary
            rows[label].append({"rate": rate, "tpot_mean": s["tpot_mean"], "ttft_p99": s["ttft_p99"],
                                "output_tokens_per_s": s["output_tokens_per_s"],
                                "mean_acceptance_length": s["mean_acceptance_length"],
                                "mean_batch_size": s["mean_batch_size"]})
        print(f"  {label}: done", file=sys.stderr)
    off = rows["off"]
    lines = ["# Drafter families across load", "",
             f"Analytic profile: Llama-3.1-8B on one H100 (calibrated), drafters {', '.join(prof.drafters)}; traffic: "
             f"{what}, replayed at each rate; max_num_seqs 256. Cell: mean TPOT against speculation off "
             "(above 1 = faster), and in brackets the tokens accepted per verification.", "",
             "| policy | " + " | ".join(f"{r:g} req/s" for r in RATES) + " | stops paying at |",
             "|---|" + "---|" * (len(RATES) + 1)]
    for label, rs in rows.items():
        if label == "off":
            cells = [f"{r['tpot_mean'] * 1e3:.1f} ms" for r in rs]
            lines.append("| off (mean TPOT) | " + " | ".join(cells) + " | |")
            continue
        speed = [o["tpot_mean"] / r["tpot_mean"] for o, r in zip(off, rs, strict=True)]
        stop = next((RATES[i] for i, v in enumerate(speed) if v < 1.0), None)
        cells = [f"{v:.2f} ({r['mean_acceptance_length']:.2f})" for v, r in zip(speed, rs, strict=True)]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {'never' if stop is None else f'{stop:g} req/s'} |")
    lines += ["", "Mean batch size at each rate (off): " + ", ".join(f"{r['mean_batch_size']:.1f}" for r in off) + "."]
    atomic_write_text(HERE / "load.md", "\n".join(lines) + "\n")
    atomic_write_text(HERE / "load.json", json.dumps(rows, indent=1) + "\n")
    plot(rows, HERE / "load.png")
    print("\n".join(lines))
    return 0


def plot(rows: dict[str, list[dict[str, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    off = rows["off"]
    for label, rs in rows.items():
        if label == "off":
            continue
        ax.plot(RATES, [o["tpot_mean"] / r["tpot_mean"] for o, r in zip(off, rs, strict=True)], marker="o",
                label=label)
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("offered load (requests/s, one H100)")
    ax.set_ylabel("mean TPOT speedup over speculation off")
    ax.set_title("Drafter families across load (Llama-3.1-8B, analytic H100 profile)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
