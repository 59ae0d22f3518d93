"""`specsim sweep`: the capacity planner's view of a policy against offered load.

The traffic shape (arrival pattern and lengths of a trace) is rate-scaled to each offered load and
replayed under the policy and its baselines. Speedup at a load is speculation's per-token latency
gain: mean TPOT with speculation off divided by mean TPOT under the policy; speculation stops
paying where it falls below 1. The maximum QPS under the SLO is the highest load at which at least
`attainment` of the requests meet it (interpolated in log load between the last passing and the
first failing point).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from specsim.errors import SpecsimError
from specsim.formats.policy import Policy
from specsim.formats.profile import Profile
from specsim.formats.traffic import Traffic
from specsim.io import atomic_write_text, output_set
from specsim.simulator.config import SimConfig
from specsim.simulator.run import check_policy, simulate
from specsim.tuner.evaluate import slim, with_goodput
from specsim.tuner.names import OFF, TUNED  # re-exported: sweep.OFF, sweep.TUNED
from specsim.tuner.objectives import DEFAULT_SLO
from specsim.tuner.parallel import pmap
from specsim.tuner.space import describe, drafter_ref


def sweep_policies(profile: Profile, policy: Policy, default_k: int = 4) -> dict[str, Policy]:
    """The policy, speculation off, the untuned static K, and the best static K it was tuned against."""
    out: dict[str, Policy] = {TUNED: policy, OFF: Policy()}
    name = policy.drafter.name if policy.drafter is not None else next(iter(profile.drafters), None)
    if name is not None and name in profile.drafters:
        ks = profile.drafters[name].static_ks(min(default_k, profile.k_max))
        k = ks[-1] if ks else 0
        if k >= 1:
            out[f"static K={k} ({name})"] = Policy.static(drafter_ref(profile, name), k)
    for bname, b in policy.provenance.baselines.items():
        if not bname.startswith("best static") or b.get("drafter") not in profile.drafters:
            continue
        sched = [tuple(r) for r in b.get("k_schedule", [])]
        cand = Policy(drafter=drafter_ref(profile, b["drafter"]), k_schedule=sched) if sched else Policy()
        if all(cand.k_schedule != p.k_schedule or cand.drafter != p.drafter for p in out.values()):
            out[bname] = cand
    for p in out.values():
        check_policy(profile, p)
    return out


@dataclass
class SweepResult:
    """Metrics per (policy, offered load) and the capacity planner's conclusions."""

    rates: list[float]
    policies: dict[str, Policy]
    rows: dict[str, list[dict[str, float]]]
    """rows[policy][i]: slim summary at rates[i]."""
    k_by_batch: dict[str, dict[int, float]]
    """Observed mean K per (K-basis) batch size, over all loads."""
    slo: dict[str, float]
    attainment: float
    replicas: int
    max_num_seqs: int
    target_qps: float | None = None
    findings: dict[str, Any] = field(default_factory=dict)
    slo_is_default: bool = False
    """No SLO was given: the capacity findings use DEFAULT_SLO."""

    def speedup(self, name: str) -> list[float]:
        """Mean TPOT of speculation off over that of `name`, per load."""
        off = self.rows[OFF]
        out = []
        for a, b in zip(off, self.rows[name], strict=True):
            ta, tb = a.get("tpot_mean", math.nan), b.get("tpot_mean", math.nan)
            out.append(ta / tb if tb and math.isfinite(ta) and math.isfinite(tb) else math.nan)
        return out

    def summary_text(self) -> str:
        """The findings as console lines."""
        slo = ", ".join(f"{k.upper()} <= {v * 1e3:g} ms" for k, v in self.slo.items())
        lines = [f"SLO: {slo}" + (" (the default; set it with --slo)" if self.slo_is_default else "")]
        for name, f in self.findings.items():
            stop = f.get("speculation_stops_paying_qps")
            mq = f.get("max_qps_per_replica")
            line = f"{name}: "
            if name != OFF:
                line += ("speculation pays at every load swept" if stop is None
                         else f"speculation stops paying at ~{stop:.3g} req/s") + "; "
            line += f"max QPS per replica under SLO {_fmt_q(mq)}"
            if self.target_qps is not None:
                line += f"; replicas for {self.target_qps:g} QPS: {f.get('replicas_needed') or 'n/a'}"
            lines.append(line)
        return "\n".join(lines)


def _fmt_q(x: float | None) -> str:
    return "n/a (SLO missed at the lowest load)" if x is None else f"{x:.3g} req/s"


