"""What does a partly cached prefill cost, and does the profile's composition model predict it?

vLLM with prefix caching on computes only a prompt's uncached tokens, which attend over the cached
context. The composition model costs a step from its composition (tokens, requests, attention
pairs): a partly cached prefill is its new tokens plus their attention pairs over the cached
context, nothing fitted for it. This script measures such steps on the default model (compiled, as
the committed profile was measured) through the profiler's own `cached_prefill` workload: a prompt
of C tokens, then the same prompt extended by N tokens. For each (C, N) it prints the measured step,
the profile's prediction, and two naive alternatives: the N tokens as a fresh prompt (ignores the
cached context) and the whole C + N prompt recomputed (ignores the cache).

    python experiments/prefix_caching/cached_prefill_check.py [--report-only]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from specsim.errors import SpecsimError
from specsim.formats.profile import load_profile
from specsim.io import atomic_write_text
from specsim.profiler import keys
from specsim.profiler.plan import MeasurePlan
from specsim.profiler.run import ProfileConfig, Profiler
from specsim.profiler.stepfit import KPAIRS, N_FEATURES, PREFILL_KPAIRS, REQUESTS, TOKENS, FittedModel

POINTS = [(512, 64), (1024, 64), (1024, 256), (1536, 512), (640, 1024)]
HERE = Path(__file__).resolve().parent


def measure(work: Path) -> dict[str, Any]:
    plan = MeasurePlan(decode=[], decode_heldout=[], prefill=[16], prefill_heldout=[], mixed=[], mixed_heldout=[],
                       mixed_ks=[], served_rates=[], served_heldout=[], probe_starts=0, probe=[],
                       cached_prefill=list(POINTS))
    cfg = ProfileConfig(drafters=[], skip_acceptance=True, num_prompts=4, plan=plan)
    prof = Profiler(cfg, work, resume=True, advance=lambda phase, msg: print(f"  {msg}", flush=True))
    prof._cached_prefill()
    return {k: v for k, v in prof.ckpt.records.items() if k.startswith(("workload/", "engine/", "load/"))}


def predict(model: FittedModel, tokens: float, kpairs: float) -> float:
    f = np.zeros(N_FEATURES)
    f[TOKENS], f[REQUESTS], f[KPAIRS], f[PREFILL_KPAIRS] = tokens, 1, kpairs, kpairs
    return model.predict(f, None)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", type=Path, default=Path("profiles/smollm2-135m-cpu.json"))
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args(argv)
    records_path = HERE / "cached_prefill" / "records.json"
    try:
        profile = load_profile(args.profile)
        if not args.report_only:
            recs = measure(Path(os.path.expanduser("~/.cache/specsim/experiments/cached_prefill/check.json")))
            records_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(records_path, json.dumps(recs))
        records = json.loads(records_path.read_text())
    except (SpecsimError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    comp = profile.target.composition
    assert comp is not None
    model = FittedModel.from_composition(comp)
    lines = ["# Partly cached prefills: measured against the profile's composition model", "",
             f"Default model, compiled, prefix caching on; profile {args.profile.name}. One request: a prompt of C "
             "tokens, then the same prompt extended by N tokens; the second request's prefill steps "
             "(chunked at the engine's 2,048-token budget) are what is measured.", "",
             "| cached C | new N | cached by vLLM | steps | measured ms | composition model | error | "
             "N as a fresh prompt | C + N recomputed |", "|---|---|---|---|---|---|---|---|---|"]
    errs = []
    for c, n in POINTS:
        rec = records.get(keys.workload("prefix", "cached_prefill", f"c{c}-n{n}"))
        if rec is None:
            continue
        pre = [s for s in rec["steps"] if s[1 + TOKENS] > 1]
        if not pre:
            continue
        meas = sum(s[0] for s in pre)
        pred = sum(predict(model, s[1 + TOKENS], s[1 + KPAIRS]) for s in pre)
        computed = sum(s[1 + TOKENS] for s in pre)
        cached = c + n - computed
        fresh = predict(model, computed, computed * (computed + 1) / 2000.0)
        total = c + n
        full = predict(model, total, total * (total + 1) / 2000.0)
        errs.append(pred / meas - 1)
        lines.append(f"| {c} | {n} | {cached} | {len(pre)} | {meas:.1f} | {pred:.1f} | {pred / meas - 1:+.1%} | "
                     f"{fresh:.1f} ({fresh / meas - 1:+.0%}) | {full:.1f} ({full / meas - 1:+.0%}) |")
    loads = [v["load1"] for k, v in records.items() if k.startswith("load/")]
    if errs:
        lines += ["", f"Mean absolute error of the composition model: {np.mean(np.abs(errs)):.1%} "
                      f"(max {np.max(np.abs(errs)):.1%}) over {len(errs)} points."]
    if loads:
        lines += [f"Load average at workload starts: {min(loads):.2f}-{max(loads):.2f}."]
    atomic_write_text(HERE / "cached_prefill" / "table.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
