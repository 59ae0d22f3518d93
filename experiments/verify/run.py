"""tune, then verify on the live server, at three loads: the shipped policy must never be measurably
worse than the best baseline.

Traffic: the arrival pattern of a real trace (the Azure conv trace's first requests, with their
burstiness) rate-scaled to this machine's capacity at light, crossover and saturated load (0.3x,
0.8x and 1.3x of the simulated capacity without speculation); each request is one of the profile's
own prompts with its natural output length, so every request replays its measured acceptance trace.
For each load: `specsim tune` (mean TPOT, all of the profile's drafters) writes a policy, then
`specsim verify` starts one real vLLM server per candidate (the policy, speculation off, the best
static K) and decides ship / don't ship from bootstrap intervals. Each load's folder is resumable
(verify skips runs already on disk).

    .venv/bin/python experiments/verify/run.py --profile profiles/smollm2-135m-cpu.json

Writes results/<load>/{traffic.jsonl, policy.json, verify/} and results/summary.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "fidelity"))

from study import engine_limits, profile_lengths, prompt_set  # noqa: E402

from specsim.formats.policy import Policy  # noqa: E402
from specsim.formats.profile import load_profile  # noqa: E402
from specsim.formats.traffic import Traffic, save_traffic  # noqa: E402
from specsim.shared_data import azure_trace_path  # noqa: E402
from specsim.simulator import SimConfig, simulate  # noqa: E402

LOADS = {"light": 0.3, "crossover": 0.8, "saturated": 1.3}


def real_pattern(n: int, rate: float, prompts: list, lengths: dict[str, int], seed: int) -> Traffic:
    """n arrivals with the Azure conv trace's gaps (or Poisson where the trace is absent), scaled to
    `rate` requests/s, each carrying one of the profile's prompts."""
    path = azure_trace_path("conv")
    rng = np.random.default_rng(seed)
    if path.is_file():
        from specsim.traffic.azure import import_azure

        ts = import_azure(path, limit=n).timestamps
        ts = (ts - ts[0]) * (len(ts) / max(ts[-1], 1e-9)) / rate  # the trace's own burstiness, at `rate`
        source = f"Azure conv first {n} arrivals, scaled to {rate:.3f} req/s"
    else:
        ts = np.concatenate([[0.0], np.cumsum(rng.exponential(1.0 / rate, n - 1))])
        source = f"Poisson {rate:.3f} req/s (Azure trace absent)"
    pick = np.resize(rng.permutation(len(prompts)), n)
    rows = [prompts[j] for j in pick]
    return Traffic.from_arrays(ts, [lengths[r[0]] for r in rows], [r[3] for r in rows],
                               categories=[r[1] for r in rows], prompt_ids=[r[0] for r in rows],
                               metadata={"source": source})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="profiles/smollm2-135m-cpu.json")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--trials", type=int, default=80)
    ap.add_argument("--loads", default=",".join(LOADS))
    args = ap.parse_args()
    profile = load_profile(args.profile)
    limits = engine_limits(profile)
    prompts, _ = prompt_set(profile)
    lengths = profile_lengths(profile)
    flood = real_pattern(96, 100.0, prompts, lengths, seed=1)
    cap = float(simulate(profile, flood, Policy(), SimConfig(**limits)).summary["requests_per_s"])
    print(f"simulated capacity without speculation: {cap:.3f} req/s", flush=True)
    rows = []
    for name in args.loads.split(","):
        folder = args.out / name
        folder.mkdir(parents=True, exist_ok=True)
        traffic_path, policy_path = folder / "traffic.jsonl", folder / "policy.json"
        if not traffic_path.exists():
            save_traffic(real_pattern(args.requests, LOADS[name] * cap, prompts, lengths, seed=3), traffic_path)
        py = [sys.executable, "-m", "specsim"]
        t0 = time.monotonic()
        if not policy_path.exists():
            subprocess.run([*py, "tune", "--profile", args.profile, "--traffic", str(traffic_path), "--objective",
                            "mean-tpot", "--trials", str(args.trials), "--no-progress", "--runners-up", "2",
                            "--out", str(policy_path)], check=True)
        t1 = time.monotonic()
        subprocess.run([*py, "verify", str(policy_path), "--profile", args.profile, "--traffic", str(traffic_path),
                        "--repeats", str(args.repeats), "--max-requests", str(args.requests),
                        "--out", str(folder / "verify")], check=True)
        t2 = time.monotonic()
        ver = json.loads((folder / "verify" / "verify.json").read_text())
        rows.append((name, ver, t1 - t0, t2 - t1))
    lines = ["# tune, then verify live, at three loads", "",
             f"Profile `{args.profile}`; simulated capacity without speculation {cap:.3f} req/s; "
             f"{args.requests} requests per run, {args.repeats} round(s); objective mean TPOT (lower is better).", "",
             "| load | tuned policy | verdict | best baseline | candidate | measured (95% interval) | predicted | "
             "measured gain over best baseline (95%) | predicted gain |", "|---|---|---|---|---|---|---|---|---|"]
    for name, ver, _, _ in rows:
        for cand, c in ver["candidates"].items():
            m, g = c["measured"], c["gain_over_best_baseline"]
            gtxt = "-" if g is None else f"{g['value']:+.1%} ({g['low']:+.1%} .. {g['high']:+.1%})"
            ptxt = "-" if c["predicted_gain"] is None else f"{c['predicted_gain']:+.1%}"
            desc = c["policy"].get("k_schedule") or "off"
            first = cand == "policy"
            lines.append(f"| {name} | {desc if first else ''} | {ver['verdict'] if first else ''} "
                         f"| {ver['best_baseline'] if first else ''} | {cand} | {m['value'] * 1e3:.1f} ms "
                         f"({m['low'] * 1e3:.1f} .. {m['high'] * 1e3:.1f}) | {c['predicted'] * 1e3:.1f} ms | {gtxt} "
                         f"| {ptxt} |")
    lines += ["", "Time: " + "; ".join(f"{n}: tune {a:.0f} s, verify {b:.0f} s" for n, _, a, b in rows) + "."]
    (args.out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
