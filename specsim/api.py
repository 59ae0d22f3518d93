"""The Python API in one place: what `import specsim` exposes (lazily, see `specsim/__init__.py`).

`simulate`, `load_profile`, `load_traffic`, `load_policy`, `save_policy` and `SimConfig` are the stage
modules' own objects, re-exported. `tune` and `sweep` here are thin front doors with the command line's
defaults: they take an objective name and an SLO string instead of the tuner's `Objective` and
`SearchSpace` objects (which `specsim.tuner.tune.tune` and `specsim.tuner.sweep.run_sweep` take).

Nothing heavy is imported at module level, so `import specsim` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from specsim.formats.policy import Policy
    from specsim.formats.profile import Profile
    from specsim.formats.traffic import Traffic
    from specsim.simulator.config import SimConfig
    from specsim.tuner.objectives import Objective
    from specsim.tuner.space import SearchSpace
    from specsim.tuner.sweep import SweepResult
    from specsim.tuner.tune import TuneResult


def tune(
    profile: Profile,
    traffic: Traffic,
    objective: str | Objective = "goodput",
    *,
    slo: str | dict[str, float] | None = None,
    trials: int = 100,
    jobs: int = 1,
    space: SearchSpace | None = None,
    cfg: SimConfig | None = None,
    seed: int = 0,
    baselines: bool = True,
    storage: str | None = None,
    study: str = "specsim-tune",
    **kwargs: Any,
) -> TuneResult:
    """Tune a speculative-decoding policy for `traffic` on `profile`, as `specsim tune` does.

    `objective` is a name (`goodput`, `throughput`, `p99-tpot`, `mean-ttft`, `pareto`, ...) or an
    `Objective`; `slo` a string like `"ttft=2s,tpot=50ms"` (goodput's default SLO when omitted).
    `space` defaults to every drafter the profile measured, K up to its k_max, breakpoints up to
    `cfg.max_num_seqs` (and the batch sizes the profile measured). `storage`/`study` name an Optuna
    storage (`journal:PATH`, `sqlite:///PATH`, `postgresql+psycopg://...`) that `specsim tune-worker`
    processes can join. Other keyword arguments go to `specsim.tuner.tune.tune` (e.g. `replications`,
    `prefix_fraction`, `margin`). Returns a `TuneResult`: `.policy` (with provenance and predicted
    metrics), `.baselines`, `.study`.

    Example:
        >>> import specsim
        >>> result = specsim.tune(profile, traffic, "goodput", slo="ttft=2s,tpot=50ms", trials=20)
        >>> specsim.save_policy(result.policy, "POL.json")
    """
    import dataclasses

    from specsim.simulator.config import SimConfig
    from specsim.tuner.objectives import Objective
    from specsim.tuner.space import SearchSpace, measured_batch_cap
    from specsim.tuner.study import StudySettings
    from specsim.tuner.tune import tune as _tune

    cfg = dataclasses.replace(cfg) if cfg is not None else SimConfig()
    obj = Objective.parse(objective, slo) if isinstance(objective, str) else objective
    if space is None:
        space = SearchSpace.for_profile(profile, max_batch=measured_batch_cap(profile, cfg.max_num_seqs))
    settings = StudySettings(n_trials=trials, jobs=jobs, storage=storage, study_name=study, seed=seed,
                             progress=False)
    return _tune(profile, traffic, obj, space, cfg, settings, baselines=baselines, **kwargs)


def sweep(
    profile: Profile,
    policy: Policy,
    traffic_shape: Traffic,
    rates: str | list[float] = "0.5:32",
    *,
    cfg: SimConfig | None = None,
    jobs: int = 1,
    default_k: int = 4,
    attainment: float = 0.99,
    target_qps: float | None = None,
) -> SweepResult:
    """Latency and goodput against offered load for `policy` and its baselines, as `specsim sweep` does.

    The arrivals and lengths of `traffic_shape` are replayed at each rate (requests/s per replica;
    `"LO:HI"`, `"LO:HI:N"` log-spaced, or a list) under the policy, speculation off and static
    K = `default_k`. Returns a `SweepResult`: `.rows[name]` (one summary per rate), `.findings`
    (where speculation stops paying, the most QPS under the SLO, replicas for `target_qps`),
    `.summary_text()`; `specsim.tuner.sweep.write_sweep(result, folder)` writes its report and plots.

    Example:
        >>> import specsim
        >>> res = specsim.sweep(profile, specsim.load_policy("POL.json"), traffic, rates=[1, 4, 16])
        >>> print(res.summary_text())
    """
    from specsim.errors import SpecsimError
    from specsim.formats.policy import check_drafter_matches
    from specsim.tuner.cli import MAX_RATE, parse_rates
    from specsim.tuner.sweep import run_sweep, sweep_policies

    check_drafter_matches(policy, profile)
    values = parse_rates(rates) if isinstance(rates, str) else sorted(float(r) for r in rates)
    if not values or any(not 0 < r <= MAX_RATE for r in values):
        raise SpecsimError(f"rates must be numbers in (0, {MAX_RATE:g}] requests/s, got {rates!r}")
    policies = sweep_policies(profile, policy, default_k)
    return run_sweep(profile, traffic_shape, policies, values, cfg, jobs=jobs, attainment=attainment,
                     target_qps=target_qps)
