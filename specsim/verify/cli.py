"""`specsim verify POLICY --traffic T --profile P`: prove a policy on the live server before it ships."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from specsim.formats.traffic import add_time_unit_arg
from specsim.io import add_force_arg, output_path
from specsim.verify.config import VerifyConfig, sim_config_for

_D = VerifyConfig()


def register(subparsers: Any) -> None:
    from specsim.tuner.cli import POST_TUNE
    from specsim.verify.loop import verify_tuned

    POST_TUNE["verify"] = verify_tuned  # `tune --verify`
    p = subparsers.add_parser(
        "verify",
        help="replay traffic on real vLLM servers for a policy and its baselines, and decide whether it ships",
        description="Start one real vLLM server (`specsim serve`) per candidate (the policy, speculation off, the "
        "best static K, optionally the tuner's runners-up), replay the same traffic against each with "
        "`specsim loadgen`, interleaving candidates over repeats, and report each one's measured objective with "
        "bootstrap confidence intervals beside the simulator's prediction. Verdict: ship only when the policy is "
        "significantly better than the best baseline. Loopback only; bounded in requests and time; resumable.",
    )
    p.add_argument("policy", help="policy JSON (from `specsim tune`), or static:K[@DRAFTER]")
    p.add_argument("--traffic", required=True, type=Path, help="traffic JSONL to replay")
    p.add_argument("--profile", required=True, type=Path, help="the profile the policy was tuned on")
    p.add_argument("--out", type=output_path, default=Path("verify-out"),
                   help="folder for runs, verify.json, report.md (default verify-out; an earlier verification there "
                        "is resumed)")
    add_force_arg(p)
    p.add_argument("--url", default=None,
                   help="measure a server you run yourself (loopback): only the policy, against its prediction")
    p.add_argument("--repeats", type=int, default=_D.repeats, help="rounds (one fresh server per candidate each)")
    p.add_argument("--max-requests", type=int, default=_D.max_requests, help="requests replayed per run")
    p.add_argument("--time-limit", type=float, default=_D.time_limit_s, help="seconds for the whole verification")
    p.add_argument("--run-timeout", type=float, default=_D.run_timeout_s, help="seconds for one run")
    p.add_argument("--runners-up", type=int, default=_D.runners_up, help="also measure the tuner's N runners-up")
    p.add_argument("--rate-scale", type=float, default=_D.rate_scale, help="multiply the trace's arrival rate")
    p.add_argument("--confidence", type=float, default=_D.confidence)
    p.add_argument("--eager", action="store_true", help="serve without compilation (else as the profile measured)")
    p.add_argument("--prompts", default=None, help="prompt texts for the requests (default: as the profiler)")
    p.add_argument("--seed", type=int, default=_D.seed)
    add_time_unit_arg(p)
    p.set_defaults(func=_cmd)


def _check(args: argparse.Namespace) -> None:
    from specsim.errors import SpecsimError

    if args.repeats < 1 or args.max_requests < 1:
        raise SpecsimError("--repeats and --max-requests must be >= 1")
    if not (args.time_limit > 0 and args.run_timeout > 0):
        raise SpecsimError("--time-limit and --run-timeout must be > 0 seconds")
    if not 0.5 <= args.confidence < 1.0:
        raise SpecsimError("--confidence must lie in [0.5, 1)")
    if args.runners_up < 0 or not args.rate_scale > 0:
        raise SpecsimError("--runners-up must be >= 0 and --rate-scale > 0")
    if args.url is not None:
        from specsim.policies.loadgen import Endpoint

        Endpoint.parse(args.url)


VERIFY_NAMES = re.compile(r"^(runs|verify\.json|report\.md|verify\.png|policy\.json|ship\.json|"
                          r"candidate-[\w.-]+\.json|server-[\w.-]+\.log)$")
"""What `verify` writes into its folder (and resumes from)."""


def check_verify_folder(out: Path, force: bool, inputs: tuple[Any, ...]) -> None:
    """Refuse a verification folder holding files verify did not write (unless `force`), and one where
    verify's files would replace an input (`--out` beside the policy it verifies)."""
    from specsim.io import check_output_dir, refuse_input_as_output

    check_output_dir(out, "verification folder")
    for name in ("policy.json", "ship.json", "verify.json", "report.md"):
        refuse_input_as_output(out / name, inputs, "verify output")
    if out.is_dir() and not force:
        foreign = sorted(e.name for e in out.iterdir() if not VERIFY_NAMES.match(e.name) and not e.name.startswith("."))
        if foreign:
            from specsim.errors import SpecsimError

            shown = ", ".join(foreign[:4])
            raise SpecsimError(f"verification folder {out} holds files verify did not write ({shown}): choose a new "
                               "folder, or pass --force to write beside them")


def _cmd(args: argparse.Namespace) -> int:
    from specsim.formats.policy import Policy, read_policy, save_policy
    from specsim.formats.profile import load_profile
    from specsim.formats.traffic import load_traffic
    from specsim.prompts import load_prompts
    from specsim.verify.report import markdown, plot, write_json
    from specsim.verify.run import verify

    _check(args)
    check_verify_folder(args.out, args.force, (args.policy, args.traffic, args.profile, args.prompts))
    profile = load_profile(args.profile)
    policy = read_policy(args.policy, profile)
    traffic = load_traffic(args.traffic, args.time_unit)
    prompts = load_prompts(args.prompts)
    vcfg = VerifyConfig(repeats=args.repeats, max_requests=args.max_requests, time_limit_s=args.time_limit,
                        run_timeout_s=args.run_timeout, runners_up=args.runners_up, confidence=args.confidence,
                        rate_scale=args.rate_scale, eager=args.eager or None, seed=args.seed)
    res = verify(policy, profile, args.profile, traffic, args.out, vcfg, sim_config_for(profile, policy),
                 prompts=[(q.category, q.text) for q in prompts], prompts_by_id={q.prompt_id: q.text for q in prompts},
                 url=args.url, progress=lambda s: print(f"specsim verify: {s}", flush=True))
    write_json(res, args.out / "verify.json")
    from specsim.io import atomic_write_text

    atomic_write_text(args.out / "report.md", markdown(res, f"verify {Path(args.policy).name} on {args.traffic.name}"))
    if res.candidates:
        plot(res, args.out / "verify.png")
    checked = policy.model_copy(deep=True)
    checked.provenance.verification = {k: v for k, v in res.to_dict().items() if k not in ("schema",)}
    save_policy(checked, args.out / "policy.json")
    ship = checked
    if res.verdict == "don't ship" and res.best_baseline:
        ship = Policy.model_validate({**res.candidates[res.best_baseline]["policy"],
                                      "provenance": {"notes": f"verify chose {res.best_baseline}: {res.reason}"}})
    save_policy(ship, args.out / "ship.json")
    print(f"verdict: {res.verdict}. {res.reason}")
    print(f"wrote {args.out / 'verify.json'}, report.md, policy.json (with the evidence) and ship.json "
          f"({'the policy' if ship is checked else res.best_baseline})")
    return 0
