"""`tune()`: check the inputs, compute baselines, run the study, and emit the policy with provenance."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from specsim.errors import SpecsimError
from specsim.formats.policy import Policy, Provenance
from specsim.formats.profile import Profile
from specsim.formats.traffic import Traffic
from specsim.simulator.config import SimConfig
from specsim.tuner.baselines import Baseline, best_baseline, check_slo_reachable, compute_baselines
from specsim.tuner.evaluate import Evaluator
from specsim.tuner.objectives import Objective, check_slo_feasible
from specsim.tuner.space import SearchSpace, describe
from specsim.tuner.study import StudySettings, TaskSpec, best_trial, run_study


@dataclass
class TuneResult:
    """What a tuning run produced."""

    policy: Policy
    study: optuna.Study
    best: FrozenTrial
    baselines: dict[str, Baseline]
    evaluator: Evaluator
    space: SearchSpace
    gains: dict[str, float | None] = field(default_factory=dict)
    chosen: str = "tuned"
    """'tuned', or the baseline's name when a baseline beat every trial."""

    @property
    def metrics(self) -> dict[str, float]:
        return dict(self.policy.provenance.predicted)

    @property
    def evaluations(self) -> int:
        """Trials whose policy was simulated (not re-used from an identical earlier trial)."""
        return sum(1 for t in self.study.get_trials(deepcopy=False) if t.state in (TrialState.COMPLETE,
                   TrialState.PRUNED) and not t.user_attrs.get("cached"))


def time_window(traffic: Traffic, start: float, end: float) -> Traffic:
    """Requests arriving in [start, end) seconds after the trace's first arrival."""
    if len(traffic) == 0:
        raise SpecsimError("traffic holds no requests")
    if not end > start >= 0:
        raise SpecsimError(f"time window must satisfy 0 <= start < end, got {start}:{end}")
    rel = traffic.timestamps - traffic.timestamps[0]
    idx = np.nonzero((rel >= start) & (rel < end))[0]
    if len(idx) == 0:
        raise SpecsimError(
            f"no request arrives in the window {start:g}-{end:g} s (trace spans {traffic.duration:.0f} s)"
        )
    return traffic.select(idx)


def check_inputs(profile: Profile, traffic: Traffic) -> None:
    """One-line errors for inputs nothing can be tuned on."""
    if len(traffic) == 0:
        raise SpecsimError("the tuning traffic holds no requests")
    if not profile.drafters:
        raise SpecsimError(
            "the profile has no drafters: nothing to tune (profile one with `specsim profile --drafter ...`)"
        )


def tune(
    profile: Profile,
    traffic: Traffic,
    objective: Objective,
    space: SearchSpace,
    cfg: SimConfig | None = None,
    settings: StudySettings | None = None,
    replications: int = 1,
    prefix_fraction: float | None = 0.25,
    baselines: bool = True,
    default_k: int = 4,
    default_drafter: str | None = None,
    profile_path: str | None = None,
    traffic_path: str | None = None,
    traffic_window: list[float] | None = None,
    traffic_loads: list[float] | None = None,
) -> TuneResult:
    """Tune a policy for `traffic` on `profile`; see the module docstring."""
    check_inputs(profile, traffic)
    cfg = cfg or SimConfig()
    settings = settings or StudySettings()
    space.validate()
    check_slo_feasible(profile, objective.slo, space.drafters)
    ev = Evaluator(profile, traffic, dataclasses.replace(cfg), objective, replications, prefix_fraction)
    base: dict[str, Baseline] = {}
    if baselines:
        base = compute_baselines(ev, space, default_k, default_drafter, jobs=settings.jobs)
        check_slo_reachable(base, ev)
    task = TaskSpec(
        objective=objective.to_dict(),
        space=space.to_dict(),
        sim={k: v for k, v in dataclasses.asdict(ev.cfg).items() if k != "drafter"},
        n_trials=settings.n_trials,
        replications=replications,
        prefix_fraction=prefix_fraction,
        profile_path=profile_path,
        traffic_path=traffic_path,
        profile_sha256=profile.digest(),
        traffic_sha256=traffic.digest(),
        traffic_window=traffic_window,
        traffic_loads=traffic_loads,
    )
    study = run_study(ev, space, task, settings)
    return finish(study, ev, space, base, settings)


def finish(
    study: optuna.Study, ev: Evaluator, space: SearchSpace, base: dict[str, Baseline], settings: StudySettings
) -> TuneResult:
    """Pick the best trial, compare it with the baselines and build the policy with provenance."""
    obj = ev.objective
    best = best_trial(study, obj)
    policy = space.policy(best.params, ev.profile)
    values = list(best.values)
    metrics = dict(best.user_attrs.get("metrics") or ev.summary(policy))
    chosen = "tuned"
    if base and not obj.multi:
        top = best_baseline(base, ev)
        if obj.primary.better(top.values[0], values[0]):
            policy, values, metrics, chosen = top.policy, list(top.values), dict(top.metrics), top.name
    key = obj.primary.key  # gains on the metric itself (objective values may carry a tie-break term)
    gains = {name: obj.primary.gain(float(metrics.get(key, values[0])), float(b.metrics.get(key, b.values[0])))
             for name, b in base.items()}
    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    n_pruned = sum(1 for t in finished if t.state == TrialState.PRUNED)
    notes = (
        f"study {study.study_name!r}: {len(finished)} trials ({n_pruned} pruned), best trial {best.number}"
        + ("" if chosen == "tuned" else f"; no trial beat the baseline {chosen!r}, which is emitted")
        + "; " + "; ".join(
            f"{'+' if (g or 0) >= 0 else ''}{g * 100:.1f}% {obj.primary.name} vs {n}" for n, g in gains.items()
            if g is not None
        )
    )
    policy = policy.model_copy(
        update={
            "provenance": Provenance(
                created_at=datetime.now(UTC).isoformat(timespec="seconds"),
                profile_sha256=ev.profile.digest(),
                traffic_sha256=ev.traffic.digest(),
                objective=obj.name if not obj.multi else "pareto:" + ",".join(m.name for m in obj.metrics),
                slo=dict(obj.slo),
                predicted={**metrics, "objective_values": values},
                baselines={n: {**b.to_dict(), "gain": gains[n]} for n, b in base.items()},
                notes=notes,
            )
        }
    )
    return TuneResult(policy, study, best, base, ev, space, gains, chosen)


def summaries_for_report(result: TuneResult) -> dict[str, dict[str, Any]]:
    """Named metric dicts (tuned first) for the console table."""
    out: dict[str, dict[str, Any]] = {"tuned": result.metrics}
    for name, b in result.baselines.items():
        out[name] = b.metrics
    return out


def describe_result(result: TuneResult) -> list[str]:
    """Human lines: the chosen policy and its gain over each baseline."""
    obj = result.evaluator.objective
    lines = [f"policy: {describe(result.policy)}"]
    tpot = result.metrics.get("tpot_mean", float("nan"))
    for name, g in result.gains.items():
        if g is not None:
            b = result.baselines[name]
            t = b.metrics.get("tpot_mean", float("nan"))
            extra = ""
            if t and t == t and tpot == tpot:
                d = (t - tpot) / t * 100
                extra = f", mean TPOT {abs(d):.1f}% {'lower' if d >= 0 else 'higher'}"
            lines.append(f"  {obj.primary.name}: {g * 100:+.2f}% vs {name} ({describe(b.policy)}){extra}")
    return lines
