"""`specsim profile-analytic`: write an analytic profile for a named model pair and GPU."""

from __future__ import annotations

import argparse
from pathlib import Path

from specsim.io import output_path


def register(sub: argparse._SubParsersAction) -> None:
    from specsim.profiler.hardware import DTYPE_BYTES, GPUS, MODEL_ALIASES, MODELS

    models = ", ".join(sorted([*MODELS, *MODEL_ALIASES]))
    p = sub.add_parser(
        "profile-analytic",
        help="write an analytic (calibrated roofline) profile, no engine needed",
        description="Estimate step costs from weight bytes / memory bandwidth and FLOPs / peak compute, with "
        "efficiency terms fitted to published measurements (docs/analytic-calibration.md), and attach "
        "synthetic i.i.d. acceptance traces (or a measured profile's), so simulation can start before "
        "profiling or before the hardware exists.",
    )
    p.add_argument("--target", default="llama-70b", help=f"target model ({models})")
    p.add_argument("--drafter", default="llama-1b", help="draft model (same names) or none")
    p.add_argument("--gpu", default="h100", help=f"accelerator ({', '.join(sorted(GPUS))})")
    p.add_argument("--tp", type=int, default=None, help="tensor-parallel GPUs per replica (default: fewest that fit)")
    p.add_argument("--dtype", default="bf16", help=f"weight dtype ({', '.join(DTYPE_BYTES)})")
    p.add_argument("--k-max", type=int, default=8)
    p.add_argument("--eagle", action="store_true", help="also model an EAGLE/MTP-style head drafter named 'eagle'")
    p.add_argument("--family", action="append", default=[],
                   choices=("heads", "parallel", "block", "tree", "overlapped"),
                   help="also model a drafter of this family: heads (Medusa-style, 'medusa'), parallel (P-EAGLE, "
                        "'p-eagle'), block (DFlash-style, 'block'), tree (EAGLE-2's 60-token tree, 'eagle-tree'), "
                        "overlapped (the draft model drafting beside the target, 'ssd'); repeatable")
    p.add_argument("--heads", type=int, default=4, help="--family heads: the number of heads (default 4)")
    p.add_argument("--tree-size", type=int, action="append", default=None,
                   help="--family tree: tokens verified per sequence besides the root (default 59, EAGLE-2's); "
                        "repeat for several sizes, each with its --tree-depth, so a policy can pick one per batch size")
    p.add_argument("--tree-depth", type=int, action="append", default=None,
                   help="--family tree: the tree's depth (default 6), one per --tree-size")
    p.add_argument("--hit-rate", type=float, default=0.7,
                   help="--family overlapped: how often the verification outcome was pre-drafted (default 0.7)")
    p.add_argument("--no-ngram", action="store_true", help="leave out the n-gram drafter")
    p.add_argument("--uncalibrated", action="store_true",
                   help="the plain roofline (80%% of peak bandwidth, 60%% of peak FLOPs, 1.5 ms per step)")
    p.add_argument("--acceptance-from", type=Path, default=None, metavar="P.json",
                   help="take acceptance traces from a measured profile instead of i.i.d. alpha")
    p.add_argument("--acceptance-drafter", default=None, metavar="NAME",
                   help="with --acceptance-from: the measured drafter to copy (default: each of its drafters)")
    p.add_argument("--acceptance-rates", action="append", default=None, metavar="RATES",
                   help="per-position acceptance rates as vLLM's counters report them (accepted at position j / "
                        "drafts), for every model-based drafter: 0.8,0.6,0.4,0.3, or per K: k2=0.77,0.55 "
                        "(repeatable); replaces the assumed alpha")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=output_path, required=True, help="profile JSON to write")
    p.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    from specsim.errors import SpecsimError
    from specsim.formats.notice import estimated_costs_notice
    from specsim.formats.profile import load_profile, save_profile
    from specsim.profiler.analytic import analytic_profile

    if args.k_max < 1 or args.k_max > 16:
        raise SpecsimError("--k-max must be in 1..16")
    if args.tp is not None and args.tp < 1:
        raise SpecsimError("--tp must be >= 1")
    if not 0 <= args.seed < 1 << 32:
        raise SpecsimError(f"--seed must lie in 0..2^32-1, got {args.seed}")
    from specsim.io import check_output_file, refuse_input_as_output

    check_output_file(args.out, "profile")
    refuse_input_as_output(args.out, (args.acceptance_from,), "profile")
    rates = None
    if args.acceptance_rates:
        from specsim.formats.acceptance_rates import parse_rates

        rates = parse_rates(args.acceptance_rates)
        if args.acceptance_from is not None:
            raise SpecsimError("give --acceptance-rates or --acceptance-from, not both")
    if args.acceptance_drafter and args.acceptance_from is None:
        raise SpecsimError("--acceptance-drafter needs --acceptance-from")
    measured = load_profile(args.acceptance_from) if args.acceptance_from is not None else None
    if measured is not None and measured.metadata.source != "measured":
        raise SpecsimError(f"--acceptance-from {args.acceptance_from} is an analytic profile; give a measured one")
    drafter = None if args.drafter.lower() == "none" else args.drafter
    sizes, depths = args.tree_size or [59], args.tree_depth or [6]
    if len(sizes) != len(depths):
        raise SpecsimError(f"give one --tree-depth per --tree-size ({len(sizes)} sizes, {len(depths)} depths)")
    trees = tuple(zip(sizes, depths, strict=True))
    prof = analytic_profile(
        target=args.target, drafter_model=drafter, gpu=args.gpu, tp=args.tp, k_max=args.k_max,
        ngram=not args.no_ngram, seed=args.seed, calibrated=not args.uncalibrated, dtype=args.dtype.lower(),
        eagle=args.eagle, acceptance_from=measured, acceptance_drafter=args.acceptance_drafter,
        families=tuple(args.family), heads=args.heads, trees=trees, hit_rate=args.hit_rate,
    )
    if rates is not None:
        from specsim.formats.acceptance_rates import apply_rates

        prof, _ = apply_rates(prof, rates, seed=args.seed)
    save_profile(prof, args.out)
    dec = prof.target.decode
    print(
        f"wrote {args.out}: {args.target} on {prof.metadata.hardware}, drafters "
        f"{', '.join(prof.drafters) or 'none'}; decode step at B=1,K=0: {dec.step_ms[0][0]:.2f} ms, "
        f"KV cache {prof.target.kv_cache_tokens} tokens"
    )
    for kind, info in prof.metadata.analytic.get("acceptance_from", {}).items():
        print(f"acceptance of {kind!r}: {info['traces']} measured traces of {info['measured_drafter']!r} "
              f"({info['target_model']} on {info['hardware']}), K up to {info['k_max']}")
    from specsim.formats.acceptance_rates import acceptance_source_text

    for name in prof.drafters:
        print(f"acceptance of {name!r}: {acceptance_source_text(prof, name)}")
    print(estimated_costs_notice(prof))
    return 0
