"""Simulator speed: replay the whole Azure conv trace (19,366 requests) with speculation.

Prints simulated requests/s, engine steps/s and wall time for speculation off and a static K,
on the analytic 70B + 1B-drafter H100 profile. Target: the whole trace in under 10 s on 2 cores.
Run: .venv/bin/python benchmarks/sim_speed.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

from specsim.shared_data import azure_trace_path

TRACE = azure_trace_path("conv")


def main() -> int:
    from specsim.formats.policy import DrafterRef, Policy
    from specsim.profiler.analytic import analytic_profile
    from specsim.simulator import SimConfig, simulate
    from specsim.traffic.azure import import_azure

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--trace", type=Path, default=TRACE)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--million", type=int, default=1_000_000,
                    help="also simulate this many requests synthesised from the trace's shape (0: skip)")
    args = ap.parse_args()
    if not args.trace.is_file():
        print(f"skipped: {args.trace} not present")
        return 0
    traffic = import_azure(args.trace)
    profile = analytic_profile(target="llama-70b", drafter_model="llama-1b", gpu="h100",
                               calibrated=False)  # the profile of the recorded history
    draft = DrafterRef(name="draft_model", method="draft_model", model="llama-1b")
    cases = {
        "no speculation": Policy(),
        "static K=4": Policy.static(draft, 4),
        "K=4 up to batch 32": Policy(drafter=draft, k_schedule=[(1, 32, 4)]),
    }
    print(f"trace: {args.trace.name}, {len(traffic)} requests over {traffic.duration:.0f} s; "
          f"profile: {profile.metadata.hardware}; python {platform.python_version()}")
    print(f"{'policy':<22} {f'wall s (best of {args.repeats})':>20} {'sim req/s':>10} {'steps':>8} {'steps/s':>9}")
    for name, pol in cases.items():
        walls = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            res = simulate(profile, traffic, pol, SimConfig())
            walls.append(time.perf_counter() - t0)
        best = min(walls)
        s = res.summary
        print(f"{name:<22} {best:>20.2f} {len(traffic) / best:>10.0f} {s['steps']:>8} {s['steps'] / best:>9.0f}")
    print("target: the whole trace in under 1 s per policy (speculation off and K=4)")
    if args.million:
        big_run(profile, traffic, cases, args.million)
    return 0


def big_run(profile, traffic, cases, n: int) -> None:  # noqa: ANN001 - benchmark glue
    """n requests synthesised from the trace's shape (its rate and resampled whole requests), speculation
    off and static K=4, one run each, with wall time and peak memory (ru_maxrss of this process)."""
    import resource

    from specsim.simulator import SimConfig, simulate
    from specsim.traffic.synth import synthesize

    big = synthesize(source=traffic, num_requests=n, seed=1)
    print(f"{n:,} requests synthesised from the trace's shape: {big.duration / 86400:.1f} days of traffic")
    for name in ("no speculation", "static K=4"):
        t0 = time.perf_counter()
        res = simulate(profile, big, cases[name], SimConfig())
        wall = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB on Linux
        print(f"{name:<22} {wall:>8.1f} s  {n / wall:>9.0f} req/s  peak memory {peak:.2f} GiB  "
              f"{res.summary['steps']} steps  (targets: < 60 s, < 2 GiB: "
              f"{'met' if wall < 60 and peak < 2 else 'NOT met'})")


if __name__ == "__main__":
    sys.exit(main())
