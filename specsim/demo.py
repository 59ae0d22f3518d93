"""`specsim demo`: the main job on the embedded default, end to end in under a minute.

Loads the committed measured profile of the default model when present (else an analytic H100
profile), synthesises traffic at a light and a heavy load, and compares speculation off with a
static K and with a schedule that switches speculation off at large batch sizes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

REPO_PROFILE = Path(__file__).resolve().parents[1] / "profiles" / "smollm2-135m-cpu.json"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="simulate the default profile with and without speculation")
    p.add_argument("--profile", type=Path, default=None, help="profile (default: the committed CPU profile)")
    p.add_argument("--requests", type=int, default=1500)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd)


def _traffic(n: int, rate: float, seed: int, in_median: int, out_median: int):  # noqa: ANN202
    from specsim.formats.traffic import Traffic

    rng = np.random.default_rng(seed)
    ts = np.cumsum(rng.exponential(1.0 / rate, n))
    inp = np.clip(rng.lognormal(np.log(in_median), 0.6, n), 8, 8 * in_median).astype(int)
    out = np.clip(rng.lognormal(np.log(out_median), 0.6, n), 4, 8 * out_median).astype(int)
    return Traffic.from_arrays(ts - ts[0], inp, out)


def _cmd(args: argparse.Namespace) -> int:
    from rich.console import Console

    from specsim.formats.policy import DrafterRef, Policy
    from specsim.formats.profile import load_profile
    from specsim.profiler.analytic import analytic_profile
    from specsim.simulator import SimConfig, simulate
    from specsim.simulator.report import summary_table

    console = Console()
    path = args.profile or (REPO_PROFILE if REPO_PROFILE.is_file() else None)
    if path is not None:
        profile = load_profile(path)
        label = f"measured profile {path.name}"
    else:
        profile = analytic_profile(target="llama-70b", drafter_model="llama-1b", gpu="h100")
        label = "analytic profile: llama-70b target, llama-1b drafter, H100 (no measured profile found)"
    console.print(f"[bold]specsim demo[/bold]: {label}")
    if not profile.drafters:
        console.print("the profile has no drafters: nothing to compare")
        return 0
    name = "draft_model" if "draft_model" in profile.drafters else sorted(profile.drafters)[0]
    spec = profile.drafters[name]
    drafter = DrafterRef(name=name, method=spec.method, model=spec.model, params=spec.params)
    k = min(4, spec.k_max, profile.k_max)
    small_b = max(2, profile.target.decode.batch_sizes[-1] // 16)
    policies = {
        "no speculation": Policy(),
        f"static K={k}": Policy.static(drafter, k),
        f"K={k} up to batch {small_b}, off above": Policy(drafter=drafter, k_schedule=[(1, small_b, k)]),
    }
    # light and heavy load: scale the arrival rate to the profile's decode speed
    step_s = profile.target.decode.step_ms[0][0] / 1e3
    out_median = 128
    single_stream_rps = 1.0 / (out_median * step_s)
    for load, factor in (("light load", 0.5), ("heavy load", 200.0)):
        traffic = _traffic(args.requests, single_stream_rps * factor, args.seed, 256, out_median)
        cfg = dict(seed=args.seed, slo_ttft=20 * out_median * step_s, slo_tpot=2 * step_s)
        summaries = {
            pname: simulate(profile, traffic, pol, SimConfig(**cfg)).summary for pname, pol in policies.items()
        }
        title = f"{load}: {len(traffic)} requests at {traffic.rate:.2f} req/s"
        console.print(summary_table(summaries, title=title))
        base = summaries["no speculation"]["tpot_mean"]
        for pname, s in summaries.items():
            if pname != "no speculation":
                console.print(f"  {pname}: mean TPOT speedup x{base / s['tpot_mean']:.2f} vs no speculation")
    return 0
