"""Simulator speed: replay the whole Azure conv trace (19,366 requests) with speculation.

Prints simulated requests/s, engine steps/s and wall time for speculation off and a static K,
on the analytic 70B + 1B-drafter H100 profile. Targets (issue 13): the whole trace in under 1 s per
policy on one core; 1,000,000 synthesised requests in under 60 s and 2 GiB (`--million`).
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
    off and static K=4, one run each in a fresh process, with wall time and that process's peak memory
    (ru_maxrss: the synthesised traffic, the simulator's state and its outputs).

    NOTE: one process per policy: ru_maxrss only grows, so a second simulation in the same process would
    report the first one's leftovers (freed arrays the allocator kept) as its own peak."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    print(f"{n:,} requests synthesised from the trace's shape, each policy in a fresh process:")
    for name in ("no speculation", "static K=4"):
        with ctx.Pool(1) as pool:
            wall, peak, steps, days = pool.apply(_big_one, (profile, traffic, cases[name], n))
        print(f"{name:<22} {wall:>8.1f} s  {n / wall:>9.0f} req/s  peak memory {peak:.2f} GiB  {steps} steps  "
              f"({days:.1f} days of traffic; targets: < 60 s, < 2 GiB: "
              f"{'met' if wall < 60 and peak < 2 else 'NOT met'})")


def _big_one(profile, traffic, policy, n: int) -> tuple[float, float, int, float]:  # noqa: ANN001
    import resource

    from specsim.simulator import SimConfig, simulate
    from specsim.traffic.synth import synthesize

    simulate(profile, traffic.head(50), policy, SimConfig())  # load the compiled kernel
    big = synthesize(source=traffic, num_requests=n, seed=1)
    t0 = time.perf_counter()
    res = simulate(profile, big, policy, SimConfig())
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB on Linux
    return wall, peak, int(res.summary["steps"]), big.duration / 86400


if __name__ == "__main__":
    sys.exit(main())
