"""`specsim tune`, `specsim tune-worker`, `specsim sweep` and `specsim report` (Optuna study plots)."""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from specsim.errors import SpecsimError
from specsim.io import add_force_arg, output_path
from specsim.simulator.options import add_engine_args, config_from_args

MAX_JOBS = 256
"""Most worker processes tune and sweep start."""
POST_TUNE: dict[str, Callable[[argparse.Namespace, Any, Any, Any], Any]] = {}
"""Steps later stages plug into `tune` (the verify stage registers "verify" for `tune --verify`): passed as
objects, so the tuner never imports a stage downstream of it."""
MAX_RATE = 1e6
"""Highest offered load (requests/s) sweep and tune --loads accept."""


def _ints(text: str | None) -> list[int]:
    if not text:
        return []
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SpecsimError(f"expected comma-separated integers, got {text!r}") from None


def _window(text: str | None) -> list[float] | None:
    if not text:
        return None
    try:
        a, b = (float(x) for x in text.split(":", 1))
    except ValueError:
        raise SpecsimError(f"cannot read window {text!r} (use START:END seconds, e.g. 0:600)") from None
    return [a, b]


def register(sub: argparse._SubParsersAction) -> None:
    _register_tune(sub)
    _register_worker(sub)
    _register_sweep(sub)
    _register_report(sub)
    _register_compare(sub)


