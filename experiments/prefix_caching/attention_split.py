"""Does giving prefill rows' attention a rate of its own fix partly cached prefills?

The committed profile's composition model costs every attention pair alike; measured partly cached
prefills cost 41-77% less than it predicts (`cached_prefill/table.md`), about what their new tokens
cost as a fresh prompt. This script measures, on the default model served compiled, the workloads
that tell the two rates apart (decode at short and long contexts, fresh prefills, and partly cached
prefills on a prefix-caching engine; some of each held out), then fits the model both ways on the
same steps and prints each kind's held-out error:

    unsplit   one rate for every pair (the committed profile's form)
    split     decode rows' pairs and prefill rows' pairs at rates of their own (stepfit.split_attention)

    python experiments/prefix_caching/attention_split.py [--report-only]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from specsim.io import atomic_write_text
from specsim.profiler import stepfit
from specsim.profiler.assemble import samples
from specsim.profiler.plan import MeasurePlan
from specsim.profiler.run import ProfileConfig, Profiler

HERE = Path(__file__).resolve().parent / "attention_split"


def measure() -> dict[str, Any]:
    plan = MeasurePlan(decode=[(1, 64), (4, 64), (16, 64), (1, 1000), (4, 1000), (2, 2000)],
                       decode_heldout=[(8, 64), (2, 1000)], ks=[0], steps_per_k=10,
                       prefill=[16, 256, 1024, 2000], prefill_heldout=[512], mixed=[], mixed_heldout=[],
                       mixed_ks=[0], served_rates=[], served_heldout=[], probe_starts=0, probe=[],
                       cached_prefill=[(512, 64), (1536, 512), (640, 1024)],
                       cached_prefill_heldout=[(1024, 64), (1024, 256)])
    cfg = ProfileConfig(drafters=[], skip_acceptance=True, num_prompts=4, plan=plan)
    work = Path(os.path.expanduser("~/.cache/specsim/experiments/attention_split/split.json"))
    prof = Profiler(cfg, work, resume=True, advance=lambda phase, msg: print(f"  {msg}", flush=True))
    if not prof.ckpt.done("context"):
        prof.ckpt.put("context", prof.context())
    prof._plain()
    prof._cached_prefill()
    return {k: v for k, v in prof.ckpt.records.items() if k.startswith(("workload/", "engine/", "load/"))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args(argv)
    path = HERE / "records.json"
    if not args.report_only:
        HERE.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(measure()))
    records = json.loads(path.read_text())
    ss = samples(records)
    unsplit_ss = [dataclasses.replace(s, feats=np.where(np.arange(len(s.feats)) == stepfit.PREFILL_KPAIRS, np.nan,
                                                        s.feats)) for s in ss]
    fits = {"unsplit": (stepfit.fit(unsplit_ss), unsplit_ss), "split": (stepfit.fit(ss), ss)}
    errs = {name: stepfit.errors(m, s) for name, (m, s) in fits.items()}
    kinds = sorted(set(errs["split"]) | set(errs["unsplit"]))
    lines = ["# Attention at two rates: decode rows and prefill rows", "",
             "Default model, compiled; the same recorded steps fitted both ways. Mean absolute relative error "
             "per step, by kind of workload (held-out rows are what was not fitted).", "",
             "| kind | steps | unsplit | split |", "|---|---|---|---|"]
    for k in kinds:
        u, s = errs["unsplit"].get(k, {}), errs["split"].get(k, {})
        lines.append(f"| {k} | {s.get('steps', u.get('steps'))} | {u.get('step_mean_abs_rel_error', float('nan')):.1%} "
                     f"| {s.get('step_mean_abs_rel_error', float('nan')):.1%} |")
    m_u, m_s = fits["unsplit"][0], fits["split"][0]
    lines += ["", f"Fitted rates (ms per thousand pairs): unsplit {m_u.per_kpair_ms:.3f} for every pair; split "
                  f"{m_s.per_kpair_ms:.3f} for decode rows, {m_s.per_prefill_kpair_ms or 0:.3f} for prefill rows."]
    loads = [v["load1"] for k, v in records.items() if k.startswith("load/")]
    if loads:
        lines.append(f"Load average at workload starts: {min(loads):.2f}-{max(loads):.2f}.")
    atomic_write_text(HERE / "table.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