def _run_case(arg: tuple[Profile, Traffic, Policy, SimConfig]) -> tuple[dict[str, float], dict[int, list[float]]]:
    profile, traffic, policy, cfg = arg
    res = simulate(profile, traffic, policy, dataclasses.replace(cfg))
    steps = res.steps
    dec = steps["decoding"] > 0
    b = steps["basis_batch"][dec].astype(np.int64)
    k = steps["k"][dec].astype(np.float64)
    kb: dict[int, list[float]] = {}
    if len(b):
        sums = np.bincount(b, weights=k)
        counts = np.bincount(b)
        for bb in np.nonzero(counts)[0]:
            kb[int(bb)] = [float(sums[bb]), float(counts[bb])]
    return slim(with_goodput(res.summary, traffic, cfg)), kb


def run_sweep(
    profile: Profile,
    shape: Traffic,
    policies: dict[str, Policy],
    rates: list[float],
    cfg: SimConfig | None = None,
    jobs: int = 1,
    attainment: float = 0.99,
    target_qps: float | None = None,
) -> SweepResult:
    """Simulate every policy at every offered load (requests/s over all replicas)."""
    cfg = dataclasses.replace(cfg or SimConfig())
    if cfg.max_requests is not None:
        shape = shape.head(cfg.max_requests)
        cfg.max_requests = None
    if len(shape) < 2 or shape.rate <= 0:
        raise SpecsimError("the traffic shape needs at least two requests at distinct times")
    if not 0 < attainment <= 1:
        raise SpecsimError("attainment must be in (0, 1]")
    if target_qps is not None and not (target_qps > 0 and math.isfinite(target_qps)):
        raise SpecsimError(f"--target-qps must be a finite number > 0, got {target_qps}")
    if cfg.concurrency is not None:
        raise SpecsimError("sweep drives open-loop load; drop --concurrency")
    slo_is_default = cfg.slo_ttft is None and cfg.slo_tpot is None
    if slo_is_default:
        cfg.slo_ttft, cfg.slo_tpot = DEFAULT_SLO["ttft"], DEFAULT_SLO["tpot"]
    cfg.rate_scale = 1.0
    if OFF not in policies:
        policies = {**policies, OFF: Policy()}
    cases = []
    for name, pol in policies.items():
        for r in rates:
            cases.append((name, (profile, shape.rate_scaled(r / shape.rate), pol, cfg)))
    outs = pmap(_run_case, [c for _, c in cases], jobs)
    rows: dict[str, list[dict[str, float]]] = {n: [] for n in policies}
    kb_acc: dict[str, dict[int, list[float]]] = {n: {} for n in policies}
    for (name, _), (summ, kb) in zip(cases, outs, strict=True):
        rows[name].append(summ)
        acc = kb_acc[name]
        for b, (s, c) in kb.items():
            prev = acc.setdefault(b, [0.0, 0.0])
            prev[0] += s
            prev[1] += c
    k_by_batch = {n: {b: s / c for b, (s, c) in sorted(acc.items()) if c} for n, acc in kb_acc.items()}
    slo = {k: v for k, v in (("ttft", cfg.slo_ttft), ("tpot", cfg.slo_tpot)) if v is not None}
    res = SweepResult(rates, policies, rows, k_by_batch, slo, attainment, cfg.replicas, cfg.max_num_seqs, target_qps,
                      slo_is_default=slo_is_default)
    res.findings = analyse(res)
    return res


def _crossing(xs: list[float], ys: list[float], level: float) -> float | None:
    """First x where y falls below level (log-x interpolation); None if it never does."""
    for i, y in enumerate(ys):
        if not (y >= level):  # NaN counts as below
            if i == 0:
                return xs[0]
            y0 = ys[i - 1]
            if not math.isfinite(y) or y0 == y:
                return xs[i]
            f = (y0 - level) / (y0 - y)
            return math.exp(math.log(xs[i - 1]) + f * (math.log(xs[i]) - math.log(xs[i - 1])))
    return None


def analyse(res: SweepResult) -> dict[str, Any]:
    """Where speculation stops paying, max QPS per replica under the SLO, replicas for the target."""
    out: dict[str, Any] = {}
    for name in res.policies:
        att = [r.get("slo_attainment", 0.0) for r in res.rows[name]]
        f: dict[str, Any] = {"describe": describe(res.policies[name])}
        if name != OFF:
            f["speedup"] = res.speedup(name)
            f["speculation_stops_paying_qps"] = _crossing(res.rates, f["speedup"], 1.0)
        if att and att[0] >= res.attainment:
            cross = _crossing(res.rates, att, res.attainment)
            total = res.rates[-1] if cross is None else cross
            f["max_qps_per_replica"] = total / res.replicas
            f["max_qps_is_lower_bound"] = cross is None
        else:
            f["max_qps_per_replica"] = None
        if res.target_qps is not None:
            mq = f["max_qps_per_replica"]
            f["replicas_needed"] = math.ceil(res.target_qps / mq - 1e-9) if mq else None
        out[name] = f
    return out