# ---- tune -----------------------------------------------------------------------------------------
def _register_tune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tune",
        help="search drafter, K schedule and thresholds with Optuna; write a policy",
        description="Search the drafter, a K schedule over batch size (breakpoints on a log grid) and "
        "optional guards with Optuna (TPE, or NSGA-II for --objective pareto), simulating each candidate "
        "on TRAFFIC with PROFILE's costs; write the best policy with provenance and baselines.",
    )
    p.add_argument("--profile", required=True, type=Path)
    p.add_argument("--traffic", required=True, type=Path)
    p.add_argument("--out", type=output_path, default=Path("policy.json"),
                   help="policy JSON to write (default policy.json)")
    o = p.add_argument_group("objective")
    o.add_argument("--objective", default="goodput",
                   help="goodput | throughput | p99-tpot | p99-ttft | mean-tpot | ... | pareto (default goodput)")
    o.add_argument("--pareto", default=None, help="objectives of --objective pareto (default throughput,p99-tpot)")
    s = p.add_argument_group("search space")
    s.add_argument("--family", choices=("vllm", "specsim", "sglang", "trtllm"), default="vllm",
                   help="whose adaptive rule to search: vLLM's batch-size schedule (default), specsim's (plus a "
                        "queue rule or a context-length axis), SGLang's adaptive steps, TensorRT-LLM's "
                        "draft_len_schedule and acceptance gate")
    s.add_argument("--drafters", default=None, help="comma-separated profile drafters (default: all)")
    s.add_argument("--no-off", action="store_true", help="do not consider speculation off")
    s.add_argument("--k-max", type=int, default=None, help="largest K (default: what the profile measured)")
    s.add_argument("--k-min", type=int, default=0, help="smallest K per range (default 0 = off allowed)")
    s.add_argument("--segments", type=int, default=2, help="most K ranges below the off threshold")
    s.add_argument("--grid-ratio", type=float, default=2.0, help="breakpoint log-grid ratio (default 2)")
    s.add_argument("--max-batch", type=int, default=None, help="largest breakpoint (default --max-num-seqs)")
    s.add_argument("--no-threshold", action="store_true", help="no 'off above batch size b' threshold")
    s.add_argument("--non-monotone", action="store_true", help="allow K to rise with batch size")
    s.add_argument("--hysteresis", type=int, default=0, help="search a hysteresis band 0..H")
    s.add_argument("--floor", action="store_true", help="search an optional per-request acceptance floor")
    s.add_argument("--tune-engine", action="store_true", help="also search max_num_seqs and max_num_batched_tokens")
    s.add_argument("--seqs-choices", default="64,128,256,512", help="max_num_seqs candidates (--tune-engine)")
    s.add_argument("--tokens-choices", default="2048,4096,8192,16384", help="max_num_batched_tokens candidates")
    r = p.add_argument_group("study")
    r.add_argument("--trials", type=int, default=100)
    r.add_argument("--jobs", type=int, default=1, help="parallel worker processes (e.g. 2 on 2 cores)")
    r.add_argument("--storage", default=None, help="journal:PATH, sqlite:///PATH or an RDB URL (default memory)")
    r.add_argument("--study", default="specsim-tune", help="study name in the storage")
    r.add_argument("--resume", action="store_true", help="continue an existing study in --storage")
    r.add_argument("--min-workers", type=int, default=1,
                   help="processes (this one, --jobs children, tune-workers) that must each claim a trial before "
                        "any runs one, waiting up to 600 s for them (default 1: start at once)")
    r.add_argument("--replications", type=int, default=1, help="seeds averaged per trial")
    r.add_argument("--prune-prefix", type=float, default=0.25, help="traffic fraction simulated first for pruning")
    r.add_argument("--no-prune", action="store_true")
    r.add_argument("--prune-percentile", type=float, default=50.0)
    r.add_argument("--startup-trials", type=int, default=None, help="random trials before TPE")
    r.add_argument("--no-progress", action="store_true")
    r.add_argument("--window", default=None, help="tune on requests arriving in START:END seconds of the trace")
    r.add_argument("--loads", default=None,
                   help="tune across loads: replay the traffic at each of these req/s back to back "
                   "(e.g. 4,16,48,96); disables prefix pruning")
    b = p.add_argument_group("baselines")
    b.add_argument("--default-k", type=int, default=4, help="K of the untuned default baseline (default 4)")
    b.add_argument("--default-drafter", default=None, help="drafter of the untuned default (default: first)")
    b.add_argument("--no-baselines", action="store_true")
    b.add_argument("--margin", type=float, default=None,
                   help="predicted gain over the best baseline a tuned policy needs to be chosen (default: the "
                        "error the profile's fidelity study recorded, else 0)")
    b.add_argument("--runners-up", type=int, default=3, help="next-best distinct policies kept in the provenance")
    v = p.add_argument_group("verify on the live server (specsim verify)")
    v.add_argument("--verify", action="store_true",
                   help="after tuning, measure the policy, its runners-up and the baselines on real servers; "
                        "write the measured winner to --out")
    v.add_argument("--verify-out", type=output_path, default=None, help="verification folder (default OUT.verify)")
    v.add_argument("--verify-repeats", type=int, default=2)
    v.add_argument("--verify-max-requests", type=int, default=100)
    v.add_argument("--verify-time-limit", type=float, default=3600.0)
    v.add_argument("--verify-eager", action="store_true", help="serve without compilation while verifying")
    add_engine_args(p)
    p.set_defaults(func=_cmd_tune)


def _space_from_args(args: argparse.Namespace, profile: Any, max_batch: int) -> Any:
    from specsim.tuner.space import SearchSpace

    kw: dict[str, Any] = dict(
        include_off=not args.no_off,
        k_min=args.k_min,
        max_segments=args.segments,
        threshold=not args.no_threshold,
        monotone=not args.non_monotone,
        max_hysteresis=args.hysteresis,
        floor=args.floor,
        family=args.family,
    )
    if args.family in ("sglang", "trtllm") and (args.hysteresis or args.floor):
        raise SpecsimError(f"--hysteresis and --floor are specsim's guards; family {args.family} has its own rule")
    if args.k_max is not None:
        kw["k_max"] = args.k_max
    if args.tune_engine:
        from specsim.simulator.config import LIMITS

        top = {name: v for name, v, _ in LIMITS}
        for flag, key, text in (("--seqs-choices", "max_num_seqs", args.seqs_choices),
                                ("--tokens-choices", "max_num_batched_tokens", args.tokens_choices)):
            kw[key] = _ints(text)
            if not kw[key] or any(not 1 <= v <= top[key] for v in kw[key]):
                raise SpecsimError(f"{flag} needs integers in 1..{top[key]}, got {text!r}")
    drafters = [d.strip() for d in args.drafters.split(",")] if args.drafters else None
    return SearchSpace.for_profile(profile, max_batch=max_batch, grid_ratio=args.grid_ratio, drafters=drafters, **kw)


