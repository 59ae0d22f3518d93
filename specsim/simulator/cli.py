"""`specsim simulate`: replay a traffic trace under a policy and report serving metrics."""

from __future__ import annotations

import argparse
from pathlib import Path

from specsim.errors import SpecsimError


def parse_duration(text: str) -> float:
    """'2s', '50ms', '1.5' (seconds) -> seconds."""
    t = text.strip().lower()
    try:
        if t.endswith("ms"):
            v = float(t[:-2]) / 1e3
        elif t.endswith("us"):
            v = float(t[:-2]) / 1e6
        elif t.endswith("s"):
            v = float(t[:-1])
        else:
            v = float(t)
    except ValueError:
        raise SpecsimError(f"cannot read duration {text!r} (use e.g. 2s or 50ms)") from None
    if not v > 0:
        raise SpecsimError(f"duration must be positive, got {text!r}")
    return v


def parse_slo(text: str | None) -> dict[str, float]:
    """'ttft=2s,tpot=50ms' -> {'ttft': 2.0, 'tpot': 0.05}."""
    out: dict[str, float] = {}
    if not text:
        return out
    for part in text.split(","):
        if "=" not in part:
            raise SpecsimError(f"cannot read SLO {part!r} (use ttft=2s,tpot=50ms)")
        key, val = (x.strip().lower() for x in part.split("=", 1))
        if key not in ("ttft", "tpot"):
            raise SpecsimError(f"unknown SLO {key!r} (known: ttft, tpot)")
        out[key] = parse_duration(val)
    return out


def add_engine_args(p: argparse.ArgumentParser) -> None:
    """Engine and load-mode options shared by simulate, tune and sweep."""
    g = p.add_argument_group("engine")
    g.add_argument("--max-num-seqs", type=int, default=256, help="max running requests per replica")
    g.add_argument("--max-num-batched-tokens", type=int, default=8192, help="token budget per step")
    g.add_argument("--kv-blocks", type=int, default=None, help="KV blocks per replica (default: profile)")
    g.add_argument("--block-size", type=int, default=16)
    g.add_argument("--no-chunked-prefill", action="store_true")
    g.add_argument("--k-basis", choices=("running", "decoding"), default="running",
                   help="batch size used for the K schedule (vLLM: running requests)")
    g.add_argument("--replicas", type=int, default=1)
    g.add_argument("--router", choices=("round_robin", "least_loaded"), default="round_robin")
    lm = p.add_argument_group("load")
    lm.add_argument("--concurrency", type=int, default=None, help="closed loop with N clients")
    lm.add_argument("--think-time", type=float, default=0.0, help="closed loop: seconds between requests")
    lm.add_argument("--rate-scale", type=float, default=1.0, help="open loop: multiply the arrival rate")
    lm.add_argument("--max-requests", type=int, default=None, help="replay only the first N requests")
    lm.add_argument("--seed", type=int, default=0)
    lm.add_argument("--slo", default=None, help="e.g. ttft=2s,tpot=50ms (for goodput)")


def config_from_args(args: argparse.Namespace):  # noqa: ANN201
    """SimConfig from the shared options."""
    from specsim.simulator.config import SimConfig

    slo = parse_slo(args.slo)
    cfg = SimConfig(
        max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens,
        block_size=args.block_size,
        num_kv_blocks=args.kv_blocks,
        chunked_prefill=not args.no_chunked_prefill,
        k_basis=args.k_basis,
        replicas=args.replicas,
        router=args.router,
        concurrency=args.concurrency,
        think_time=args.think_time,
        rate_scale=args.rate_scale,
        seed=args.seed,
        slo_ttft=slo.get("ttft"),
        slo_tpot=slo.get("tpot"),
        max_requests=args.max_requests,
    )
    cfg.validate()
    return cfg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="replay a traffic trace under a policy on a simulated engine",
        description="Replay TRAFFIC through a simulated vLLM-like engine using PROFILE's costs and "
        "acceptance traces under POLICY; print a table and write a JSON summary and per-request CSV.",
    )
    p.add_argument("--profile", required=True, type=Path)
    p.add_argument("--traffic", required=True, type=Path)
    p.add_argument("--policy", type=Path, default=None, help="policy JSON (default: no speculation)")
    p.add_argument("--compare-off", action="store_true", help="also simulate with speculation off")
    p.add_argument("--out", type=Path, default=Path("sim-out"), help="folder for summary.json, requests.csv")
    p.add_argument("--no-plot", action="store_true", help="skip run.png (batch size, K, latency CDFs)")
    add_engine_args(p)
    p.set_defaults(func=_cmd_simulate)


def _cmd_simulate(args: argparse.Namespace) -> int:
    from specsim.formats.notice import estimated_costs_notice
    from specsim.formats.policy import Policy, load_policy
    from specsim.formats.profile import load_profile
    from specsim.formats.traffic import load_traffic
    from specsim.simulator.report import print_summaries
    from specsim.simulator.run import simulate

    profile = load_profile(args.profile)
    traffic = load_traffic(args.traffic)
    policy = load_policy(args.policy) if args.policy else Policy()
    cfg = config_from_args(args)
    result = simulate(profile, traffic, policy, cfg)
    summaries = {"policy" if args.policy else "no speculation": result.summary}
    if args.compare_off and args.policy:
        off = simulate(profile, traffic, Policy(), config_from_args(args))
        summaries = {"no speculation": off.summary, **summaries}
    args.out.mkdir(parents=True, exist_ok=True)
    result.write_json(args.out / "summary.json")
    result.write_csv(args.out / "requests.csv")
    written = [args.out / "summary.json", args.out / "requests.csv"]
    if not args.no_plot:
        from specsim.simulator.plots import plot_run

        plot_run(result, args.out / "run.png", title=f"{args.traffic.name} under {args.policy or 'no speculation'}")
        written.append(args.out / "run.png")
    print_summaries(summaries, title=f"{args.traffic.name}: {len(traffic)} requests")
    if notice := estimated_costs_notice(profile):
        print(notice)
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
