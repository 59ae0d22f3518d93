"""The study runner: Optuna TPE (one objective) or NSGA-II (pareto), pruning on a traffic prefix,
any number of worker processes sharing one storage, and a progress bar with the best value so far.

Every worker runs the same loop: while fewer than N trials are finished, running or queued, ask a
trial, simulate its policy (first on a prefix of the traffic, pruning hopeless ones), tell the result.
Trial numbers come from the storage, so workers never duplicate or lose a trial; a trial left
RUNNING by a killed worker is marked failed and its parameters re-queued (`recover_orphans`).

The budget is exact however many workers race for the last slot: trial numbers are the storage's
creation order, so after `ask` a worker counts the budget-holding trials numbered below its own and,
when N are there already, withdraws its trial (FAIL, "over budget", not counted) instead of running it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from specsim.errors import SpecsimError
from specsim.formats.policy import Policy
from specsim.tuner.evaluate import Evaluator
from specsim.tuner.objectives import Objective
from specsim.tuner.parallel import die_with_parent, fork_context
from specsim.tuner.space import SearchSpace
from specsim.tuner.storage import is_persistent, open_storage, recover_orphans, worker_id

optuna.logging.set_verbosity(optuna.logging.WARNING)

TASK_ATTR = "specsim_task"
_MISSING = object()
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
NOT_COUNTED = ("worker died", "interrupted", "over budget", "too few workers")
"""`failed_because` reasons of trials that hold no place in the budget (their parameters, if any, are
re-queued or were never drawn)."""


@dataclass
class StudySettings:
    """How to run a study (not what it optimises)."""

    n_trials: int = 100
    jobs: int = 1
    storage: str | None = None
    study_name: str = "specsim-tune"
    resume: bool = False
    seed: int = 0
    prune_percentile: float = 50.0
    startup_trials: int | None = None
    progress: bool = True
    wait_s: float = 600.0
    """How long `tune` waits for other workers' running trials before choosing the best."""
    min_workers: int = 1
    """Processes (this one, `--jobs` children and `tune-worker`s) that must each have claimed a trial
    before any of them runs one: a study that must spread over that many processes (stored in the
    study, so every worker follows it)."""
    worker_wait_s: float = 600.0
    """How long a process waits for `min_workers` processes to join before it gives up."""


@dataclass
class TaskSpec:
    """Everything a worker needs to rebuild the evaluation; stored in the study's user attributes."""

    objective: dict[str, Any]
    space: dict[str, Any]
    sim: dict[str, Any]
    n_trials: int
    replications: int = 1
    prefix_fraction: float | None = None
    profile_path: str | None = None
    traffic_path: str | None = None
    profile_sha256: str = ""
    traffic_sha256: str = ""
    traffic_window: list[float] | None = None
    traffic_loads: list[float] | None = None
    prune_percentile: float = 50.0
    """Prune a trial whose prefix value falls below this percentile of earlier trials (every worker)."""
    startup_trials: int | None = None
    """Random trials before TPE samples (None: from n_trials, see `make_sampler`), for every worker."""
    min_workers: int = 1
    """See `StudySettings.min_workers`."""
    worker_wait_s: float = 600.0
    """See `StudySettings.worker_wait_s`."""
    extra: dict[str, Any] = field(default_factory=dict)

    def identity(self) -> str:
        """Hash of what decides trial values (a resumed study must match it)."""
        d = asdict(self)
        keep = {k: d[k] for k in ("objective", "space", "sim", "replications", "prefix_fraction",
                                  "profile_sha256", "traffic_sha256", "traffic_window", "traffic_loads")}
        return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