def _check_study_args(args: argparse.Namespace) -> None:
    """One-line errors for study options out of range (before any file is read)."""
    from specsim.formats.policy import SCHEDULE_TOP

    if not 1 <= args.trials <= 1_000_000:
        raise SpecsimError(f"--trials must lie in 1..1000000, got {args.trials}")
    if not 1 <= args.jobs <= MAX_JOBS:
        raise SpecsimError(f"--jobs must lie in 1..{MAX_JOBS} (worker processes), got {args.jobs}")
    if not 1 <= args.min_workers <= MAX_JOBS:
        raise SpecsimError(f"--min-workers must lie in 1..{MAX_JOBS}, got {args.min_workers}")
    if args.min_workers > 1 and not args.storage and args.min_workers > args.jobs:
        raise SpecsimError(f"--min-workers {args.min_workers} needs --storage for tune-worker processes to join "
                           f"(or --jobs {args.min_workers})")
    if not 1 <= args.replications <= 1000:
        raise SpecsimError(f"--replications must lie in 1..1000, got {args.replications}")
    if not 0.0 < args.prune_prefix <= 1.0:
        raise SpecsimError(f"--prune-prefix must lie in (0, 1], got {args.prune_prefix}")
    if not 0.0 <= args.prune_percentile <= 100.0:
        raise SpecsimError(f"--prune-percentile must lie in [0, 100], got {args.prune_percentile}")
    if args.startup_trials is not None and args.startup_trials < 0:
        raise SpecsimError(f"--startup-trials must be >= 0, got {args.startup_trials}")
    if args.default_k < 0:
        raise SpecsimError(f"--default-k must be >= 0, got {args.default_k}")
    if args.k_min < 0:
        raise SpecsimError(f"--k-min must be >= 0, got {args.k_min}")
    if not 1 <= args.segments <= 64:
        raise SpecsimError(f"--segments must lie in 1..64, got {args.segments}")
    if not 0 <= args.hysteresis <= SCHEDULE_TOP:
        raise SpecsimError(f"--hysteresis must lie in 0..{SCHEDULE_TOP}, got {args.hysteresis}")
    if not (args.grid_ratio > 1.0 and math.isfinite(args.grid_ratio)):
        raise SpecsimError(f"--grid-ratio must be a finite number > 1, got {args.grid_ratio}")
    if args.max_batch is not None and not 1 <= args.max_batch <= SCHEDULE_TOP:
        raise SpecsimError(f"--max-batch must lie in 1..{SCHEDULE_TOP}, got {args.max_batch}")


