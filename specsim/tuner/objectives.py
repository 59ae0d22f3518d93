"""Objectives: which simulated metric to optimise, in which direction, and the SLO it is judged by."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from specsim.errors import SpecsimError
from specsim.formats.profile import Profile
from specsim.metrics import DEFAULT_SLO, PARETO_DEFAULT, Metric, metric, parse_slo  # noqa: F401 - re-exported
from specsim.simulator.costs import StepCostModel


@dataclass
class Objective:
    """What a study optimises: one metric (TPE) or several (NSGA-II, `pareto`), plus the SLO."""

    name: str
    metrics: list[Metric]
    slo: dict[str, float] = field(default_factory=dict)

    @classmethod
    def parse(cls, name: str, slo: str | dict[str, float] | None = None, pareto: str | None = None) -> Objective:
        """'goodput' / 'throughput' / 'p99-tpot' / 'pareto' (metrics from `pareto`, e.g. 'throughput,p99-tpot')."""
        slo_d = parse_slo(slo) if isinstance(slo, str) or slo is None else dict(slo)
        key = name.strip().lower()
        if key == "pareto":
            names = [x for x in (pareto.split(",") if pareto else PARETO_DEFAULT) if x.strip()]
            if len(names) < 2:
                raise SpecsimError("pareto needs at least two objectives, e.g. --pareto throughput,p99-tpot")
            mets = [metric(n) for n in names]
        else:
            mets = [metric(key)]
        if any(m.name in ("goodput", "slo-attainment") for m in mets) and not slo_d:
            slo_d = dict(DEFAULT_SLO)
        return cls(key, mets, slo_d)

    @property
    def multi(self) -> bool:
        return len(self.metrics) > 1

    @property
    def directions(self) -> list[str]:
        return [m.direction for m in self.metrics]

    @property
    def primary(self) -> Metric:
        return self.metrics[0]

    def values(self, summary: dict[str, Any]) -> list[float]:
        """Objective values from a simulation summary (NaN latencies count as infinitely bad).

        Goodput is a count of requests in SLO and ties are common (at light load every policy meets
        the SLO); ties are broken by mean end-to-end latency through a term worth less than half of
        one request, so it never outweighs a request more or less in SLO.
        """
        out = []
        for m in self.metrics:
            v = float(summary.get(m.key, math.nan))
            if not math.isfinite(v):
                v = -1e18 if m.direction == "maximize" else 1e18
            elif m.name == "goodput":
                unit = float(summary.get("offered_rps", 0.0)) / max(float(summary.get("requests", 1.0)), 1.0)
                e2e = float(summary.get("e2e_mean", 0.0))
                if unit > 0 and math.isfinite(e2e) and e2e >= 0:
                    v -= 0.5 * unit * e2e / (1.0 + e2e)
            out.append(v)
        return out

    def check_defined(self, output_lengths: Any) -> None:
        """Refuse an objective no request of the traffic can measure: TPOT and ITL need two output tokens
        (a study on NaN everywhere would pick an arbitrary policy)."""
        import numpy as np

        lens = np.asarray(output_lengths)
        for m in self.metrics:
            if m.key.split("_", 1)[0] in ("tpot", "itl") and len(lens) and int(lens.max()) < 2:
                raise SpecsimError(f"objective {m.name} is undefined on this traffic: every request has one output "
                                   "token, and TPOT/ITL need two (choose e.g. p99-ttft or goodput)")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "metrics": [m.name for m in self.metrics], "slo": self.slo}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Objective:
        mets = [metric(n) for n in d["metrics"]]
        return cls(d["name"], mets, dict(d.get("slo", {})))

    def describe(self) -> str:
        slo = ", ".join(f"{k}<={v * 1e3:g}ms" for k, v in self.slo.items())
        what = " vs ".join(f"{m.direction[:3]} {m.label}" for m in self.metrics)
        return what + (f" (SLO {slo})" if slo else "")


def fastest_tpot(profile: Profile, drafters: list[str]) -> float:
    """Lower bound on any request's TPOT: a batch-1 step divided by the most tokens it can emit."""
    best = StepCostModel(profile, None, b_max=1).decode_s(1, 0)
    for name in drafters:
        cm = StepCostModel(profile, name, b_max=1)
        k_cap = min(profile.k_max, profile.drafters[name].k_max)
        for k in range(1, k_cap + 1):
            best = min(best, cm.decode_s(1, k) / (k + 1))
    return best


def check_slo_feasible(profile: Profile, slo: dict[str, float], drafters: list[str]) -> None:
    """Refuse an SLO no policy can meet: a TPOT below the profile's fastest possible step."""
    tpot = slo.get("tpot")
    if tpot is not None:
        floor = fastest_tpot(profile, drafters)
        if tpot < floor:
            raise SpecsimError(
                f"impossible SLO: TPOT {tpot * 1e3:g} ms is below the fastest step this profile allows "
                f"({floor * 1e3:.2f} ms per token at batch 1 with every draft accepted)"
            )
