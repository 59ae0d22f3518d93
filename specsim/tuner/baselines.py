"""Baselines computed on the same traffic in the same run: off, best static K per drafter, untuned default."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from specsim.errors import SpecsimError
from specsim.formats.policy import Policy
from specsim.tuner.evaluate import Evaluator
from specsim.tuner.names import OFF
from specsim.tuner.parallel import pmap
from specsim.tuner.space import SearchSpace, describe, drafter_ref

OFF_NAME = OFF


@dataclass
class Baseline:
    """One baseline: its policy, objective values and metrics."""

    name: str
    policy: Policy
    values: list[float]
    metrics: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": describe(self.policy),
            "drafter": self.policy.drafter.name if self.policy.drafter else None,
            "k_schedule": [list(r) for r in self.policy.k_schedule],
            "values": self.values,
            "metrics": self.metrics,
        }


def default_drafter(space: SearchSpace, name: str | None) -> str:
    """The drafter of the untuned default: the named one, else the first the profile lists."""
    if name is None:
        return space.drafters[0]
    if name not in space.drafters:
        raise SpecsimError(f"default drafter {name!r} is not searched (drafters: {', '.join(space.drafters)})")
    return name


def compute_baselines(
    ev: Evaluator,
    space: SearchSpace,
    default_k: int = 4,
    default_name: str | None = None,
    jobs: int = 1,
) -> dict[str, Baseline]:
    """Simulate every static K per drafter (exhaustive) and speculation off; name the best and the default."""
    if not 1 <= default_k <= space.k_max:
        raise SpecsimError(f"default K must be in 1..{space.k_max}, got {default_k}")
    dflt = default_drafter(space, default_name)
    cases: list[tuple[str, Policy]] = [(OFF_NAME, Policy())]
    for d in space.drafters:
        ref = drafter_ref(ev.profile, d)
        for k in ev.profile.drafters[d].static_ks(space.k_max):
            cases.append((f"static K={k} ({d})", Policy.static(ref, k)))
    results = pmap(_run_one, [(ev, p) for _, p in cases], jobs)
    every = {name: Baseline(name, pol, v, m) for (name, pol), (v, m) in zip(cases, results, strict=True)}
    out: dict[str, Baseline] = {OFF_NAME: every[OFF_NAME]}
    prim = ev.objective.primary
    for d in space.drafters:
        best: Baseline | None = None
        for k in ev.profile.drafters[d].static_ks(space.k_max):
            b = every[f"static K={k} ({d})"]
            if best is None or prim.better(b.values[0], best.values[0]):
                best = b
        assert best is not None
        k_best = best.policy.max_k
        out[f"best static K={k_best} ({d})"] = Baseline(f"best static K={k_best} ({d})", best.policy, best.values,
                                                        best.metrics)
    dk = ev.profile.drafters[dflt].static_ks(default_k)[-1]  # a tree's default is the tree
    b = every[f"static K={dk} ({dflt})"]
    out[f"default K={default_k} ({dflt})"] = Baseline(f"default K={default_k} ({dflt})", b.policy, b.values, b.metrics)
    return out


def _run_one(arg: tuple[Evaluator, Policy]) -> tuple[list[float], dict[str, float]]:
    ev, pol = arg
    return ev.values(pol)


def best_baseline(baselines: dict[str, Baseline], ev: Evaluator) -> Baseline:
    """The baseline best on the primary objective."""
    prim = ev.objective.primary
    best = None
    for b in baselines.values():
        if best is None or prim.better(b.values[0], best.values[0]):
            best = b
    assert best is not None
    return best


def check_slo_reachable(baselines: dict[str, Baseline], ev: Evaluator) -> None:
    """An SLO that no baseline meets for a single request is treated as impossible."""
    slo = ev.objective.slo
    if not slo or not any(m.name in ("goodput", "slo-attainment") for m in ev.objective.metrics):
        return
    if all(b.metrics.get("slo_attainment", 0.0) <= 0.0 for b in baselines.values()):
        best = min(baselines.values(), key=lambda b: b.metrics.get("tpot_p50", float("inf")))
        slo_txt = ", ".join(f"{k.upper()} <= {v * 1e3:g} ms" for k, v in slo.items())
        raise SpecsimError(
            f"impossible SLO: no request meets {slo_txt} under any baseline (best: {best.name}, "
            f"TTFT p50 {best.metrics.get('ttft_p50', float('nan')) * 1e3:.0f} ms, "
            f"TPOT p50 {best.metrics.get('tpot_p50', float('nan')) * 1e3:.1f} ms); relax --slo or lower the load"
        )