def make_sampler(
    objective: Objective, seed: int, n_trials: int, startup: int | None = None
) -> optuna.samplers.BaseSampler:
    """TPE for one objective, NSGA-II for several."""
    _quiet_warnings()
    if objective.multi:
        pop = max(8, min(50, n_trials // 5))
        return optuna.samplers.NSGAIISampler(population_size=pop, seed=seed)
    n_start = startup if startup is not None else max(4, min(10, n_trials // 5))
    return optuna.samplers.TPESampler(
        n_startup_trials=n_start, multivariate=True, group=True, constant_liar=True, seed=seed
    )


def search_for(task: TaskSpec, objective: Objective, prefix: bool, seed: int
               ) -> tuple[optuna.samplers.BaseSampler, optuna.pruners.BasePruner]:
    """The sampler and pruner a worker of this study uses: the study's stored startup trials and prune
    percentile, so `tune --jobs N` children and `tune-worker` processes search as `tune` was asked to."""
    return (make_sampler(objective, seed, task.n_trials, task.startup_trials),
            make_pruner(objective, prefix, task.prune_percentile))


def make_pruner(objective: Objective, prefix: bool, percentile: float) -> optuna.pruners.BasePruner:
    """Percentile pruning at the prefix step (single objective only; Optuna cannot prune pareto studies)."""
    if not prefix or objective.multi:
        return optuna.pruners.NopPruner()
    return optuna.pruners.PercentilePruner(percentile, n_startup_trials=5, n_warmup_steps=0)


def _quiet_warnings() -> None:
    import warnings

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message=".*multivariate.*")
    warnings.filterwarnings("ignore", message=".*group.*")
    warnings.filterwarnings("ignore", message=".*constant_liar.*")
    warnings.filterwarnings("ignore", message=".*JournalFileOpenLock.*")
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")


def open_study(
    storage_url: str | None,
    name: str,
    task: TaskSpec | None,
    objective: Objective | None,
    sampler: optuna.samplers.BaseSampler | None,
    pruner: optuna.pruners.BasePruner | None,
    resume: bool,
    storage: optuna.storages.BaseStorage | None = None,
) -> optuna.Study:
    """Create the study (storing the task) or, with resume, load it and check it is the same task."""
    _quiet_warnings()
    storage = storage if storage is not None else open_storage(storage_url)
    existing = {s.study_name: s for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    where = storage_url or "memory"
    if name in existing:
        if not resume:
            raise SpecsimError(
                f"study {name!r} already exists in {where} ({existing[name].n_trials} trials): "
                "pass --resume to continue it, or choose another --study"
            )
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
        stored = study.user_attrs.get(TASK_ATTR)
        if task is not None and stored is not None and stored.get("identity") != task.identity():
            raise SpecsimError(
                f"study {name!r} was created for different inputs (profile, traffic, objective or search space); "
                "resume it with the same arguments, or choose another --study"
            )
        if task is not None and stored is not None:
            # how the search runs may change on resume (not what a trial is worth): workers follow it
            search = {"n_trials": task.n_trials, "prune_percentile": task.prune_percentile,
                      "startup_trials": task.startup_trials, "min_workers": task.min_workers,
                      "worker_wait_s": task.worker_wait_s}
            if any(stored.get(k, _MISSING) != v for k, v in search.items()):
                study.set_user_attr(TASK_ATTR, {**stored, **search})
        return study
    if resume and task is None:
        raise SpecsimError(f"study {name!r} not found in {where}")
    if task is None or objective is None:
        raise SpecsimError(f"study {name!r} not found in {where}")
    study = optuna.create_study(
        study_name=name, storage=storage, sampler=sampler, pruner=pruner, directions=objective.directions
    )
    study.set_user_attr(TASK_ATTR, {**asdict(task), "identity": task.identity()})
    return study


def stored_task(study: optuna.Study) -> TaskSpec:
    """The TaskSpec a study was created with."""
    d = dict(study.user_attrs.get(TASK_ATTR) or {})
    if not d:
        raise SpecsimError(f"study {study.study_name!r} was not created by specsim tune (no task stored)")
    d.pop("identity", None)
    known = {f.name for f in dataclasses.fields(TaskSpec)}
    return TaskSpec(**{k: v for k, v in d.items() if k in known})


def holds_budget(t: FrozenTrial) -> bool:
    """True for a trial that takes a place in the budget: finished, running, queued, or failed for a
    reason of its own (a point the simulator refuses); not one withdrawn, interrupted or orphaned."""
    if t.state == TrialState.FAIL:
        return t.user_attrs.get("failed_because") not in NOT_COUNTED
    return True


def budget_used(study: optuna.Study) -> int:
    """Trials that count against the budget (`holds_budget`)."""
    return sum(1 for t in study.get_trials(deepcopy=False) if holds_budget(t))


def over_budget(study: optuna.Study, number: int, n_trials: int) -> bool:
    """True when `n_trials` budget-holding trials were created before trial `number`.

    NOTE: trial numbers are assigned by the storage in creation order (RDBStorage counts the study's
    earlier rows; JournalStorage replays its log in order), so every worker sees the same trials below
    its own number once it holds one: of several workers racing for the last place, exactly the
    earliest keeps it."""
    below = sum(1 for t in study.get_trials(deepcopy=False) if t.number < number and holds_budget(t))
    return below >= n_trials


def workers_joined(study: optuna.Study) -> int:
    """Distinct processes that have claimed a trial of the study."""
    return len({t.user_attrs["worker"] for t in study.get_trials(deepcopy=False) if "worker" in t.user_attrs})


def policy_key(policy: Policy) -> str:
    """Identity of a policy's behaviour (provenance excluded), for re-using identical evaluations."""
    d = policy.model_dump(mode="json", by_alias=True, exclude={"provenance"})
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:20]


class TrialRunner:
    """Runs trials of one study in this process, re-using evaluations of identical policies."""

    def __init__(self, study: optuna.Study, ev: Evaluator, space: SearchSpace, n_trials: int,
                 min_workers: int = 1, worker_wait_s: float = 600.0) -> None:
        self.study = study
        self.ev = ev
        self.space = space
        self.n_trials = n_trials
        self.min_workers = min_workers
        self.worker_wait_s = worker_wait_s
        self._joined = min_workers <= 1
        self.multi = ev.objective.multi
        self._full: dict[str, tuple[list[float], dict[str, float]]] = {}
        self._prefix: dict[str, list[float]] = {}
        self.evaluations = 0

    def _lookup(self, key: str) -> tuple[list[float], dict[str, float]] | None:
        hit = self._full.get(key)
        if hit is not None:
            return hit
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if t.user_attrs.get("policy_key") == key and "metrics" in t.user_attrs:
                return list(t.values), dict(t.user_attrs["metrics"])
        return None

    def _wait_for_workers(self, trial: optuna.Trial) -> None:
        """Hold this process's first trial until `min_workers` processes have each claimed one."""
        end = time.monotonic() + self.worker_wait_s
        while (n := workers_joined(self.study)) < self.min_workers:
            if time.monotonic() > end:
                trial.set_user_attr("failed_because", "too few workers")
                self.study.tell(trial, state=TrialState.FAIL)
                raise SpecsimError(f"only {n} of {self.min_workers} worker processes joined study "
                                   f"{self.study.study_name!r} within {self.worker_wait_s:g} s")
            time.sleep(0.05)
        self._joined = True

    def run_one(self) -> FrozenTrial | None:
        """Ask, evaluate and tell one trial; None when the budget is used up."""
        while True:
            trials = self.study.get_trials(deepcopy=False)
            waiting = any(t.state == TrialState.WAITING for t in trials)
            if not waiting and sum(1 for t in trials if holds_budget(t)) >= self.n_trials:
                return None
            trial = self.study.ask()
            trial.set_user_attr("worker", worker_id())
            if not over_budget(self.study, trial.number, self.n_trials):
                break
            # another worker took the last place first: this trial never runs
            trial.set_user_attr("failed_because", "over budget")
            self.study.tell(trial, state=TrialState.FAIL)
        if not self._joined:
            self._wait_for_workers(trial)
        try:
            params = self.space.suggest(trial)
            policy = self.space.policy(params, self.ev.profile)
            key = policy_key(policy)
            trial.set_user_attr("policy_key", key)
            hit = self._lookup(key)
            if hit is not None:
                values, metrics = hit
                trial.set_user_attr("cached", True)
            else:
                if self.ev.prefix is not None and not self.multi:
                    pv = self._prefix.get(key)
                    if pv is None:
                        pv, _ = self.ev.values(policy, prefix=True)
                        self.evaluations += 1
                        self._prefix[key] = pv
                    trial.report(pv[0], 0)
                    if trial.should_prune():
                        trial.set_user_attr("prefix_value", pv[0])
                        return self.study.tell(trial, state=TrialState.PRUNED)
                values, metrics = self.ev.values(policy)
                self.evaluations += 1
                self._full[key] = (values, metrics)
            trial.set_user_attr("metrics", metrics)
            return self.study.tell(trial, values if self.multi else values[0])
        except SpecsimError as exc:  # a point the simulator refuses (e.g. KV cache too small): fail it
            trial.set_user_attr("failed_because", str(exc))
            return self.study.tell(trial, state=TrialState.FAIL)
        except BaseException:  # Ctrl-C or a kill: the trial is re-queued and keeps no place in the budget
            with contextlib.suppress(Exception):
                trial.set_user_attr("failed_because", "interrupted")
                self.study.tell(trial, state=TrialState.FAIL)
                if trial.params:
                    self.study.enqueue_trial(dict(trial.params), user_attrs={"retry_of": trial.number},
                                             skip_if_exists=False)
            raise

    def loop(self, on_trial: Callable[[FrozenTrial], None] | None = None) -> None:
        """Run trials until the study's budget is used up."""
        while True:
            ft = self.run_one()
            if ft is None:
                return
            if on_trial is not None:
                on_trial(ft)


class Progress:
    """A rich progress bar over finished trials, showing the best value so far."""

    def __init__(self, study: optuna.Study, objective: Objective, n_trials: int, enabled: bool) -> None:
        self.study = study
        self.objective = objective
        self.n = n_trials
        self.enabled = enabled
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> Progress:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("[bold]tuning"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TextColumn("{task.description}"), transient=False,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task("", total=self.n)
            self.update()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self.update()
            self._bar.__exit__(*exc)

    def update(self, _: object = None) -> None:
        if self._bar is None:
            return
        trials = self.study.get_trials(deepcopy=False, states=FINISHED)
        done = len(trials)
        self._bar.update(self._task, completed=min(done, self.n), description=best_text(self.study, self.objective))


def best_text(study: optuna.Study, objective: Objective) -> str:
    """'best goodput 4.87 (trial 12)' or the Pareto-front size."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return "best: -"
    if objective.multi:
        return f"pareto front: {len(study.best_trials)} trial(s)"
    m = objective.primary
    best = min(complete, key=lambda t: -t.values[0] if m.direction == "maximize" else t.values[0])
    return f"best {m.label} {best.values[0]:.5g} (trial {best.number})"


def _child(storage_url: str, name: str, ev: Evaluator, space: SearchSpace, task: TaskSpec,
           settings: StudySettings, index: int) -> None:
    die_with_parent()
    code = 0
    try:
        seed = settings.seed * 1000 + index + 1
        sampler, pruner = search_for(task, ev.objective, ev.prefix is not None, seed)
        study = optuna.load_study(study_name=name, storage=open_storage(storage_url), sampler=sampler, pruner=pruner)
        TrialRunner(study, ev, space, task.n_trials, task.min_workers, task.worker_wait_s).loop()
    except BaseException as exc:  # report in one line, exit non-zero
        print(f"specsim tune worker {index}: {type(exc).__name__}: {exc}", file=sys.stderr)
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def run_study(ev: Evaluator, space: SearchSpace, task: TaskSpec, settings: StudySettings) -> optuna.Study:
    """Create or resume the study and run trials until N are finished; returns the study.

    With jobs > 1 the trials run in that many forked worker processes sharing the storage (a
    temporary journal file when none was given); the study is copied back into memory at the end.
    """
    _quiet_warnings()
    if settings.n_trials < 1:
        raise SpecsimError("--trials must be >= 1")
    jobs = max(1, settings.jobs)
    tmpdir: str | None = None
    url = settings.storage
    if jobs > 1 and not is_persistent(url):
        tmpdir = tempfile.mkdtemp(prefix="specsim-tune-")
        url = f"journal:{Path(tmpdir) / 'study.log'}"
    try:
        sampler, pruner = search_for(task, ev.objective, ev.prefix is not None, settings.seed)
        study = open_study(url, settings.study_name, task, ev.objective, sampler, pruner, settings.resume)
        if not study.get_trials(deepcopy=False):
            for params in space.starting_points():  # the engine family's own defaults go first
                study.enqueue_trial(params, skip_if_exists=True)
        recover_orphans(study)
        with Progress(study, ev.objective, task.n_trials, settings.progress) as bar:
            if jobs == 1:
                runner = TrialRunner(study, ev, space, task.n_trials, task.min_workers, task.worker_wait_s)
                runner.loop(on_trial=bar.update)
            else:
                assert url is not None
                ctx = fork_context()
                procs = [
                    ctx.Process(target=_child, args=(url, settings.study_name, ev, space, task, settings, i))
                    for i in range(jobs)
                ]
                for p in procs:
                    p.start()
                while any(p.is_alive() for p in procs):
                    bar.update()
                    time.sleep(0.5)
                for p in procs:
                    p.join()
                bad = [p.exitcode for p in procs if p.exitcode != 0]
                if bad:
                    raise SpecsimError(f"{len(bad)} tuning worker process(es) failed (exit codes {bad})")
            runner = TrialRunner(study, ev, space, task.n_trials)
            while True:  # trials of dead workers found while waiting are re-queued: run them here
                wait_for_running(study, settings.wait_s, bar.update)
                if budget_used(study) >= task.n_trials:
                    break
                runner.loop(on_trial=bar.update)
        if tmpdir is not None:
            mem = optuna.create_study(directions=ev.objective.directions)
            mem.add_trials(study.get_trials(deepcopy=True))
            for k, v in study.user_attrs.items():
                mem.set_user_attr(k, v)
            study = mem
        return study
    finally:
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)


def wait_for_running(study: optuna.Study, timeout_s: float, tick: Callable[[], None] | None = None) -> None:
    """Wait (up to timeout_s) for trials other workers are still running."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        recover_orphans(study)
        if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            return
        if tick is not None:
            tick()
        time.sleep(0.5)


def best_trial(study: optuna.Study, objective: Objective) -> FrozenTrial:
    """The best complete trial; for pareto the front's point nearest the utopia point (normalised)."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise SpecsimError(f"study {study.study_name!r} has no complete trial")
    if not objective.multi:
        sign = -1.0 if objective.primary.direction == "maximize" else 1.0
        return min(complete, key=lambda t: (sign * t.values[0], t.number))
    front = study.best_trials
    dims = len(objective.metrics)
    lo = [min(t.values[i] for t in front) for i in range(dims)]
    hi = [max(t.values[i] for t in front) for i in range(dims)]

    def dist(t: FrozenTrial) -> float:
        s = 0.0
        for i, m in enumerate(objective.metrics):
            span = hi[i] - lo[i]
            if span <= 0:
                continue
            x = (t.values[i] - lo[i]) / span
            s += (1 - x) ** 2 if m.direction == "maximize" else x**2
        return math.sqrt(s)

    return min(front, key=lambda t: (dist(t), t.number))
