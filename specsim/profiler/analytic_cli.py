"""`specsim profile-analytic`: write a roofline profile for a named model pair and GPU."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from specsim.profiler.analytic import GPUS, MODELS

    p = sub.add_parser(
        "profile-analytic",
        help="write a roofline (analytic) profile, no engine needed",
        description="Estimate step costs from weight bytes / memory bandwidth vs FLOPs / peak compute "
        "and attach synthetic i.i.d. acceptance traces, so simulation can start before profiling.",
    )
    p.add_argument("--target", default="llama-70b", choices=sorted(MODELS))
    p.add_argument("--drafter", default="llama-1b", help=f"draft model ({', '.join(sorted(MODELS))}) or none")
    p.add_argument("--gpu", default="h100", choices=sorted(GPUS))
    p.add_argument("--tp", type=int, default=None, help="GPUs per replica (default: fewest that fit)")
    p.add_argument("--k-max", type=int, default=8)
    p.add_argument("--no-ngram", action="store_true", help="leave out the n-gram drafter")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    from specsim.errors import SpecsimError
    from specsim.formats.profile import save_profile
    from specsim.profiler.analytic import analytic_profile

    if args.k_max < 1 or args.k_max > 16:
        raise SpecsimError("--k-max must be in 1..16")
    drafter = None if args.drafter.lower() == "none" else args.drafter
    prof = analytic_profile(
        target=args.target, drafter_model=drafter, gpu=args.gpu, tp=args.tp, k_max=args.k_max,
        ngram=not args.no_ngram, seed=args.seed,
    )
    save_profile(prof, args.out)
    dec = prof.target.decode
    print(
        f"wrote {args.out}: {args.target} on {prof.metadata.hardware}, drafters "
        f"{', '.join(prof.drafters) or 'none'}; decode step at B=1,K=0: {dec.step_ms[0][0]:.2f} ms, "
        f"KV cache {prof.target.kv_cache_tokens} tokens"
    )
    return 0