def _cmd_tune(args: argparse.Namespace) -> int:
    from specsim.formats.notice import acceptance_notice, estimated_costs_notice
    from specsim.formats.policy import save_policy
    from specsim.formats.profile import load_profile
    from specsim.formats.traffic import load_traffic
    from specsim.io import check_output_file, refuse_input_as_output
    from specsim.simulator.acceptance import check_category_map, traffic_warning
    from specsim.tuner.loads import multi_load
    from specsim.tuner.objectives import Objective
    from specsim.tuner.space import measured_batch_cap
    from specsim.tuner.study import StudySettings
    from specsim.tuner.tune import check_inputs, describe_result, summaries_for_report, time_window, tune

    _check_study_args(args)
    cfg = config_from_args(args)
    check_output_file(args.out, "policy")
    refuse_input_as_output(args.out, (args.profile, args.traffic), "policy")
    if args.storage and args.storage.startswith("journal:"):
        refuse_input_as_output(args.storage[len("journal:"):], (args.profile, args.traffic, args.out),
                               "journal storage")
    if args.resume and not args.storage:
        raise SpecsimError("--resume needs --storage (journal:PATH or sqlite:///PATH)")
    profile = load_profile(args.profile)
    traffic = load_traffic(args.traffic, args.time_unit)
    check_inputs(profile, traffic)
    window = _window(args.window)
    if window is not None:
        traffic = time_window(traffic, *window)
    loads = parse_rates(args.loads) if args.loads else None
    if loads is not None:
        if cfg.max_requests is not None:
            # NOTE: --max-requests sizes each load; cut after the loads are joined, it kept only the first load
            traffic = traffic.head(cfg.max_requests)
            cfg = dataclasses.replace(cfg, max_requests=None)
        traffic = multi_load(traffic, loads)
        print(f"tuning across {len(loads)} loads ({', '.join(f'{r:g}' for r in loads)} req/s): "
              f"{len(traffic) // len(loads)} requests at each, {len(traffic)} in all")
    objective = Objective.parse(args.objective, args.slo, args.pareto)
    check_category_map(profile, cfg.category_map)
    if line := traffic_warning(profile, traffic, cfg.category_map):
        print(line)
    top = measured_batch_cap(profile, cfg.max_num_seqs)
    # NOTE: by default breakpoints stay inside the batch sizes the profile measured
    space = _space_from_args(args, profile, args.max_batch or top)
    if not args.drafters:
        from specsim.tuner.space import tunable_drafters

        for name, why in tunable_drafters(profile)[1].items():
            print(f"not searched: drafter {name!r}: {why}")
    settings = StudySettings(
        n_trials=args.trials, jobs=args.jobs, storage=args.storage, study_name=args.study, resume=args.resume,
        seed=args.seed, prune_percentile=args.prune_percentile, startup_trials=args.startup_trials,
        progress=not args.no_progress, min_workers=args.min_workers,
    )
    n_tuned = min(len(traffic), cfg.max_requests or len(traffic))
    on = f"{n_tuned} requests" if n_tuned == len(traffic) else f"the first {n_tuned} of {len(traffic)} requests"
    print(f"tuning {objective.describe()} on {on}; space: {space.size_hint}")
    t0 = time.perf_counter()
    result = tune(
        profile, traffic, objective, space, cfg, settings,
        replications=args.replications,
        prefix_fraction=None if args.no_prune or loads else args.prune_prefix,
        baselines=not args.no_baselines,
        default_k=args.default_k,
        default_drafter=args.default_drafter,
        profile_path=str(args.profile.resolve()),
        traffic_path=str(args.traffic.resolve()),
        traffic_window=window,
        traffic_loads=loads,
        traffic_time_unit=args.time_unit,
        margin=args.margin,
        runners_up=max(args.runners_up, 0),
    )
    if result.held_back:
        print(f"note: {result.held_back}")
    if args.verify:
        step = POST_TUNE.get("verify")
        if step is None:
            raise SpecsimError("tune --verify needs specsim's verify stage, which is not installed")
        result = step(args, result, profile, traffic)
    save_policy(result.policy, args.out)
    _print_table(summaries_for_report(result), f"tuned vs baselines ({on})")
    for line in describe_result(result):
        print(line)
    from specsim.tuner.study import FINISHED

    n_done = len(result.study.get_trials(deepcopy=False, states=FINISHED))
    print(f"{n_done} trials ({result.evaluations} simulated) in {time.perf_counter() - t0:.1f} s; "
          f"wrote {args.out}")
    if notice := estimated_costs_notice(profile):
        print(notice)
    for line in acceptance_notice(profile, list(space.drafters)):
        print(line)
    return 0


def _print_table(summaries: dict[str, dict[str, Any]], title: str) -> None:
    """The simulator's summary table plus the tuner's goodput (offered rate x fraction in SLO)."""
    from specsim.simulator.report import fmt_slo, summary_table
    from specsim.terminal import console

    table = summary_table(summaries, title)
    table.add_row("goodput at offered load (tuner objective)", *(fmt_slo(s.get("goodput")) for s in summaries.values()))
    console().print(table)


