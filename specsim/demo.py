"""`specsim demo`: the main job on the embedded default, end to end, in under two minutes.

The steps a user takes with their own profile and trace, on the committed profile of the default
model (an analytic H100 profile when none is found):

1. **traffic**: a window of the Azure LLM conversation trace when the shared data is present
   (`../shared/data/traces`), otherwise a synthetic trace of the same kind;
2. **capacity without tuning**: a load sweep of speculation off and static K finds where
   speculation stops paying and the most load each meets the SLO at, which places three loads:
   light, near the crossover, and loaded but inside the SLO;
3. **tune**: the trace's shape replayed at those three loads, searched with Optuna (progress bar);
4. **the tuned policy against its baselines** at the three loads;
5. **capacity**: max QPS per replica under the SLO, and replicas for a target QPS;
6. **export**: the exact `vllm serve` line that enforces the policy;
7. **report**: `report.md`, `demo.png`, `policy.json` and the sweep's files in `--out`.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from specsim.io import add_force_arg, output_path

REPO_PROFILE = Path(__file__).resolve().parents[1] / "profiles" / "smollm2-135m-cpu.json"
ATTAINMENT = 0.95
"""'Under the SLO': at least this share of requests meets it (the demo's traces are short)."""
DEMO_FILES = ("report.md", "demo.png", "policy.json", "vllm-serve.sh")
"""What `specsim demo --out` writes besides the sweep's own files (sweep/)."""


@dataclass
class DemoConfig:
    """The demo's sizes (the CLI's defaults are these; `quick()` is the test's short variant)."""

    requests: int = 300
    """Requests in the traffic window (each load level replays all of them)."""
    trials: int = 40
    """Optuna trials of the tuner."""
    rates: int = 9
    """Offered loads of each capacity sweep (log-spaced)."""
    max_input_tokens: int = 1536
    """Longer prompts are clipped (the default model serves 2,314-token contexts)."""
    max_output_tokens: int = 384
    seed: int = 0
    target_qps_factor: float = 10.0
    """The capacity question asks for replicas at this multiple of one replica's loaded rate."""
    loads: dict[str, float] = field(default_factory=dict)

    @classmethod
    def quick(cls) -> DemoConfig:
        return cls(requests=80, trials=8, rates=5)


def register(sub: argparse._SubParsersAction) -> None:
    d = DemoConfig()
    p = sub.add_parser("demo", help="the whole pipeline on the default profile: traffic, tune, compare, "
                                    "capacity, export, report")
    p.add_argument("--profile", type=Path, default=None, help="profile (default: the committed CPU profile)")
    p.add_argument("--traffic", type=Path, default=None,
                   help="traffic JSONL (default: the Azure conv trace's first requests, else synthetic)")
    p.add_argument("--out", type=output_path, default=Path("specsim-demo"),
                   help="folder for the report (default: %(default)s)")
    add_force_arg(p)
    q = DemoConfig.quick()
    p.add_argument("--requests", type=int, default=None,
                   help=f"requests per load level (default: {d.requests}; {q.requests} with --quick)")
    p.add_argument("--trials", type=int, default=None,
                   help=f"tuner trials (default: {d.trials}; {q.trials} with --quick)")
    p.add_argument("--quick", action="store_true", help="a smaller run (seconds): fewer requests, trials and loads")
    p.add_argument("--seed", type=int, default=d.seed)
    p.set_defaults(func=_cmd)


# --- inputs ------------------------------------------------------------------------------------
def demo_profile(path: Path | None) -> tuple[Any, str]:
    """The profile and a one-line description of where it came from."""
    from specsim.formats.profile import load_profile
    from specsim.profiler.analytic import analytic_profile

    path = path or (REPO_PROFILE if REPO_PROFILE.is_file() else None)
    if path is not None:
        profile = load_profile(path)
        return profile, f"{profile.metadata.source} profile {path.name}"
    return (analytic_profile(target="llama-70b", drafter_model="llama-1b", gpu="h100"),
            "analytic profile: llama-70b target, llama-1b drafter, H100 (no measured profile found)")


def demo_traffic(cfg: DemoConfig, path: Path | None = None) -> tuple[Any, str]:
    """The traffic shape: a given trace, the Azure conv trace's first requests, or synthetic."""
    from specsim.formats.traffic import Traffic, load_traffic
    from specsim.shared_data import azure_trace_path
    from specsim.traffic.azure import import_azure

    if path is not None:
        tr, what = load_traffic(path).head(cfg.requests), f"{path.name}"
    elif azure_trace_path("conv").is_file():
        tr = import_azure(azure_trace_path("conv"), limit=cfg.requests)
        what = f"the first {len(tr)} requests of the Azure LLM inference trace (conv, 2023)"
    else:
        rng = np.random.default_rng(cfg.seed)
        n = cfg.requests
        ts = np.cumsum(rng.exponential(1.0, n))
        inp = np.clip(rng.lognormal(np.log(1000), 0.8, n), 16, 8192).astype(int)
        out = np.clip(rng.lognormal(np.log(200), 0.9, n), 4, 2048).astype(int)
        tr = Traffic.from_arrays(ts - ts[0], inp, out, ["conv"] * n, metadata={"source": "synthetic, Azure-conv-like"})
        what = f"{n} synthetic requests shaped like Azure's conversation trace (no shared data found)"
    inp = np.minimum(tr.input_lengths, cfg.max_input_tokens)
    out = np.minimum(tr.output_lengths, cfg.max_output_tokens)
    clipped = int(np.sum((inp != tr.input_lengths) | (out != tr.output_lengths)))
    tr = Traffic.from_arrays(tr.timestamps - tr.timestamps[0], inp, out, tr.categories, tr.request_ids,
                             tr.metadata, prompt_ids=tr.prompt_ids)
    if clipped:
        what += (f"; {clipped} requests clipped to {cfg.max_input_tokens} prompt / {cfg.max_output_tokens} "
                 "output tokens")
    return tr, what


def demo_slo(profile: Any, traffic: Any, rate: float, seed: int) -> dict[str, float]:
    """An SLO with headroom that this deployment meets when lightly loaded: 1.5 times the p99 TTFT and
    p99 TPOT of speculation off at `rate` (a user brings their own SLO with `tune --slo`)."""
    from specsim.formats.policy import Policy
    from specsim.simulator import simulate

    s = simulate(profile, traffic.rate_scaled(rate / traffic.rate), Policy(), engine_config(profile, seed)).summary
    return {"ttft": float(f"{1.5 * s['ttft_p99']:.2g}"), "tpot": float(f"{1.5 * s['tpot_p99']:.2g}")}


def engine_config(profile: Any, seed: int, slo: dict[str, float] | None = None) -> Any:
    """SimConfig at the engine limits the profile measured (so nothing is extrapolated)."""
    from specsim.simulator import SimConfig

    comp = profile.target.composition
    seqs, tokens = 256, 8192
    if comp is not None and comp.measured:
        seqs = int(comp.measured.get("requests", seqs))
        tokens = int(comp.measured.get("tokens", tokens))
    return SimConfig(max_num_seqs=seqs, max_num_batched_tokens=max(tokens, seqs), seed=seed,
                     slo_ttft=slo["ttft"] if slo else None, slo_tpot=slo["tpot"] if slo else None)


def rough_capacity(profile: Any, traffic: Any) -> float:
    """Requests/s one replica could at best serve without speculation: each request's prefill, plus
    its output tokens at the best measured decode throughput."""
    dec, pre = profile.target.decode, profile.target.prefill
    per_token_s = min((row[0] / 1e3) / b for b, row in zip(dec.batch_sizes, dec.step_ms, strict=True))
    prefill_s = np.interp(traffic.input_lengths.astype(float), pre.tokens, pre.step_ms) / 1e3
    return 1.0 / float(np.mean(prefill_s + traffic.output_lengths * per_token_s))


def place_loads(first: Any) -> dict[str, float]:
    """Light, crossover and loaded-inside-the-SLO rates from a sweep of off and static K."""
    from specsim.tuner.sweep import OFF

    rates = first.rates
    caps = [f.get("max_qps_per_replica") for f in first.findings.values()]
    cap = max([c for c in caps if c], default=rates[len(rates) // 2])
    loaded = 0.8 * cap
    light = loaded / 8
    stop = [f.get("speculation_stops_paying_qps") for n, f in first.findings.items() if n != OFF]
    cross = next((s for s in stop if s), None)
    if cross is not None and light < cross < loaded:
        return {"light": light, "crossover": cross, "loaded": loaded}
    # NOTE: static K pays (or loses) at every load inside the SLO: no crossover to stand near
    return {"light": light, "middle": math.sqrt(light * loaded), "loaded": loaded}


# --- the run -----------------------------------------------------------------------------------
def run_demo(cfg: DemoConfig, out: Path, profile_path: Path | None = None, traffic_path: Path | None = None,
             say: Any = print, progress: bool = True, force: bool = False) -> dict[str, Any]:
    """Run every step; write the report set into `out`; return what the report says."""
    from specsim.errors import SpecsimError
    from specsim.formats.notice import estimated_costs_notice
    from specsim.formats.policy import DrafterRef, Policy, save_policy
    from specsim.io import atomic_write_text, check_output_folder, output_set
    from specsim.policies.export import to_vllm
    from specsim.simulator import simulate
    from specsim.tuner.loads import multi_load
    from specsim.tuner.objectives import Objective
    from specsim.tuner.space import SearchSpace, describe, measured_batch_cap
    from specsim.tuner.study import StudySettings
    from specsim.tuner.sweep import run_sweep, sweep_policies, write_sweep
    from specsim.tuner.tune import tune

    check_output_folder(out, force, "demo output folder")
    profile, label = demo_profile(profile_path)
    say(f"profile: {label}")
    if notice := estimated_costs_notice(profile):
        say(notice)
    if not profile.drafters:
        raise SpecsimError("the profile has no drafters: nothing to tune")
    traffic, what = demo_traffic(cfg, traffic_path)
    say(f"traffic: {what}")
    cap = rough_capacity(profile, traffic)
    slo = demo_slo(profile, traffic, cap / 20, cfg.seed)
    sim = engine_config(profile, cfg.seed, slo)
    say(f"SLO: TTFT <= {slo['ttft']:g} s, TPOT <= {slo['tpot'] * 1e3:g} ms (1.5 x p99 without speculation "
        "at light load)")

    # 1. where speculation stops paying, without tuning
    name = sorted(profile.drafters)[0]
    k = profile.drafters[name].static_ks(min(4, profile.k_max))[-1]
    static = Policy.static(DrafterRef.from_profile(profile, name), k)
    rates = list(np.geomspace(cap / 20, 1.5 * cap, cfg.rates))
    first = run_sweep(profile, traffic, sweep_policies(profile, static, k), rates, sim, attainment=ATTAINMENT)
    loads = place_loads(first)
    say("loads: " + ", ".join(f"{n} {r:.3g} req/s" for n, r in loads.items())
        + ("" if "crossover" in loads else " (static K pays, or loses, at every load inside the SLO: no crossover)"))

    # 2. tune across the three loads
    shape = multi_load(traffic, list(loads.values()))
    objective = Objective.parse("goodput", {"ttft": slo["ttft"], "tpot": slo["tpot"]})
    space = SearchSpace.for_profile(profile, max_batch=measured_batch_cap(profile, sim.max_num_seqs))
    settings = StudySettings(n_trials=cfg.trials, seed=cfg.seed, progress=progress)
    say(f"tuning: {cfg.trials} trials, {objective.describe()}, {len(shape)} requests over three loads")
    result = tune(profile, shape, objective, space, sim, settings, default_k=k)
    policy = result.policy
    say(f"policy: {describe(policy)}" + (f" ({result.held_back})" if result.held_back else ""))

    # 3. the policy against its baselines at each load, and capacity
    # the policy, speculation off and static K (the tuner's other baselines are in its provenance)
    policies = dict(list(sweep_policies(profile, policy, k).items())[:3])
    compare: dict[str, dict[str, dict[str, float]]] = {}
    for load, rate in loads.items():
        tr = traffic.rate_scaled(rate / traffic.rate)
        compare[load] = {n: simulate(profile, tr, p, sim).summary for n, p in policies.items()}
    target_qps = round(cfg.target_qps_factor * loads["loaded"], 3)
    rates = list(np.geomspace(min(rates[0], 0.8 * loads["light"]), rates[-1], cfg.rates))
    final = run_sweep(profile, traffic, policies, rates, sim, attainment=ATTAINMENT, target_qps=target_qps)
    exp = to_vllm(policy, max_num_seqs=sim.max_num_seqs, lossy=True)
    from specsim.models.prepare import DEFAULT_FOLDER, models_dir

    model = str(models_dir() / DEFAULT_FOLDER) if profile_path is None and REPO_PROFILE.is_file() else "MODEL"
    serve_line = exp.command(model)

    # 4. the report
    facts = {"profile": label, "traffic": what, "slo": slo, "loads": loads, "policy": describe(policy),
             "chosen": result.chosen, "compare": compare, "findings": final.findings, "target_qps": target_qps,
             "serve": serve_line, "export_notes": exp.notes + exp.unsupported}
    sweep_dir = out / "sweep"
    with output_set(out, DEMO_FILES, force=force, inputs=(profile_path, traffic_path)) as files:
        save_policy(policy, files.path("policy.json"))
        atomic_write_text(files.path("vllm-serve.sh"), "#!/bin/sh\n" + serve_line + "\n")
        plot_demo(final, loads, slo, files.path("demo.png"))
        atomic_write_text(files.path("report.md"), report(facts))
    write_sweep(final, sweep_dir, force)
    for line in console_lines(facts):
        say(line)
    say(f"wrote {out / 'report.md'}, {out / 'demo.png'}, {out / 'policy.json'} and {sweep_dir}/")
    return facts


def _pct(a: float, b: float) -> str:
    return f"{a / b - 1:+.0%}" if b and math.isfinite(a) and math.isfinite(b) else "n/a"


def comparison_rows(facts: dict[str, Any]) -> list[list[str]]:
    """One row per (load, policy): mean TPOT, p99 TTFT, goodput, and TPOT against speculation off."""
    from specsim.tuner.sweep import OFF

    rows = []
    for load, by_policy in facts["compare"].items():
        off = by_policy.get(OFF, {})
        for name, s in by_policy.items():
            rows.append([f"{load} ({facts['loads'][load]:.3g} req/s)", name,
                         f"{s.get('tpot_mean', math.nan) * 1e3:.1f}", f"{s.get('ttft_p99', math.nan):.2f}",
                         f"{s.get('goodput_rps', math.nan):.3g}",
                         "" if name == OFF else _pct(s.get("tpot_mean", math.nan), off.get("tpot_mean", math.nan))])
    return rows


def capacity_lines(facts: dict[str, Any]) -> list[str]:
    out = []
    for name, f in facts["findings"].items():
        mq = f.get("max_qps_per_replica")
        q = "n/a (misses the SLO at the lightest load)" if mq is None else (
            f"{'>= ' if f.get('max_qps_is_lower_bound') else ''}{mq:.3g} req/s")
        rep = f.get("replicas_needed")
        out.append(f"{name}: max QPS per replica under the SLO {q}; replicas for {facts['target_qps']:g} req/s: "
                   f"{rep if rep else 'n/a'}")
    return out


def console_lines(facts: dict[str, Any]) -> list[str]:
    lines = ["", "load / policy: mean TPOT ms, p99 TTFT s, goodput req/s, TPOT against off"]
    lines += ["  " + " | ".join(r) for r in comparison_rows(facts)]
    lines += ["", "capacity:"] + ["  " + line for line in capacity_lines(facts)]
    lines += ["", "vLLM command that enforces the policy:", "  " + facts["serve"]]
    return lines


def report(facts: dict[str, Any]) -> str:
    """The demo's Markdown report."""
    slo = facts["slo"]
    lines = ["# specsim demo", "",
             f"- Profile: {facts['profile']}", f"- Traffic: {facts['traffic']}",
             f"- SLO: TTFT <= {slo['ttft']:g} s, TPOT <= {slo['tpot'] * 1e3:g} ms",
             "- Loads: " + ", ".join(f"{n} {r:.3g} req/s" for n, r in facts["loads"].items()),
             f"- Tuned policy: **{facts['policy']}**"
             + ("" if facts["chosen"] == "tuned" else f" (a baseline, `{facts['chosen']}`, beat every tuned trial)"),
             "", "![latency and SLO attainment against load](demo.png)", "",
             "## The policy against its baselines", "",
             "| load | policy | mean TPOT (ms) | p99 TTFT (s) | goodput (req/s) | TPOT vs off |",
             "|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(r) + " |" for r in comparison_rows(facts)]
    lines += ["", "## Capacity", ""] + [f"- {line}" for line in capacity_lines(facts)]
    lines += ["", "## Serve it", "", "```sh", facts["serve"], "```"]
    if facts["export_notes"]:
        lines += [""] + [f"- {n}" for n in facts["export_notes"]]
    lines += ["", "The full load sweep (tables, plots) is in `sweep/`; the policy file is `policy.json`.", ""]
    return "\n".join(lines)


def plot_demo(res: Any, loads: dict[str, float], slo: dict[str, float], path: Path) -> None:
    """Two panels against offered load: mean TPOT per policy, and SLO attainment; the three loads marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for name, rows in res.rows.items():
        ax1.plot(res.rates, [r.get("tpot_mean", math.nan) * 1e3 for r in rows], marker="o", label=name)
        ax2.plot(res.rates, [r.get("slo_attainment", math.nan) * 100 for r in rows], marker="o", label=name)
    ax1.axhline(slo["tpot"] * 1e3, color="grey", ls=":", lw=1, label="TPOT SLO")
    ax2.axhline(res.attainment * 100, color="grey", ls=":", lw=1, label=f"{res.attainment:.0%} target")
    for ax in (ax1, ax2):
        for n, r in loads.items():
            ax.axvline(r, color="black", lw=0.6, alpha=0.4)
            ax.annotate(n, (r, 1), xycoords=("data", "axes fraction"), rotation=90, va="top", ha="right",
                        fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("offered load (req/s per replica)")
        ax.grid(alpha=0.3)
    ax1.set_yscale("log")
    ax1.set_ylabel("mean TPOT (ms)")
    ax2.set_ylabel("requests within the SLO (%)")
    ax1.legend(fontsize=8)
    ax1.set_title("latency")
    ax2.set_title("SLO attainment")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _cmd(args: argparse.Namespace) -> int:
    from specsim.errors import SpecsimError

    cfg = DemoConfig.quick() if args.quick else DemoConfig()
    cfg = replace(cfg, seed=args.seed, requests=cfg.requests if args.requests is None else args.requests,
                  trials=cfg.trials if args.trials is None else args.trials)
    if not 20 <= cfg.requests <= 100_000:
        raise SpecsimError(f"--requests must lie in 20..100000, got {cfg.requests}")
    if not 1 <= cfg.trials <= 10_000:
        raise SpecsimError(f"--trials must lie in 1..10000, got {cfg.trials}")
    if not 0 <= cfg.seed < 1 << 32:
        raise SpecsimError(f"--seed must lie in 0..2^32-1, got {cfg.seed}")
    run_demo(cfg, args.out, args.profile, args.traffic, progress=sys.stderr.isatty(), force=args.force)
    return 0
