"""Put several fidelity studies side by side: measured medians per study next to the simulated value.

Usage: python experiments/fidelity/compare_studies.py LABEL=DIR [LABEL=DIR ...] [--metrics tpot_mean,...]
Each DIR holds a results.json written by run.py. Prints a Markdown table; the spread between studies
of the same policy and load is the server-to-server variation a single study cannot show. With more
than one study it also pools every repeat of every study per cell and scores the last study's
simulated value against that pooled median and range.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from run import TARGET, cells  # the study script beside this one


def medians(doc: dict) -> dict[tuple[str, str, str], tuple[float, float]]:
    """(policy, load, metric) -> (measured median, simulated median) over the study's repeats."""
    out: dict[tuple[str, str, str], tuple[float, float]] = {}
    for (pol, load), runs in cells(doc["runs"]).items():
        for m in runs[0]["measured"]:
            out[(pol, load, m)] = (float(np.median([r["measured"][m] for r in runs])),
                                   float(np.median([r["simulated"][m] for r in runs])))
    return out


def pooled(docs: list[dict], metrics: list[str]) -> None:
    """Every repeat of every study in one sample per cell, against the last study's simulation."""
    runs = [r for d in docs for r in d["runs"]]
    last = medians(docs[-1])
    print("\n| policy | load | metric | measured median [min, max] over all repeats | simulated | error | in range "
          "| target |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    met = total = 0
    for (pol, load, m), (_, sim) in last.items():
        if m not in metrics:
            continue
        a = np.array([r["measured"][m] for r in runs if r["policy"] == pol and r["load"] == load])
        med = float(np.median(a))
        err = (sim - med) / med
        ok = abs(err) <= TARGET.get(m, 0.1)
        met += ok
        total += 1
        scale = 1.0 if m.startswith("output") else 1000.0
        print(f"| {pol} | {load} | {m} | {med * scale:.1f} [{a.min() * scale:.1f}, {a.max() * scale:.1f}] (n={len(a)}) "
              f"| {sim * scale:.1f} | {err:+.0%} | {'yes' if a.min() <= sim <= a.max() else 'no'} "
              f"| {'met' if ok else 'MISSED'} |")
    print(f"\n{met} of {total} cells within target against the pooled median")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("studies", nargs="+", help="LABEL=DIR")
    ap.add_argument("--metrics", default="output_tokens_per_s,ttft_mean,tpot_mean,tpot_p99")
    args = ap.parse_args(argv)
    studies, docs = [], []
    for item in args.studies:
        label, _, d = item.partition("=")
        docs.append(json.loads((Path(d) / "results.json").read_text()))
        studies.append((label, medians(docs[-1])))
    metrics = args.metrics.split(",")
    head = " | ".join(f"measured {lab} (sim)" for lab, _ in studies)
    print(f"| policy | load | metric | {head} | between studies |")
    print("| --- | --- | --- | " + " | ".join("---" for _ in studies) + " | --- |")
    keys = [k for k in studies[-1][1] if k[2] in metrics]
    for key in keys:
        scale = 1.0 if key[2].startswith("output") else 1000.0
        cells, meas = [], []
        for _, med in studies:
            if key in med:
                m, s = med[key]
                meas.append(m)
                cells.append(f"{m * scale:.1f} ({s * scale:.1f})")
            else:
                cells.append("n/a")
        spread = (max(meas) - min(meas)) / float(np.median(meas)) if len(meas) > 1 else float("nan")
        print(f"| {key[0]} | {key[1]} | {key[2]} | " + " | ".join(cells) + f" | {spread:.0%} |")
    if len(docs) > 1:
        pooled(docs, list(TARGET))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