# ---- tune-worker ----------------------------------------------------------------------------------
def _register_worker(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tune-worker",
        help="add a worker process to a study started by `specsim tune --storage URL`",
        description="Join the study NAME in a shared storage (journal file on this machine, or an RDB URL "
        "for many machines) and run its trials until the study's trial budget is used up.",
    )
    p.add_argument("--storage", required=True, help="journal:PATH, sqlite:///PATH or an RDB URL")
    p.add_argument("--study", required=True)
    p.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the study to appear")
    p.add_argument("--seed", type=int, default=None, help="sampler seed (default: from the process id)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_worker)


def _cmd_worker(args: argparse.Namespace) -> int:
    import os

    import optuna

    from specsim.tuner.storage import open_storage, recover_orphans
    from specsim.tuner.study import Progress, TrialRunner, search_for, stored_task

    storage = open_storage(args.storage)
    deadline = time.monotonic() + args.wait
    study = None
    while study is None:
        try:
            study = optuna.load_study(study_name=args.study, storage=storage)
            if "specsim_task" not in study.user_attrs:
                study = None
                raise KeyError
        except KeyError:
            if time.monotonic() > deadline:
                raise SpecsimError(f"study {args.study!r} not found in {args.storage}") from None
            time.sleep(0.5)
    task = stored_task(study)
    ev, space = evaluator_from_task(task)
    seed = args.seed if args.seed is not None else os.getpid()
    # NOTE: the study's own startup trials and prune percentile, as `tune` was asked (stored in its task)
    sampler, pruner = search_for(task, ev.objective, ev.prefix is not None, seed)
    study = optuna.load_study(study_name=args.study, storage=storage, sampler=sampler, pruner=pruner)
    recover_orphans(study)
    runner = TrialRunner(study, ev, space, task.n_trials, task.min_workers, task.worker_wait_s)
    with Progress(study, ev.objective, task.n_trials, not args.no_progress) as bar:
        runner.loop(on_trial=bar.update)
    print(f"worker done: {runner.evaluations} simulations for study {args.study!r}")
    return 0


def evaluator_from_task(task: Any) -> tuple[Any, Any]:
    """Rebuild the evaluator and space a study was created with (files named in its task)."""
    from specsim.formats.profile import load_profile
    from specsim.formats.traffic import load_traffic
    from specsim.simulator.config import SimConfig
    from specsim.tuner.evaluate import Evaluator
    from specsim.tuner.loads import multi_load
    from specsim.tuner.objectives import Objective
    from specsim.tuner.space import SearchSpace
    from specsim.tuner.tune import time_window

    if not task.profile_path or not task.traffic_path:
        raise SpecsimError("this study was started from in-memory inputs: workers need `specsim tune` with files")
    profile = load_profile(task.profile_path)
    traffic = load_traffic(task.traffic_path, task.extra.get("traffic_time_unit"))
    if task.traffic_window:
        traffic = time_window(traffic, *task.traffic_window)
    if task.traffic_loads:
        traffic = multi_load(traffic, task.traffic_loads)
    if profile.digest() != task.profile_sha256:
        raise SpecsimError(f"profile {task.profile_path} changed since the study started (sha256 differs)")
    if traffic.digest() != task.traffic_sha256:
        raise SpecsimError(f"traffic {task.traffic_path} changed since the study started (sha256 differs)")
    cfg = SimConfig(**task.sim)
    ev = Evaluator(profile, traffic, cfg, Objective.from_dict(task.objective), task.replications, task.prefix_fraction)
    return ev, SearchSpace.from_dict(task.space)


# ---- sweep ----------------------------------------------------------------------------------------
def _register_sweep(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="latency and goodput against offered load for a policy and its baselines",
        description="Replay the traffic shape T at each offered load (requests/s per replica) under the "
        "policy and baselines; report where speculation stops paying, the maximum QPS per replica under "
        "the SLO and the replicas needed for --target-qps. Writes PNG plots and a Markdown report.",
    )
    p.add_argument("--profile", required=True, type=Path)
    p.add_argument("--policy", required=True, help="policy JSON, or off / static:K / static:K@DRAFTER")
    p.add_argument("--traffic-shape", required=True, type=Path, help="trace whose arrivals and lengths are replayed")
    p.add_argument("--rates", default="0.5:32", help="LO:HI[:N] log-spaced, or a comma list (req/s per replica)")
    p.add_argument("--target-qps", type=float, default=None, help="total QPS to size replicas for")
    p.add_argument("--attainment", type=float, default=0.99, help="fraction of requests in SLO for 'under the SLO'")
    p.add_argument("--default-k", type=int, default=4, help="K of the static baseline")
    p.add_argument("--jobs", type=int, default=1, help="parallel processes")
    p.add_argument("--out", type=output_path, default=Path("sweep-out"),
                   help="folder for the report and plots (default sweep-out)")
    add_force_arg(p)
    add_engine_args(p)
    p.set_defaults(func=_cmd_sweep)


def parse_rates(text: str) -> list[float]:
    """'0.5:32' (8 log-spaced points), '0.5:32:12', or '1,2,4'."""
    try:
        if ":" in text:
            parts = [float(x) for x in text.split(":")]
            if len(parts) not in (2, 3):
                raise ValueError
            lo, hi = parts[0], parts[1]
            n = int(parts[2]) if len(parts) == 3 else 8
            if not (0 < lo < hi) or not 2 <= n <= 1000:
                raise ValueError
            return [lo * (hi / lo) ** (i / (n - 1)) for i in range(n)]
        rates = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SpecsimError(f"cannot read rates {text!r} (use LO:HI, LO:HI:N with 2 <= N <= 1000, or a comma list)"
                           ) from None
    if not rates or any(not (0 < r <= MAX_RATE) for r in rates):
        raise SpecsimError(f"rates must be numbers in (0, {MAX_RATE:g}] requests/s, got {text!r}")
    return sorted(rates)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from specsim.formats.notice import acceptance_notice, estimated_costs_notice
    from specsim.formats.policy import check_drafter_matches, read_policy
    from specsim.formats.profile import load_profile
    from specsim.formats.traffic import load_traffic
    from specsim.io import check_output_folder
    from specsim.simulator.acceptance import check_category_map, traffic_warning
    from specsim.tuner.sweep import run_sweep, sweep_policies, write_sweep

    if not 1 <= args.jobs <= MAX_JOBS:
        raise SpecsimError(f"--jobs must lie in 1..{MAX_JOBS} (processes), got {args.jobs}")
    if args.default_k < 0:
        raise SpecsimError(f"--default-k must be >= 0, got {args.default_k}")
    cfg = config_from_args(args)
    rates = parse_rates(args.rates)
    check_output_folder(args.out, args.force)
    profile = load_profile(args.profile)
    policy = read_policy(args.policy, profile)
    check_drafter_matches(policy, profile)
    shape = load_traffic(args.traffic_shape, args.time_unit)
    check_category_map(profile, cfg.category_map)
    policies = sweep_policies(profile, policy, args.default_k)
    if line := traffic_warning(profile, shape, cfg.category_map):
        print(line)
    result = run_sweep(profile, shape, policies, rates, cfg, jobs=args.jobs, attainment=args.attainment,
                       target_qps=args.target_qps)
    paths = write_sweep(result, args.out, args.force, (args.profile, args.policy, args.traffic_shape))
    print(result.summary_text())
    print("wrote " + ", ".join(str(p) for p in paths))
    if notice := estimated_costs_notice(profile):
        print(notice)
    for line in acceptance_notice(profile, [policy.drafter.name] if policy.drafter and policy.max_k else []):
        print(line)
    return 0


# ---- report ---------------------------------------------------------------------------------------
def _register_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="plot a study's optimisation history and parameter importance (PNG)",
        description="Draw Optuna's optimisation history and parameter importances for STUDY as PNGs.",
    )
    p.add_argument("study", help="study name")
    p.add_argument("--storage", required=True, help="journal:PATH, sqlite:///PATH or an RDB URL")
    p.add_argument("--out", type=output_path, default=Path("study-report"),
                   help="folder for the PNGs (default study-report)")
    add_force_arg(p)
    p.set_defaults(func=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from specsim.tuner.plots import study_report

    paths = study_report(args.storage, args.study, args.out, args.force)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


# ---- compare-engines ------------------------------------------------------------------------------
COMPARE_FILES = ("comparison.json", "comparison.md", "comparison.png")


def _register_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare-engines",
        help="tune every engine's adaptive speculation on the same profile and traffic; compare them",
        description="Tune each engine family (vLLM's batch-size schedule, specsim's queue/context rules, SGLang's "
        "adaptive steps, TensorRT-LLM's draft_len_schedule and gate) within its own rule, at several loads, "
        "and write a table and a plot of how much of the available gain each engine's knobs capture.",
    )
    p.add_argument("--profile", required=True, type=Path)
    p.add_argument("--traffic", required=True, type=Path)
    p.add_argument("--out", type=output_path, default=Path("compare-engines"),
                   help="folder for comparison.{json,md,png} (default compare-engines)")
    add_force_arg(p)
    p.add_argument("--objective", default="mean-tpot", help="one objective (default mean-tpot)")
    p.add_argument("--scales", default="0.5,1,2", help="loads as rate scales of the traffic (default 0.5,1,2)")
    p.add_argument("--families", default=",".join(("vllm", "specsim", "sglang", "trtllm")),
                   help="families to tune (default all four)")
    p.add_argument("--trials", type=int, default=60, help="trials per family and load (default 60)")
    p.add_argument("--drafters", default=None, help="comma-separated profile drafters (default: all)")
    p.add_argument("--window", default=None, help="tune on requests arriving in START:END seconds of the trace")
    add_engine_args(p)
    p.set_defaults(func=_cmd_compare)


