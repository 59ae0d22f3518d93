"""`specsim traffic import|synth|stats`: bring traces in, generate synthetic ones, summarise them."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from specsim.formats.traffic import add_time_unit_arg

_SLOW_BYTES = 32 << 20  # files above this size get a progress note on stderr


def register(subparsers: Any) -> None:
    """Add the `traffic` command group to the top-level parser."""
    p = subparsers.add_parser("traffic", help="import, synthesise and summarise request traces")
    sub = p.add_subparsers(dest="traffic_command", metavar="ACTION")
    p.set_defaults(func=lambda args: p.error("choose an action: import, synth or stats"))

    imp = sub.add_parser("import", help="convert an external trace (Azure CSV) to the traffic JSONL contract")
    imp.add_argument("csv", metavar="CSV", help="input trace file")
    imp.add_argument("--format", choices=["azure"], default="azure", help="input format (default: azure)")
    imp.add_argument("--out", required=True, help="output traffic JSONL")
    imp.add_argument(
        "--category",
        default="",
        help="category for every request (default: from the file name, e.g. conv/code; 'none' for unset)",
    )
    imp.add_argument("--limit", type=int, default=None, help="keep only the first N requests")
    imp.set_defaults(func=_cmd_import)

    syn = sub.add_parser("synth", help="generate a synthetic trace (Poisson or bursty Gamma arrivals)")
    syn.add_argument("--out", required=True, help="output traffic JSONL")
    rate = syn.add_mutually_exclusive_group()
    rate.add_argument("--rate", type=float, help="arrival rate in requests/s")
    rate.add_argument("--rate-scale", type=float, help="multiple of the --lengths-from trace's rate")
    size = syn.add_mutually_exclusive_group()
    size.add_argument("--duration", type=float, help="seconds of arrivals (default: the source trace's)")
    size.add_argument("--num-requests", type=int, help="number of requests")
    syn.add_argument("--arrival", choices=["poisson", "gamma"], default="poisson", help="arrival process")
    syn.add_argument("--cv", type=float, default=None, help="gamma: CV of inter-arrival gaps (1 = Poisson)")
    syn.add_argument("--lengths-from", metavar="T.jsonl", help="resample whole requests from a trace")
    syn.add_argument("--input-mean", type=float, help="mean prompt length in tokens")
    syn.add_argument("--input-median", type=float, help="median prompt length (lognormal; omit for fixed)")
    syn.add_argument("--input-max", type=int, help="clip prompt lengths at this value")
    syn.add_argument("--output-mean", type=float, help="mean output length in tokens")
    syn.add_argument("--output-median", type=float, help="median output length (lognormal; omit for fixed)")
    syn.add_argument("--output-max", type=int, help="clip output lengths at this value")
    syn.add_argument("--category", default=None, help="category for every request")
    syn.add_argument("--seed", type=int, default=0, help="random seed (same seed, same trace)")
    add_time_unit_arg(syn)
    syn.set_defaults(func=_cmd_synth)

    st = sub.add_parser("stats", help="print count, rate, burstiness and length percentiles of a trace")
    st.add_argument("trace", metavar="T.jsonl", help="traffic JSONL")
    st.add_argument("--json", action="store_true", help="print the statistics as JSON")
    add_time_unit_arg(st)
    st.set_defaults(func=_cmd_stats)


def _note(msg: str) -> None:
    print(f"specsim: {msg}", file=sys.stderr, flush=True)


def _summary(out: str, tr: Any) -> str:
    return f"wrote {out}: {len(tr):,} requests over {tr.duration:,.1f} s ({tr.rate:.3f} req/s)"


def _cmd_import(args: argparse.Namespace) -> int:
    from specsim.formats.traffic import save_traffic
    from specsim.io import check_output_file
    from specsim.traffic.azure import import_azure

    check_output_file(args.out)
    path = Path(args.csv)
    if path.is_file() and path.stat().st_size > _SLOW_BYTES:
        _note(f"reading {path} ({path.stat().st_size / 2**20:.0f} MiB) ...")
    t0 = time.perf_counter()
    category = None if args.category.lower() == "none" else args.category
    tr = import_azure(path, category=category, limit=args.limit)
    save_traffic(tr, args.out)
    dt = time.perf_counter() - t0
    m = tr.metadata
    cat = m.get("category") or "none"
    print(f"{_summary(args.out, tr)}, category {cat}, in {dt:.2f} s")
    if m["clamped_input"] or m["clamped_output"]:
        print(
            f"clamped zero lengths to 1: {m['clamped_input']} ContextTokens, "
            f"{m['clamped_output']} GeneratedTokens"
        )
    if m["reordered"]:
        print(f"sorted {m['reordered']} out-of-order rows by timestamp")
    return 0


def _dist(mean: float | None, median: float | None, cap: int | None, side: str) -> Any:
    from specsim.errors import SpecsimError
    from specsim.traffic.synth import LengthDist

    if mean is None:
        if median is not None or cap is not None:
            raise SpecsimError(f"--{side}-median/--{side}-max need --{side}-mean")
        return None
    return LengthDist(mean=mean, median=median, max=cap)


def _cmd_synth(args: argparse.Namespace) -> int:
    from specsim.errors import SpecsimError
    from specsim.formats.traffic import load_traffic, save_traffic
    from specsim.io import check_output_file
    from specsim.traffic.synth import synthesize

    check_output_file(args.out)
    source = load_traffic(args.lengths_from, args.time_unit) if args.lengths_from else None
    inp = _dist(args.input_mean, args.input_median, args.input_max, "input")
    out = _dist(args.output_mean, args.output_median, args.output_max, "output")
    if source is not None and inp is not None:
        raise SpecsimError("give --lengths-from or --input-mean/--output-mean, not both")
    if args.cv is not None and args.arrival == "poisson" and args.cv != 1.0:
        raise SpecsimError("--cv needs --arrival gamma (Poisson arrivals have CV 1)")
    tr = synthesize(
        rate=args.rate,
        rate_scale=args.rate_scale,
        duration=args.duration,
        num_requests=args.num_requests,
        arrival=args.arrival,
        cv=1.0 if args.cv is None else args.cv,
        source=source,
        input_dist=inp,
        output_dist=out,
        category=args.category,
        seed=args.seed,
    )
    if args.lengths_from:
        tr.metadata["lengths"]["from"] = str(args.lengths_from)
    save_traffic(tr, args.out)
    print(_summary(args.out, tr))
    return 0


def _cmd_stats(args: argparse.Namespace) -> int:
    from specsim.formats.traffic import load_traffic
    from specsim.traffic.stats import stats_table, traffic_stats

    tr = load_traffic(args.trace, args.time_unit)
    stats = traffic_stats(tr)
    if args.json:
        print(json.dumps(stats, indent=2))
    else:
        from rich.console import Console

        Console().print(stats_table(stats, title=str(args.trace)))
    return 0