SWEEP_FILES = ("sweep.md", "sweep.json", "latency_vs_load.png", "speedup_vs_load.png", "k_vs_batch.png")
"""Every file `specsim sweep --out` writes: one sweep's set."""


def write_sweep(res: SweepResult, out: Path, force: bool = False, inputs: tuple[Any, ...] = ()) -> list[Path]:
    """sweep.json, sweep.md and three PNG plots in `out`, moved into place together."""
    from specsim.tuner.plots import plot_k_vs_batch, plot_latency_vs_load, plot_speedup_vs_load

    with output_set(out, SWEEP_FILES, force=force, inputs=inputs) as files:
        plot_latency_vs_load(res, files.path("latency_vs_load.png"))
        plot_speedup_vs_load(res, files.path("speedup_vs_load.png"))
        plot_k_vs_batch(res, files.path("k_vs_batch.png"))
        data = {
            "rates": res.rates, "slo": res.slo, "slo_is_default": res.slo_is_default, "attainment": res.attainment,
            "replicas": res.replicas,
            "target_qps": res.target_qps,
            "policies": {n: {"describe": describe(p), "k_schedule": [list(r) for r in p.k_schedule]}
                         for n, p in res.policies.items()},
            "rows": res.rows, "findings": res.findings,
        }
        atomic_write_text(files.path("sweep.json"), json.dumps(_clean(data), indent=1) + "\n")
        atomic_write_text(files.path("sweep.md"), markdown(res))
    return [files.final(n) for n in SWEEP_FILES]


def _clean(x: Any) -> Any:
    """JSON-safe copy: NaN and infinities become null."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def markdown(res: SweepResult) -> str:
    """The sweep as a Markdown report: findings, then a table per load."""
    slo = ", ".join(f"{k.upper()} <= {v * 1e3:g} ms" for k, v in res.slo.items())
    lines = [
        "# Load sweep",
        "",
        f"SLO: {slo}{' (the default)' if res.slo_is_default else ''}; "
        f"'under the SLO' = at least {res.attainment:.0%} of requests meet it. "
        f"Replicas: {res.replicas}. Speedup = mean TPOT with speculation off / mean TPOT under the policy.",
        "",
        "## Policies",
        "",
    ]
    for n, p in res.policies.items():
        lines.append(f"- **{n}**: {describe(p)}")
    lines += ["", "## Findings", ""]
    for name, f in res.findings.items():
        bits = []
        if name != OFF:
            stop = f.get("speculation_stops_paying_qps")
            bits.append("speculation pays at every load swept" if stop is None
                        else f"speculation stops paying at ~{stop:.3g} req/s")
        mq = f.get("max_qps_per_replica")
        q = _fmt_q(mq) + (" (or more: SLO met at every load swept)" if f.get("max_qps_is_lower_bound") else "")
        bits.append(f"max QPS per replica under the SLO: {q}")
        if res.target_qps is not None:
            bits.append(f"replicas for {res.target_qps:g} QPS: {f.get('replicas_needed') or 'n/a'}")
        lines.append(f"- **{name}**: " + "; ".join(bits))
    lines += ["", "## Metrics by offered load", ""]
    names = list(res.policies)
    cols = " | ".join(f"{n}: goodput / p99 TPOT ms / p99 TTFT s / speedup" for n in names)
    header = f"| load (req/s) | {cols} |"
    lines += [header, "|---" * (len(names) + 1) + "|"]
    speed = {n: res.speedup(n) for n in names}
    for i, r in enumerate(res.rates):
        cells = []
        for n in names:
            row = res.rows[n][i]
            cells.append(
                f"{row.get('goodput', math.nan):.3g} / {row.get('tpot_p99', math.nan) * 1e3:.1f} / "
                f"{row.get('ttft_p99', math.nan):.2f} / {speed[n][i]:.2f}"
            )
        lines.append(f"| {r:.3g} | " + " | ".join(cells) + " |")
    lines += ["", "![latency vs load](latency_vs_load.png)", "", "![speedup vs load](speedup_vs_load.png)", "",
              "![K vs batch size](k_vs_batch.png)", ""]
    return "\n".join(lines)
