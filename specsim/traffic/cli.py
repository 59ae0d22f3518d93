"""`specsim traffic import|synth|stats`: bring traces in, generate synthetic ones, summarise them."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from specsim.formats._common import DEFAULT_MAX_BYTES
from specsim.formats.traffic import TIME_UNITS, add_time_unit_arg
from specsim.io import add_force_arg, output_path

_SLOW_BYTES = 32 << 20  # files above this size get a progress note on stderr
FORMATS = ("azure", "burstgpt", "mooncake", "sharegpt", "vllm-bench")
"""`traffic import --format` choices: one module each under specsim/traffic/."""
_ONLY = {
    "time_unit": ("--time-unit", ("burstgpt", "mooncake")),
    "hash_block_size": ("--hash-block-size", ("mooncake",)),
    "model": ("--model", ("burstgpt",)),
    "tokenizer": ("--tokenizer", ("sharegpt",)),
    "rate": ("--rate", ("sharegpt",)),
    "think_time": ("--think-time", ("sharegpt",)),
    "answer_rate": ("--answer-rate", ("sharegpt",)),
    "seed": ("--seed", ("sharegpt",)),
    "run_out": ("--run-out", ("vllm-bench",)),
    "slo": ("--slo", ("vllm-bench",)),
}
"""Format-specific import options and the formats they apply to."""


def register(subparsers: Any) -> None:
    """Add the `traffic` command group to the top-level parser."""
    p = subparsers.add_parser("traffic", help="import, synthesise and summarise request traces")
    sub = p.add_subparsers(dest="traffic_command", metavar="ACTION")
    p.set_defaults(func=lambda args: p.error("choose an action: import, synth or stats"))

    imp = sub.add_parser(
        "import",
        help="convert an external trace (Azure, BurstGPT, Mooncake, ShareGPT, vllm bench) to the traffic JSONL",
        description="Convert an external trace to the traffic JSONL contract (docs/formats.md lists what each format "
                    "reads, its units and what it drops).")
    imp.add_argument("source", metavar="FILE", help="input trace file")
    imp.add_argument("--format", choices=FORMATS, default="azure",
                     help="azure: Azure LLM inference CSV, 2023 or 2024 (default); burstgpt: BurstGPT CSV; "
                          "mooncake: Mooncake/Bailian JSONL with hash_ids; sharegpt: ShareGPT conversations JSON; "
                          "vllm-bench: `vllm bench serve --save-result --save-detailed` JSON")
    imp.add_argument("--out", type=output_path, required=True, help="output traffic JSONL")
    imp.add_argument(
        "--category",
        default="",
        help="category for every request (default: the format's: the file name for azure, Log Type for burstgpt, "
             "the lines' type for mooncake, conv for sharegpt, none for vllm-bench; 'none' for unset)",
    )
    imp.add_argument("--limit", type=int, default=None,
                     help="keep only the first N requests (sharegpt: conversations), reading no further")
    imp.add_argument(
        "--time-unit", choices=tuple(TIME_UNITS), default=None, dest="time_unit",
        help="burstgpt, mooncake: unit of the numeric timestamps (default: the format's, seconds for burstgpt and "
             "milliseconds for mooncake, refusing a trace that looks like the other unit)")
    g = imp.add_argument_group("mooncake")
    g.add_argument("--hash-block-size", type=int, default=None,
                   help="tokens per hash_ids block (default 512, Mooncake's)")
    g = imp.add_argument_group("burstgpt")
    g.add_argument("--model", default=None, help="keep only this model's rows (e.g. ChatGPT, GPT-4)")
    g = imp.add_argument_group("sharegpt")
    g.add_argument("--tokenizer", default=None, metavar="DIR",
                   help="local Hugging Face tokenizer folder for exact token counts (default: estimate chars/4)")
    g.add_argument("--rate", type=float, default=None, help="conversations started per second (default 1)")
    g.add_argument("--think-time", type=float, default=None,
                   help="seconds between an answer and the user's next turn (default 10)")
    g.add_argument("--answer-rate", type=float, default=None,
                   help="output tokens per second assumed for an answer's duration (default 50)")
    g.add_argument("--seed", type=int, default=None, help="random seed of the arrival times (default 0)")
    g = imp.add_argument_group("vllm-bench")
    g.add_argument("--run-out", type=output_path, default=None, metavar="DIR",
                   help="also write the benchmark as a measured run (requests.csv, summary.json) for `specsim compare`")
    g.add_argument("--slo", default=None, help="SLO for the measured run's goodput, e.g. ttft=2s,tpot=50ms")
    add_force_arg(imp)
    imp.set_defaults(func=_cmd_import)

    syn = sub.add_parser("synth", help="generate a synthetic trace (Poisson or bursty Gamma arrivals)")
    syn.add_argument("--out", type=output_path, required=True, help="output traffic JSONL")
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


def _unknown_roles(m: dict[str, Any]) -> str:
    """', N with other roles skipped' for a ShareGPT import that skipped such conversations."""
    n = m.get("unknown_role_conversations", 0)
    return f", {n:,} with other roles than human/gpt/system skipped" if n else ""


def _cmd_import(args: argparse.Namespace) -> int:
    from specsim.errors import SpecsimError
    from specsim.formats.traffic import save_traffic
    from specsim.io import check_output_file, check_output_folder, refuse_input_as_output

    for key, (flag, formats) in _ONLY.items():
        if getattr(args, key) is not None and args.format not in formats:
            why = " (its timestamps are wall-clock times)" if key == "time_unit" and args.format == "azure" else ""
            raise SpecsimError(f"{flag} applies to --format {' or '.join(formats)}, not {args.format}{why}")
    check_output_file(args.out)
    refuse_input_as_output(args.out, (args.source,), "output traffic")
    if args.run_out is not None:
        check_output_folder(args.run_out, args.force, "--run-out folder")
        refuse_input_as_output(args.run_out / "requests.csv", (args.source, args.out))
        refuse_input_as_output(args.run_out / "summary.json", (args.source, args.out))
    path = Path(args.source)
    if path.is_file() and _SLOW_BYTES < path.stat().st_size <= DEFAULT_MAX_BYTES:
        _note(f"reading {path} ({path.stat().st_size / 2**20:.0f} MiB) ...")
    t0 = time.perf_counter()
    category = None if args.category.lower() == "none" else args.category
    notes: list[str] = []
    run = None
    if args.format == "azure":
        from specsim.traffic.azure import import_azure

        tr = import_azure(path, category=category, limit=args.limit)
    elif args.format == "burstgpt":
        from specsim.traffic.burstgpt import import_burstgpt

        tr = import_burstgpt(path, category=category, limit=args.limit, model=args.model, time_unit=args.time_unit)
    elif args.format == "mooncake":
        from specsim.traffic.mooncake import import_mooncake

        tr = import_mooncake(path, category=category, limit=args.limit, time_unit=args.time_unit,
                             hash_block_size=args.hash_block_size)
    elif args.format == "sharegpt":
        from specsim.traffic.sharegpt import import_sharegpt

        tr = import_sharegpt(path, rate=1.0 if args.rate is None else args.rate,
                             think_time=10.0 if args.think_time is None else args.think_time,
                             answer_rate=50.0 if args.answer_rate is None else args.answer_rate,
                             tokenizer=args.tokenizer, seed=args.seed or 0,
                             category="conv" if category == "" else category, limit=args.limit)
    else:
        from specsim.metrics import parse_slo
        from specsim.traffic.vllm_bench import import_vllm_bench, measured_run, read_bench

        slo = parse_slo(args.slo)
        bench = read_bench(path)
        tr = import_vllm_bench(path, category=category or None, limit=args.limit, run=bench)
        if args.run_out is not None:
            run = measured_run(path, slo.get("ttft"), slo.get("tpot"), run=bench)
    save_traffic(tr, args.out)
    if run is not None:
        run.write(args.run_out, force=args.force)
    dt = time.perf_counter() - t0
    m = tr.metadata
    cats = sorted({c for c in tr.categories if c is not None})
    cat = ", ".join(cats[:5]) + (f" (+{len(cats) - 5} more)" if len(cats) > 5 else "") if cats else "none"
    print(f"{_summary(args.out, tr)}, category {cat}, in {dt:.2f} s")
    if m.get("clamped_input") or m.get("clamped_output"):
        names = ("ContextTokens", "GeneratedTokens") if args.format == "azure" else ("input", "output")
        notes.append(f"clamped zero lengths to 1: {m.get('clamped_input', 0)} {names[0]}, "
                     f"{m.get('clamped_output', 0)} {names[1]}")
    if m.get("dropped_failed"):
        what = "with Response tokens 0" if args.format == "burstgpt" else "an error or no output"
        notes.append(f"dropped {m['dropped_failed']:,} failed requests ({what}) from the trace")
    if m.get("other_model_rows"):
        notes.append(f"skipped {m['other_model_rows']:,} rows of other models than {m['model']}")
    if m.get("reordered"):
        notes.append(f"sorted {m['reordered']} out-of-order rows by timestamp")
    if args.format == "mooncake":
        notes.append(f"timestamps read as {m['time_unit']}; {m['requests_with_hash_ids']:,} requests carry hash_ids"
                     + (f" (blocks of {m['hash_block_size']} tokens)" if m.get("hash_block_size") else ""))
    if args.format == "sharegpt":
        notes.append(f"{m['conversations']:,} conversations ({m['skipped_conversations']:,} without an answered "
                     f"turn skipped{_unknown_roles(m)}), arrivals synthesised: {m['generator']['rate']:g} "
                     f"conversations/s, think time "
                     f"{m['generator']['think_time']:g} s, answers at {m['generator']['answer_rate']:g} tokens/s")
        if m["lengths_estimated"]:
            notes.append("token lengths are estimates (characters / 4); give --tokenizer DIR for exact counts")
    if run is not None:
        s = run.summary
        notes.append(f"wrote the measured run to {args.run_out}: {s['completed']}/{s['requests']} requests, "
                     f"TTFT mean {s['ttft_mean']:.3f} s, TPOT mean {s['tpot_mean'] * 1e3:.1f} ms")
    if args.format == "vllm-bench" and m.get("max_concurrency"):
        notes.append(f"the benchmark ran with --max-concurrency {m['max_concurrency']}: simulate it closed loop "
                     f"(--concurrency {m['max_concurrency']})")
    for line in notes:
        print(line)
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
    from specsim.io import check_output_file, refuse_input_as_output
    from specsim.traffic.synth import synthesize

    check_output_file(args.out)
    refuse_input_as_output(args.out, (args.lengths_from,), "output traffic")
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
        from specsim.terminal import console

        console().print(stats_table(stats, title=str(args.trace)))
    return 0
