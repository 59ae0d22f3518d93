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
    """'tuned', or the baseline's name when a baseline beat every trial or the tuned policy's predicted
    gain did not exceed the margin."""
    margin: float = 0.0
    """Predicted relative gain over the best baseline a tuned policy needed to be chosen."""
    held_back: str | None = None
    """One line when a tuned policy was better in simulation but not by more than the margin."""

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
    traffic_time_unit: str | None = None,
    margin: float | None = None,
    runners_up: int = 3,
) -> TuneResult:
    """Tune a policy for `traffic` on `profile`; see the module docstring."""
    check_inputs(profile, traffic)
    cfg = cfg or SimConfig()
    objective.check_defined(traffic.output_lengths[: cfg.max_requests] if cfg.max_requests else traffic.output_lengths)
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
        extra={"traffic_time_unit": traffic_time_unit} if traffic_time_unit else {},
        prune_percentile=settings.prune_percentile,
        startup_trials=settings.startup_trials,
        min_workers=settings.min_workers,
        worker_wait_s=settings.worker_wait_s,
    )
    study = run_study(ev, space, task, settings)
    return finish(study, ev, space, base, settings, validated_margin(profile) if margin is None else margin,
                  runners_up)


def validated_margin(profile: Profile) -> float:
    """The profile's validated error on the ranking metric (recorded by a fidelity study as
    metadata.fit['fidelity']['margin']), else 0: the gain a tuned policy must be predicted to
    exceed before it is preferred to the best baseline."""
    rec = profile.metadata.fit.get("fidelity") if isinstance(profile.metadata.fit, dict) else None
    try:
        return max(0.0, float(rec["margin"])) if isinstance(rec, dict) and "margin" in rec else 0.0
    except (TypeError, ValueError):
        return 0.0


def finish(
    study: optuna.Study, ev: Evaluator, space: SearchSpace, base: dict[str, Baseline], settings: StudySettings,
    margin: float = 0.0, runners_up: int = 3,
) -> TuneResult:
    """Pick the best trial, compare it with the baselines and build the policy with provenance.

    A tuner that does no harm: the tuned policy is chosen over the best baseline only when its
    predicted gain on the objective exceeds `margin` (the simulator's validated error); otherwise
    the baseline is emitted, and `held_back` says so."""
    obj = ev.objective
    best = best_trial(study, obj)
    policy = space.policy(best.params, ev.profile)
    values = list(best.values)
    metrics = dict(best.user_attrs.get("metrics") or ev.summary(policy))
    chosen = "tuned"
    held_back = None
    others = _runners_up(study, space, ev, obj, best, runners_up)
    if base and not obj.multi:
        top = best_baseline(base, ev)
        key = obj.primary.key
        gain = obj.primary.gain(float(metrics.get(key, values[0])), float(top.metrics.get(key, top.values[0])))
        if obj.primary.better(top.values[0], values[0]):
            policy, values, metrics, chosen = top.policy, list(top.values), dict(top.metrics), top.name
        elif margin > 0 and gain is not None and gain <= margin:
            held_back = (f"the tuned policy ({describe(policy)}) is predicted {gain:+.1%} on {obj.primary.name} over "
                         f"{top.name}, within the simulator's validated error {margin:.1%}: emitting {top.name}")
            others = [policy.model_dump(mode="json", by_alias=True, exclude={"provenance"}), *others][:runners_up]
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
                runners_up=others,
                notes=notes + (f"; {held_back}" if held_back else ""),
            )
        }
    )
    return TuneResult(policy, study, best, base, ev, space, gains, chosen, margin, held_back)


def _runners_up(study: optuna.Study, space: SearchSpace, ev: Evaluator, obj: Objective, best: FrozenTrial,
                n: int) -> list[dict[str, Any]]:
    """The next-best distinct complete trials' policies (provenance excluded), best first."""
    if n <= 0 or obj.multi:
        return []
    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.values]
    sign = -1.0 if obj.primary.direction == "maximize" else 1.0
    done.sort(key=lambda t: sign * t.values[0])
    seen = {space.policy(best.params, ev.profile).model_dump_json(by_alias=True, exclude={"provenance"})}
    out: list[dict[str, Any]] = []
    for t in done:
        pol = space.policy(t.params, ev.profile)
        key = pol.model_dump_json(by_alias=True, exclude={"provenance"})
        if key in seen:
            continue
        seen.add(key)
        out.append(pol.model_dump(mode="json", by_alias=True, exclude={"provenance"}))
        if len(out) >= n:
            break
    return out


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
