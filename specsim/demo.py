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


def _crossover_batch(profile, drafter: str, k: int) -> int:  # noqa: ANN001
    """Largest measured batch size at which K draft tokens (drafting included) cost less per token."""
    traces = profile.traces_for(drafter)
    r = np.concatenate([np.asarray(t.r if t.r is not None else [0]) for t in traces])
    tokens_per_step = 1.0 + float(np.minimum(r, k).mean())
    from specsim.simulator.costs import StepCostModel

    cost = StepCostModel(profile, drafter, b_max=max(profile.target.decode.batch_sizes))
    best = 1
    for b in profile.target.decode.batch_sizes:
        if cost.decode_s(b, k) / tokens_per_step < cost.decode_s(b, 0):
            best = b
    return best


def _cmd(args: argparse.Namespace) -> int:
    from rich.console import Console

    from specsim.errors import SpecsimError
    from specsim.formats.notice import estimated_costs_notice
    from specsim.formats.policy import DrafterRef, Policy
    from specsim.formats.profile import load_profile
    from specsim.profiler.analytic import analytic_profile
    from specsim.simulator import SimConfig, simulate
    from specsim.simulator.report import summary_table

    if not 2 <= args.requests <= 1_000_000:
        raise SpecsimError(f"--requests must lie in 2..1000000, got {args.requests}")
    if not 0 <= args.seed < 1 << 32:
        raise SpecsimError(f"--seed must lie in 0..2^32-1, got {args.seed}")
    console = Console()
    path = args.profile or (REPO_PROFILE if REPO_PROFILE.is_file() else None)
    if path is not None:
        profile = load_profile(path)
        label = f"{profile.metadata.source} profile {path.name}"
    else:
        profile = analytic_profile(target="llama-70b", drafter_model="llama-1b", gpu="h100")
        label = "analytic profile: llama-70b target, llama-1b drafter, H100 (no measured profile found)"
    console.print(f"[bold]specsim demo[/bold]: {label}")
    if notice := estimated_costs_notice(profile):
        console.print(notice)
    if not profile.drafters:
        console.print("the profile has no drafters: nothing to compare")
        return 0
    name = "draft_model" if "draft_model" in profile.drafters else sorted(profile.drafters)[0]
    spec = profile.drafters[name]
    drafter = DrafterRef.from_profile(profile, name)
    k = min(4, spec.k_max, profile.k_max)
    dec = profile.target.decode
    cutoff = _crossover_batch(profile, name, k)
    policies = {
        "no speculation": Policy(),
        f"static K={k}": Policy.static(drafter, k),
        f"K={k} up to batch {cutoff}, off above": Policy(drafter=drafter, k_schedule=[(1, cutoff, k)]),
    }
    # load as closed-loop clients: one (light) and the largest measured batch (heavy); SLOs from the profile
    step_s = dec.step_ms[0][0] / 1e3
    prefill_s = float(np.interp(256, profile.target.prefill.tokens, profile.target.prefill.step_ms)) / 1e3
    slo = dict(slo_ttft=5 * prefill_s + 10 * step_s, slo_tpot=3 * step_s)
    console.print(f"SLOs: TTFT <= {slo['slo_ttft']:.2f} s, TPOT <= {slo['slo_tpot'] * 1e3:.0f} ms")
    heavy = min(dec.batch_sizes[-1], 128)
    traffic = _traffic(args.requests, 1.0, args.seed, 256, 128)
    for load, clients in (("light load", 1), ("heavy load", heavy)):
        summaries = {
            pname: simulate(profile, traffic, pol, SimConfig(seed=args.seed, concurrency=clients, **slo)).summary
            for pname, pol in policies.items()
        }
        title = f"{load}: {clients} concurrent client{'s' if clients > 1 else ''}, {len(traffic)} requests"
        console.print(summary_table(summaries, title=title))
        base = summaries["no speculation"]
        for pname, s in summaries.items():
            if pname != "no speculation":
                console.print(
                    f"  {pname}: throughput x{s['output_tokens_per_s'] / base['output_tokens_per_s']:.2f}, "
                    f"mean TPOT x{base['tpot_mean'] / s['tpot_mean']:.2f} faster than no speculation"
                )
    return 0
