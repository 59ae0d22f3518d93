"""`verify()`: replay one trace against a real server for the policy and its baselines, interleaved
over repeats, and decide from the measurements (with confidence intervals) whether it ships.

Candidates: the policy, speculation off, the best static K of the policy's drafter (the one the
simulator ranks first on this traffic), and optionally the tuner's runners-up. Every repeat is one
round in which each candidate gets a fresh server (rotating the order round to round), so drift of
the machine and the start-to-start variance of the engine fall on every candidate alike. Every run
is written as soon as it ends; a rerun of the same command resumes. The simulator's prediction for
each candidate sits beside its measurement.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from specsim.formats.policy import DrafterRef, Policy, save_policy
from specsim.formats.profile import Profile
from specsim.formats.traffic import Traffic
from specsim.metrics import DEFAULT_SLO, Metric, metric
from specsim.simulator.config import SimConfig
from specsim.simulator.run import simulate
from specsim.verify.config import VerifyConfig
from specsim.verify.stats import Columns, Interval, bootstrap, metric_value


@dataclass
class Candidate:
    name: str
    policy: Policy
    role: str
    """policy | baseline | runner-up"""


@dataclass
class VerifyResult:
    """What verify found (also written to verify.json)."""

    verdict: str
    """ship | don't ship | no verdict"""
    reason: str
    objective: str
    direction: str
    candidates: dict[str, dict[str, Any]] = field(default_factory=dict)
    """name -> role, measured interval, predicted value, gain over the best baseline."""
    best_baseline: str | None = None
    runs: int = 0
    incomplete: bool = False
    wall_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"schema": "specsim.verify", "version": 1, **dataclasses.asdict(self)}


def objective_of(policy: Policy) -> tuple[Metric, dict[str, float]]:
    """The metric the policy was tuned for (its provenance; goodput by default) and its SLO."""
    name = policy.provenance.objective or "goodput"
    m = metric(name.split(" ")[0])
    slo = dict(policy.provenance.slo) or dict(DEFAULT_SLO)
    return m, slo


def best_static(profile: Profile, traffic: Traffic, drafter: DrafterRef, cfg: SimConfig, m: Metric,
                slo: dict[str, float], offered: float | None) -> Policy:
    """The static K of this drafter that the simulator ranks first on the traffic."""
    spec = profile.drafters[drafter.name]
    best: tuple[float, Policy] | None = None
    for k in spec.static_ks(profile.k_max):
        pol = Policy.static(drafter, k)
        res = simulate(profile, traffic, pol, cfg)
        v = metric_value(m, res.requests, slo, offered)
        if best is None or m.better(v, best[0]):
            best = (v, pol)
    assert best is not None
    return best[1]


def candidates(policy: Policy, profile: Profile, traffic: Traffic, cfg: SimConfig, runners_up: int,
               m: Metric, slo: dict[str, float], offered: float | None) -> list[Candidate]:
    """The policy, off, the best static K, and up to `runners_up` of the tuner's runners-up."""
    out = [Candidate("policy", policy, "policy")]
    seen = {_behaviour(policy)}

    def add(name: str, pol: Policy, role: str) -> None:
        key = _behaviour(pol)
        if key not in seen:
            seen.add(key)
            out.append(Candidate(name, pol, role))

    add("off", Policy(), "baseline")
    if policy.drafter is not None:
        static = best_static(profile, traffic, policy.drafter, cfg, m, slo, offered)
        add(f"static-k{static.max_k}", static, "baseline")
    for j, doc in enumerate(policy.provenance.runners_up[:runners_up]):
        add(f"runner-up-{j + 1}", Policy.model_validate(doc), "runner-up")
    return out


def _behaviour(policy: Policy) -> str:
    return policy.model_dump_json(by_alias=True, exclude={"provenance"})


