"""`specsim simulate`: replay a traffic trace under a policy and report serving metrics."""

from __future__ import annotations

import argparse
from pathlib import Path

from specsim.io import add_force_arg, output_path
from specsim.simulator.options import add_engine_args, config_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="replay a traffic trace under a policy on a simulated engine",
        description="Replay TRAFFIC through a simulated vLLM-like engine using PROFILE's costs and "
        "acceptance traces under POLICY; print a table and write a JSON summary and per-request CSV.",
    )
    p.add_argument("--profile", required=True, type=Path)
    p.add_argument("--traffic", required=True, type=Path)
    p.add_argument("--policy", default=None,
                   help="policy JSON, or off / static:K / static:K@DRAFTER (default: off, no speculation)")
    p.add_argument("--compare-off", action="store_true", help="also simulate with speculation off")
    p.add_argument("--out", type=output_path, default=Path("sim-out"),
                   help="folder for summary.json, requests.csv, run.png (default sim-out)")
    add_force_arg(p)
    p.add_argument("--no-plot", action="store_true", help="skip run.png (batch size, K, latency CDFs)")
    p.add_argument("--check-vllm", action="store_true",
                   help="also run the installed vLLM's own scheduler on the same inputs and report whether every "
                        "step's batch, every preemption and every finish time agree (exit 1 if not)")
    add_engine_args(p)
    p.set_defaults(func=_cmd_simulate)
    from specsim.simulator.compare import register as register_compare

    register_compare(sub)


LARGE_FLEET = 64
"""Replicas from which `simulate` says up front that the run will take a while."""
SIM_FILES = ("summary.json", "requests.csv", "run.png", "summary-off.json", "requests-off.csv")
"""Every file `simulate --out` writes: one run's set (docs/formats.md, "Output sets"); the `-off` pair is the
same traffic without speculation (--compare-off)."""


def _cmd_simulate(args: argparse.Namespace) -> int:
    import numpy as np

    from specsim.formats.notice import acceptance_notice, estimated_costs_notice
    from specsim.formats.policy import Policy, check_drafter_matches, read_policy
    from specsim.formats.profile import load_profile
    from specsim.formats.traffic import load_traffic
    from specsim.io import check_output_folder, output_set
    from specsim.simulator.report import print_summaries
    from specsim.simulator.run import simulate

    cfg = config_from_args(args)
    check_output_folder(args.out, args.force)
    profile = load_profile(args.profile)
    traffic = load_traffic(args.traffic, args.time_unit)
    policy = read_policy(args.policy, profile) if args.policy else Policy()
    check_drafter_matches(policy, profile)
    n_req = min(len(traffic), cfg.max_requests or len(traffic))
    if cfg.replicas > n_req:
        print(f"note: {cfg.replicas} replicas for {n_req} requests: at least {cfg.replicas - n_req} of them will "
              "serve nothing")
    if cfg.replicas >= LARGE_FLEET:
        print(f"simulating {cfg.replicas} replicas over {n_req} requests: a large fleet takes up to a minute and "
              "about 2 GB per thousand replicas of a long trace", flush=True)
    with output_set(args.out, SIM_FILES, force=args.force, inputs=(args.profile, args.traffic, args.policy)) as out:
        if args.check_vllm:
            from specsim.simulator.parity import check_against_vllm

            rep, result, _ = check_against_vllm(profile, traffic, policy, cfg)
            verdict = "identical" if rep.exact and rep.same_finish_times else "DIFFERENT"
            print(f"fast engine vs vLLM's scheduler: {verdict}: {rep.identical}/{rep.steps} steps identical, "
                  f"preemptions {rep.preemptions[0]}/{rep.preemptions[1]}, finished {rep.finished[0]}/"
                  f"{rep.finished[1]}"
                  + (f"; first difference at (replica, step) {rep.first_difference}" if rep.first_difference
                     else ""))
            if verdict != "identical":
                return 1
        else:
            result = simulate(profile, traffic, policy, cfg)
        summaries = {"policy" if args.policy else "no speculation": result.summary}
        off = None
        if args.compare_off and args.policy:
            off = simulate(profile, traffic, Policy(), config_from_args(args))
            summaries = {"no speculation": off.summary, **summaries}
            off.write_json(out.path("summary-off.json"))
            off.write_csv(out.path("requests-off.csv"))
        result.write_json(out.path("summary.json"))
        result.write_csv(out.path("requests.csv"))
        if not args.no_plot:
            from specsim.simulator.plots import plot_run

            plot_run(result, out.path("run.png"), off=off,
                     title=f"{args.traffic.name} under {args.policy or 'no speculation'}")
    written = [out.final(n) for n in SIM_FILES if out.final(n).exists()]
    if cfg.replicas > 1:
        served = len(np.unique(result.requests["replica"]))
        if served < cfg.replicas:
            print(f"note: {cfg.replicas - served} of {cfg.replicas} replicas served no request: this traffic needs at "
                  f"most {served} (sweep --target-qps sizes a fleet)")
    n_sim = int(result.summary.get("requests", len(traffic)))
    shown = f"{n_sim} requests" if n_sim == len(traffic) else f"{n_sim} of the trace's {len(traffic)} requests"
    print_summaries(summaries, title=f"{Path(args.traffic).name}: {shown}")
    if notice := estimated_costs_notice(profile):
        print(notice)
    for line in acceptance_notice(profile, [policy.drafter.name] if policy.drafter and policy.max_k else []):
        print(line)
    if traffic.metadata.get("lengths_estimated"):
        print(f"note: the trace's token lengths are estimates ({traffic.metadata.get('token_counts', 'estimated')}); "
              "import it with --tokenizer for exact counts")
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
