"""Evaluating one candidate policy: simulate it on the tuning traffic (or a prefix), over replications."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from specsim.errors import SpecsimError
from specsim.formats.policy import Policy
from specsim.formats.profile import Profile
from specsim.formats.traffic import Traffic
from specsim.simulator.config import SimConfig
from specsim.simulator.costs import StepCostModel
from specsim.simulator.run import simulate
from specsim.tuner.objectives import Objective

KEPT = (
    "goodput", "offered_rps", "output_tokens_per_s", "requests_per_s", "goodput_rps", "slo_attainment",
    "ttft_mean", "ttft_p50", "ttft_p90", "ttft_p99", "tpot_mean", "tpot_p50", "tpot_p90", "tpot_p99",
    "e2e_mean", "e2e_p50", "e2e_p99", "itl_p99", "queue_mean", "queue_p99",
    "mean_acceptance_length", "mean_batch_size", "mean_k", "busy_fraction", "preemptions", "completed", "requests",
)
"""Summary metrics kept with each trial and written into the policy's provenance."""


def slim(summary: dict[str, Any]) -> dict[str, float]:
    """The metrics of KEPT as plain floats (JSON-ready, NaN as None-free floats)."""
    out: dict[str, float] = {}
    for k in KEPT:
        v = summary.get(k)
        if v is None:
            continue
        f = float(v)
        out[k] = f if math.isfinite(f) else float("nan")
    return out


def with_goodput(summary: dict[str, Any], traffic: Traffic, cfg: SimConfig) -> dict[str, Any]:
    """Add `offered_rps` and `goodput`: requests in SLO per second of offered traffic.

    In open loop the work is fixed by the trace, so goodput is the offered rate times the fraction
    of requests meeting the SLO; the simulator's `goodput_rps` divides by first arrival to last
    finish instead, which rewards draining the final backlog quickly. In closed loop a faster
    server is offered more work, so goodput is `goodput_rps`.
    """
    s = dict(summary)
    if cfg.concurrency is None and len(traffic) > 1 and traffic.duration > 0:
        s["offered_rps"] = len(traffic) / (traffic.duration / cfg.rate_scale)
        att = summary.get("slo_attainment")
        s["goodput"] = None if att is None else s["offered_rps"] * float(att)
    else:
        s["offered_rps"] = float(summary["requests_per_s"])
        gp = summary.get("goodput_rps")
        s["goodput"] = None if gp is None else float(gp)
    return s


@dataclass
class Evaluator:
    """Runs the simulator for candidate policies on fixed traffic, config and objective."""

    profile: Profile
    traffic: Traffic
    cfg: SimConfig
    objective: Objective
    replications: int = 1
    prefix_fraction: float | None = None
    """Fraction of the traffic simulated first to prune hopeless trials (None = no pruning)."""

    def __post_init__(self) -> None:
        if len(self.traffic) == 0:
            raise SpecsimError("the tuning traffic holds no requests")
        if self.replications < 1:
            raise SpecsimError("replications must be >= 1")
        if self.cfg.max_requests is not None:
            self.traffic = self.traffic.head(self.cfg.max_requests)
            self.cfg = dataclasses.replace(self.cfg, max_requests=None)
        self.cfg = dataclasses.replace(
            self.cfg, slo_ttft=self.objective.slo.get("ttft"), slo_tpot=self.objective.slo.get("tpot")
        )
        self.cfg.validate()
        needs = [m.name for m in self.objective.metrics if m.key in ("goodput", "goodput_rps", "slo_attainment")]
        if needs and not self.objective.slo:
            raise SpecsimError(f"objective {needs[0]} needs an SLO: give one, e.g. --slo ttft=2s,tpot=50ms")
        from specsim.simulator.acceptance import check_category_map

        check_category_map(self.profile, self.cfg.category_map)
        self._costs: dict[tuple[str | None, int], StepCostModel] = {}
        self._prefix: Traffic | None = None
        if self.prefix_fraction is not None:
            if not 0 < self.prefix_fraction < 1:
                raise SpecsimError("the pruning prefix must be a fraction in (0, 1)")
            n = max(1, int(round(len(self.traffic) * self.prefix_fraction)))
            self._prefix = self.traffic.head(n) if n < len(self.traffic) else None

    @property
    def prefix(self) -> Traffic | None:
        """The traffic prefix used for pruning, if any."""
        return self._prefix

    def _cost(self, policy: Policy, cfg: SimConfig) -> StepCostModel:
        speculating = policy.drafter is not None and policy.max_k > 0
        name = policy.drafter.name if speculating and policy.drafter is not None else None
        b_max = max(policy.engine.max_num_seqs or cfg.max_num_seqs, 1)
        key = (name, b_max)
        cm = self._costs.get(key)
        if cm is None:
            cm = self._costs[key] = StepCostModel(self.profile, name, b_max=b_max)
        return cm

    def summary(self, policy: Policy, prefix: bool = False) -> dict[str, float]:
        """Mean summary over the replications (seeds cfg.seed, cfg.seed+1, ... modulo 2^32)."""
        traffic = self._prefix if prefix and self._prefix is not None else self.traffic
        runs = []
        for r in range(self.replications):
            cfg = dataclasses.replace(self.cfg, seed=(self.cfg.seed + r) % (1 << 32))  # seeds are 32-bit
            res = simulate(self.profile, traffic, policy, cfg, cost=self._cost(policy, cfg))
            runs.append(slim(with_goodput(res.summary, traffic, cfg)))
        if len(runs) == 1:
            return runs[0]
        return {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}

    def values(self, policy: Policy, prefix: bool = False) -> tuple[list[float], dict[str, float]]:
        """Objective values and the summary they came from."""
        s = self.summary(policy, prefix)
        return self.objective.values(s), s
