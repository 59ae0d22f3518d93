"""The tuning traffic for the fidelity study: the profile's own prompts (their real chat-template
lengths and natural output lengths, as the profiler traced them), Poisson arrivals at the study's
three open-loop loads back to back (0.3x, 0.8x and 1.3x of the simulated capacity without
speculation), 60 requests each.

    .venv/bin/python experiments/fidelity/make_tuning_traffic.py --profile profiles/smollm2-135m-cpu.json \\
        --out experiments/fidelity/tuning-traffic.jsonl
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from study import capacity, engine_limits, profile_lengths, prompt_set, trace  # noqa: E402

from specsim.formats.profile import load_profile  # noqa: E402
from specsim.formats.traffic import Traffic, save_traffic  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="profiles/smollm2-135m-cpu.json")
    ap.add_argument("--out", default="experiments/fidelity/tuning-traffic.jsonl")
    ap.add_argument("--per-load", type=int, default=60)
    args = ap.parse_args()
    profile = load_profile(args.profile)
    limits = engine_limits(profile)
    prompts, _ = prompt_set(profile)
    lengths = profile_lengths(profile)
    cap = capacity(profile, limits, prompts, lengths)
    parts, t0 = [], 0.0
    for i, frac in enumerate((0.3, 0.8, 1.3)):
        part = trace(prompts, lengths, args.per_load, cap * frac, seed=100 + i)
        ts = part.timestamps + t0
        parts.append((ts, part))
        t0 = float(ts[-1]) + 30.0  # a pause, so each load starts from an idle server
    ts = np.concatenate([p[0] for p in parts])
    cat = lambda f: [x for _, p in parts for x in f(p)]  # noqa: E731
    out = Traffic.from_arrays(ts, np.concatenate([p.input_lengths for _, p in parts]),
                              np.concatenate([p.output_lengths for _, p in parts]),
                              categories=cat(lambda p: p.categories), prompt_ids=cat(lambda p: p.prompt_ids),
                              metadata={"source": f"experiments/fidelity: the profile's prompts, Poisson at "
                                                  f"0.3/0.8/1.3 x {cap:.3f} req/s (simulated capacity), "
                                                  f"{args.per_load} each"})
    save_traffic(out, args.out)
    print(f"capacity {cap:.3f} req/s; wrote {len(ts)} requests over {ts[-1]:.0f} s to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
