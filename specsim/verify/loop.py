"""`specsim tune --verify`: after tuning, measure the policy, its runners-up and the baselines on real
servers and keep the measured winner. Plugged into the tuner's CLI by this stage's `register`."""

from __future__ import annotations

import argparse
from typing import Any


def verify_tuned(args: argparse.Namespace, result: Any, profile: Any, traffic: Any) -> Any:
    """Measure the tuned policy, its runners-up and the baselines live; keep the measured winner."""
    import dataclasses

    from specsim.formats.policy import Policy
    from specsim.prompts import load_prompts
    from specsim.verify.config import VerifyConfig, sim_config_for
    from specsim.verify.report import markdown, plot, write_json
    from specsim.verify.run import verify

    out = args.verify_out or args.out.with_name(args.out.name + ".verify")
    prompts = load_prompts(None)
    vcfg = VerifyConfig(repeats=args.verify_repeats, max_requests=args.verify_max_requests,
                        time_limit_s=args.verify_time_limit, runners_up=max(args.runners_up, 0),
                        eager=args.verify_eager or None, seed=args.seed)
    res = verify(result.policy, profile, args.profile, traffic, out, vcfg, sim_config_for(profile, result.policy),
                 prompts=[(q.category, q.text) for q in prompts], prompts_by_id={q.prompt_id: q.text for q in prompts},
                 progress=lambda s: print(f"verify: {s}", flush=True))
    write_json(res, out / "verify.json")
    from specsim.io import atomic_write_text

    atomic_write_text(out / "report.md", markdown(res, f"tune --verify on {args.traffic.name}"))
    if res.candidates:
        plot(res, out / "verify.png")
    # the winner: the best measured candidate when the verdict favours it, else the best baseline
    winner = "policy"
    best_val = None
    for name, c in res.candidates.items():
        v = c["measured"]["value"]
        if best_val is None or (v > best_val if res.direction == "maximize" else v < best_val):
            winner, best_val = name, v
    if res.verdict != "ship" and res.best_baseline:
        winner = res.best_baseline
    pol = result.policy if winner == "policy" else Policy.model_validate(
        {**res.candidates[winner]["policy"], "provenance": result.policy.provenance.model_dump()})
    pol.provenance.verification = {k: v for k, v in res.to_dict().items() if k != "schema"}
    pol.provenance.notes += f"; verified live: {res.verdict} ({res.reason}); shipped {winner}"
    print(f"verify: {res.verdict}. {res.reason}; writing {winner}")
    return dataclasses.replace(result, policy=pol, chosen=winner if winner != "policy" else result.chosen)