def verify(policy: Policy, profile: Profile, profile_path: Path, traffic: Traffic, out: Path,
           vcfg: VerifyConfig, sim_cfg: SimConfig, prompts: list[tuple[str | None, str]] | None = None,
           prompts_by_id: dict[str, str] | None = None, url: str | None = None,
           progress: Callable[[str], None] = print) -> VerifyResult:
    """Measure and decide (see module docstring)."""
    from specsim.policies.loadgen import LoadgenConfig, run_loadgen
    from specsim.policies.server_process import ServerProcess

    t_start = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    traffic = traffic.head(vcfg.max_requests)
    if vcfg.rate_scale != 1.0:
        traffic = traffic.rate_scaled(vcfg.rate_scale)
    m, slo = objective_of(policy)
    offered = len(traffic) / traffic.duration if sim_cfg.concurrency is None and traffic.duration > 0 else None
    cands = candidates(policy, profile, traffic, sim_cfg, vcfg.runners_up, m, slo, offered)
    if url is not None:
        cands = cands[:1]
    predicted = {}
    for c in cands:
        res = simulate(profile, traffic, c.policy, sim_cfg)
        predicted[c.name] = metric_value(m, res.requests, slo, offered)
    progress(f"objective {m.label}; candidates: " + ", ".join(
        f"{c.name} (predicted {predicted[c.name]:.4g})" for c in cands))
    lcfg = LoadgenConfig(timeout=vcfg.run_timeout_s, prompts=list(prompts or []),
                         prompts_by_id=dict(prompts_by_id or {}), chat=bool(prompts or prompts_by_id),
                         slo_ttft=slo.get("ttft"), slo_tpot=slo.get("tpot"))
    runs: dict[str, list[Columns]] = {c.name: [] for c in cands}
    incomplete = False
    for rep in range(vcfg.repeats):
        order = cands[rep % len(cands):] + cands[: rep % len(cands)]
        for c in order:
            run_dir = out / "runs" / f"{c.name}-{rep}"
            if (run_dir / "requests.csv").is_file():
                runs[c.name].append(_read_columns(run_dir / "requests.csv"))
                continue
            if time.monotonic() - t_start > vcfg.time_limit_s:
                incomplete = True
                continue
            progress(f"round {rep + 1}/{vcfg.repeats}: measuring {c.name}")
            pol_path = out / f"candidate-{c.name}.json"
            save_policy(c.policy, pol_path)
            if url is not None:
                meas = run_loadgen(url, traffic, lcfg)
            else:
                with ServerProcess(pol_path, out / f"server-{c.name}-{rep}.log", profile_path,
                                   eager=bool(vcfg.eager)) as server:
                    server.wait_up()
                    server.warm_up()
                    meas = run_loadgen(server.url, traffic, lcfg)
            meas.write(run_dir)
            runs[c.name].append(meas.requests)
    return _decide(cands, runs, predicted, m, slo, offered, vcfg, out, incomplete, time.monotonic() - t_start)


def _decide(cands: list[Candidate], runs: dict[str, list[Columns]], predicted: dict[str, float], m: Metric,
            slo: dict[str, float], offered: float | None, vcfg: VerifyConfig, out: Path, incomplete: bool,
            wall: float) -> VerifyResult:
    measured = {n: r for n, r in runs.items() if r}
    res = VerifyResult(verdict="no verdict", reason="", objective=m.name, direction=m.direction,
                       runs=sum(len(r) for r in measured.values()), incomplete=incomplete, wall_s=round(wall, 1))
    if "policy" not in measured:
        res.reason = "the policy was not measured"
        return res
    values, _ = bootstrap(m, measured, slo, offered, None, vcfg.confidence, vcfg.bootstrap_samples, vcfg.seed)
    baselines = [c.name for c in cands if c.role == "baseline" and c.name in measured]
    best = None
    for b in baselines:
        if best is None or m.better(values[b].value, values[best].value):
            best = b
    gains: dict[str, Interval] = {}
    if best is not None:
        _, gains = bootstrap(m, measured, slo, offered, best, vcfg.confidence, vcfg.bootstrap_samples, vcfg.seed)
    for c in cands:
        if c.name not in measured:
            continue
        g = gains.get(c.name)
        pg = m.gain(predicted[c.name], predicted[best]) if best is not None and c.name != best else None
        res.candidates[c.name] = {
            "role": c.role, "measured": values[c.name].to_dict(), "repeats": len(measured[c.name]),
            "predicted": predicted[c.name], "gain_over_best_baseline": g.to_dict() if g else None,
            "predicted_gain": pg, "policy": json.loads(_behaviour(c.policy))}
    res.best_baseline = best
    if best is None:
        res.reason = "no baseline was measured"
        return res
    g = gains.get("policy")
    conf = f"{vcfg.confidence:.0%}"
    if g is None:  # the policy is itself the best baseline's behaviour
        res.verdict, res.reason = "ship", f"the policy behaves as the best baseline ({best})"
    elif g.low > 0:
        res.verdict = "ship"
        res.reason = (f"{m.label}: {g.value:+.1%} over {best} ({conf} interval {g.low:+.1%} .. {g.high:+.1%}), "
                      "significantly better")
    else:
        res.verdict = "don't ship"
        res.reason = (f"{m.label}: {g.value:+.1%} over {best} ({conf} interval {g.low:+.1%} .. {g.high:+.1%}): "
                      f"not significantly better; serve {best} instead")
    if incomplete:
        res.reason += f" (time limit reached after {res.runs} runs)"
    return res


def _read_columns(path: Path) -> Columns:
    import csv

    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    cols: Columns = {}
    for key in ("arrival", "input_length", "output_length", "ttft", "tpot", "e2e"):
        cols[key] = np.array([float(r[key]) if r.get(key) not in (None, "", "nan") else np.nan for r in rows])
    return cols
