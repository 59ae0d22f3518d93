"""Does a real n-gram engine cost what the profile's K-probe engine costs? A controlled check.

The fidelity study found the tuned servers' steps (n-gram 3..6, K = 1) 7-12% dearer than the
profile's model, against 0-4% for off and static K = 4. The profile measures speculative steps
through specsim's K-probe proposer (one engine at K_max that delegates to vLLM's NgramProposer),
not through the engine a policy is served with. This script serves the same open-loop traffic
(the same arrivals, prompts and seed) through, one after another, on one quiet machine:

    probe-k1   K-probe engine (num_speculative_tokens = 4), n-gram 3..6 at K = 1
    real-k1    vLLM's own n-gram engine, lookup 3..6, num_speculative_tokens = 1 (the tuned server)
    probe-k4   K-probe engine, n-gram 2..4 at K = 4
    real-k4    vLLM's own n-gram engine, lookup 2..4, num_speculative_tokens = 4 (static K = 4)

and, for each, compares every recorded step's period with the profile's prediction from the step's
own composition (sum of predicted / sum of measured, by kind of step). Resumable: every finished
engine's steps go to the checkpoint first. Usage:

    python experiments/fidelity/proposer_check.py [--out DIR] [--rate 1.2] [--requests 40]
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
from specsim.formats.profile import Profile, load_profile
from specsim.io import atomic_write_text
from specsim.profiler import keys
from specsim.profiler.engine import parse_drafter, shutdown
from specsim.profiler.plan import MeasurePlan
from specsim.profiler.run import ProfileConfig, Profiler
from specsim.profiler.stepfit import DRAFT_ROWS, FittedModel

ENGINES = [  # label, drafter, K served, engine K (num_speculative_tokens), through the K-probe?
    ("probe-k1", "ngram:min=3,max=6", 1, 4, True),
    ("real-k1", "ngram:min=3,max=6", 1, 1, False),
    ("probe-k4", "ngram", 4, 4, True),
    ("real-k4", "ngram", 4, 4, False),
]


def measure(out: Path, rate: float, requests: int, num_prompts: int) -> Profiler:
    plan = MeasurePlan(decode=[], decode_heldout=[], prefill=[16], prefill_heldout=[], mixed=[], mixed_heldout=[],
                       mixed_ks=[], served_rates=[rate], served_heldout=[], served_requests=requests,
                       probe_starts=0, probe=[])
    cfg = ProfileConfig(drafters=["ngram"], skip_acceptance=True, num_prompts=num_prompts, plan=plan)
    prof = Profiler(cfg, out / "check.json", resume=True, advance=lambda phase, msg: print(f"  {phase}: {msg}"))
    from specsim.profiler.kprobe import ENV as PROBE_ENV
    from specsim.profiler.kprobe import PROPOSER, set_probe

    for label, drafter, k, engine_k, probe in ENGINES:
        if prof.ckpt.done(keys.workload(label, "served", f"r{rate:g}")):
            continue
        d = parse_drafter(drafter)
        lookup = (int(d.params["prompt_lookup_min"]), int(d.params["prompt_lookup_max"]))
        if probe:
            pfile = prof.logdir / "kprobe.json"
            os.environ[PROBE_ENV] = str(pfile)
            set_probe(pfile, k, "ngram", lookup)
            spec = {"method": "custom_class", "model": PROPOSER, "num_speculative_tokens": engine_k}
        else:
            spec = d.speculative_config(engine_k)
        print(f"{label}: starting ({spec})", flush=True)
        llm, reader, _ = prof._start(label, spec)
        try:
            prof._warmup(llm)
            prof._served_workloads(llm, reader, label, d.name)
        finally:
            shutdown(llm)
    return prof


def model_of(profile: Profile) -> FittedModel:
    comp = profile.target.composition
    if comp is None:
        raise SpecsimError("the profile has no composition cost model")
    return FittedModel.from_composition(comp, profile.drafters)


def compare(records: dict[str, Any], model: FittedModel, rate: float) -> list[dict[str, Any]]:
    """Per engine and kind of step: steps, measured mean period, sum predicted / sum measured."""
    rows: list[dict[str, Any]] = []
    for label, drafter, k, engine_k, _ in ENGINES:
        rec = records.get(keys.workload(label, "served", f"r{rate:g}"))
        if rec is None:
            continue
        name = parse_drafter(drafter).name
        groups: dict[str, list[tuple[float, float]]] = {}
        for step in rec["steps"]:
            period, feats = float(step[0]), np.asarray(step[1:], dtype=float)
            kind = "drafts" if feats[DRAFT_ROWS] > 0 else "no drafts"
            pred = model.predict(feats, name if feats[DRAFT_ROWS] > 0 else None)
            groups.setdefault(kind, []).append((pred, period))
            groups.setdefault("all", []).append((pred, period))
        for kind, pairs in groups.items():
            a = np.asarray(pairs)
            rows.append({"engine": label, "drafter": name, "k": k, "engine_k": engine_k, "kind": kind,
                         "steps": len(a), "measured_mean_ms": float(a[:, 1].mean()),
                         "predicted_over_measured": float(a[:, 0].sum() / a[:, 1].sum())})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("experiments/fidelity/proposer_check"))
    ap.add_argument("--profile", type=Path, default=Path("profiles/smollm2-135m-cpu.json"))
    ap.add_argument("--rate", type=float, default=1.2)
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--num-prompts", type=int, default=64)
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args(argv)
    try:
        profile = load_profile(args.profile)
        args.out.mkdir(parents=True, exist_ok=True)
        records_path = args.out / "records.json"
        if not args.report_only:
            prof = measure(Path(os.path.expanduser("~/.cache/specsim/experiments/proposer_check")), args.rate,
                           args.requests, args.num_prompts)
            recs = {k: v for k, v in prof.ckpt.records.items() if k.startswith(("workload/", "engine/", "load/"))}
            atomic_write_text(records_path, json.dumps(recs))
        records = json.loads(records_path.read_text())
    except SpecsimError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    rows = compare(records, model_of(profile), args.rate)
    loads = [v["load1"] for k, v in records.items() if k.startswith("load/")]
    lines = ["# Real n-gram engines against the K-probe engine, same traffic", "",
             f"Open-loop {args.rate:g} req/s, {args.requests} requests, the same arrivals for every engine; "
             f"the profile's model ({args.profile}) predicts each recorded step from its composition.", "",
             "| engine | drafter | K | num_speculative_tokens | steps | kind | measured mean ms "
             "| predicted / measured |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['engine']} | {r['drafter']} | {r['k']} | {r['engine_k']} | {r['steps']} | {r['kind']} | "
                     f"{r['measured_mean_ms']:.1f} | {r['predicted_over_measured']:.3f} |")
    if loads:
        lines += ["", f"Load average at workload starts: {min(loads):.2f}-{max(loads):.2f}."]
    atomic_write_text(args.out / "table.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