def _cmd_compare(args: argparse.Namespace) -> int:
    import json

    from rich.table import Table

    from specsim.formats.profile import load_profile
    from specsim.formats.traffic import load_traffic
    from specsim.io import check_output_folder, output_set
    from specsim.terminal import console
    from specsim.tuner.compare_engines import HEADER, compare_engines, markdown, plot, table_rows
    from specsim.tuner.objectives import Objective
    from specsim.tuner.space import measured_batch_cap
    from specsim.tuner.tune import check_inputs, time_window

    if not 1 <= args.trials <= 100_000:
        raise SpecsimError(f"--trials must lie in 1..100000, got {args.trials}")
    scales = parse_rates(args.scales)
    families = tuple(f.strip() for f in args.families.split(",") if f.strip())
    cfg = config_from_args(args)
    check_output_folder(args.out, args.force)
    profile = load_profile(args.profile)
    traffic = load_traffic(args.traffic)
    check_inputs(profile, traffic)
    window = _window(args.window)
    if window is not None:
        traffic = time_window(traffic, *window)
    objective = Objective.parse(args.objective, args.slo, None)
    top = measured_batch_cap(profile, cfg.max_num_seqs)
    drafters = [d.strip() for d in args.drafters.split(",")] if args.drafters else None
    t0 = time.perf_counter()
    results = compare_engines(profile, traffic, objective, scales, cfg, families, args.trials,
                              seed=args.seed or 0, space_kw={"max_batch": top, "drafters": drafters},
                              progress=lambda s: print(s, flush=True))
    table = Table(title=f"engine families on {args.traffic.name} ({objective.describe()})")
    for h in HEADER:
        table.add_column(h)
    for row in table_rows(results):
        table.add_row(*row)
    console().print(table)
    with output_set(args.out, COMPARE_FILES, force=args.force, inputs=(args.profile, args.traffic)) as files:
        doc = {"schema": "specsim.compare-engines", "version": 1, "objective": objective.describe(),
               "profile": str(args.profile), "traffic": str(args.traffic), "trials": args.trials,
               "loads": [r.to_dict() for r in results]}
        files.path("comparison.json").write_text(json.dumps(doc, indent=2) + "\n")
        files.path("comparison.md").write_text(markdown(results, objective, f"Engine families on {args.traffic.name}"))
        plot(results, objective, files.path("comparison.png"))
    print(f"{len(families)} families x {len(scales)} loads x {args.trials} trials in {time.perf_counter() - t0:.1f} s; "
          f"wrote {', '.join(COMPARE_FILES)} to {args.out}")
    return 0
