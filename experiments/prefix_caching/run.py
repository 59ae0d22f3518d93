"""Prefix caching moves the load at which speculation stops paying: a multi-turn chat workload
simulated with vLLM's prefix caching on and off, speculation off against static K, across load.

The workload: conversations of 3-8 turns; each turn's prompt holds the whole conversation so far
(earlier prompts and answers) plus a new user message, so with prefix caching only the new message
is prefilled. Conversations start as a Poisson process; a user thinks 5 s after each answer
(closed loop per conversation is approximated by spacing turns by the answer's expected time).
Profile: analytic Llama-3.1-8B on one H100 (calibrated) with its n-gram drafter.

    .venv/bin/python experiments/prefix_caching/run.py          # about a minute on 2 cores

Writes results/table.md, results/results.json and results/crossover.png: for each setting, the
throughput and mean TPOT of each policy at each load, and the highest load where the best static K
still has a mean TPOT at least 2% lower than speculation off (the crossover).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from specsim.formats.policy import DrafterRef, Policy
from specsim.formats.traffic import Traffic
from specsim.profiler.analytic import analytic_profile
from specsim.simulator import SimConfig, simulate

OUT = Path(__file__).resolve().parent / "results"
RATES = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 12.0, 16.0, 24.0)
"""Conversation starts per second."""
KS = (2, 4)
PAYS = 0.02
"""Speculation pays at a load when the best static K has a mean TPOT at least this much lower than off."""


def conversations(n_conv: int, rate: float, seed: int = 0) -> Traffic:
    """n_conv conversations starting at `rate`/s; turn prompts hold the conversation so far."""
    rng = np.random.default_rng(seed)
    starts = np.cumsum(rng.exponential(1.0 / rate, n_conv))
    rows = []
    for c, t0 in enumerate(starts):
        system = int(rng.integers(200, 800))  # a shared system prompt / document at the start
        turns = int(rng.integers(3, 9))
        history, t = system, float(t0)
        for k in range(turns):
            new = int(rng.integers(20, 200))
            out = int(rng.integers(50, 400))
            prompt = history + new
            rows.append((t, prompt, out, f"c{c}", k))
            history = prompt + out
            t += out * 0.02 + 5.0  # the answer streams at ~50 tokens/s, then the user thinks 5 s
    rows.sort(key=lambda r: r[0])
    ts, inp, out, conv, turn = zip(*rows, strict=True)
    return Traffic.from_arrays(np.array(ts) - ts[0], inp, out, categories=["conv"] * len(rows),
                               conversation_ids=conv, turns=turn, metadata={"rate_conversations": rate})


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    prof = analytic_profile(target="llama-3.1-8b", drafter_model=None, gpu="h100", ngram=True)
    ref = DrafterRef.from_profile(prof, "ngram")
    policies = {"off": Policy(), **{f"K={k}": Policy.static(ref, k) for k in KS}}
    results = []
    for cache in ("on", "off"):
        for rate in RATES:
            traffic = conversations(int(60 * rate) + 40, rate, seed=7)
            for name, pol in policies.items():
                s = simulate(prof, traffic, pol, SimConfig(prefix_caching=cache, max_num_seqs=256)).summary
                results.append({"prefix_caching": cache, "rate": rate, "policy": name, "requests": len(traffic),
                                "tpot_mean": s["tpot_mean"], "ttft_mean": s["ttft_mean"],
                                "output_tokens_per_s": s["output_tokens_per_s"],
                                "hit_rate": s.get("prefix_cache_hit_rate")})
            print(f"prefix caching {cache}, {rate:g} conv/s: " + ", ".join(
                f"{r['policy']} TPOT {r['tpot_mean'] * 1e3:.1f} ms" for r in results[-len(policies):]), flush=True)
    crossover = {}
    for cache in ("on", "off"):
        wins = []
        for rate in RATES:
            rows = {r["policy"]: r for r in results if r["prefix_caching"] == cache and r["rate"] == rate}
            best = min(rows[f"K={k}"]["tpot_mean"] for k in KS)
            wins.append((rate, best < (1 - PAYS) * rows["off"]["tpot_mean"]))
        paying = [r for r, w in wins if w]
        crossover[cache] = max(paying) if paying else None
    (OUT / "results.json").write_text(json.dumps({"rates": RATES, "results": results, "crossover": crossover},
                                                  indent=1) + "\n")
    lines = ["# Prefix caching and where speculation stops paying", "",
             "Multi-turn chat (3-8 turns, the conversation so far in every prompt), analytic Llama-3.1-8B on "
             "one H100 with its n-gram drafter; mean TPOT (ms) per policy.", "",
             "| prefix caching | conversations/s | hit rate | off | " + " | ".join(f"K={k}" for k in KS) + " |",
             "|---|---|---|---|" + "---|" * len(KS)]
    for cache in ("on", "off"):
        for rate in RATES:
            rows = {r["policy"]: r for r in results if r["prefix_caching"] == cache and r["rate"] == rate}
            hit = rows["off"]["hit_rate"]
            lines.append(f"| {cache} | {rate:g} | {'-' if hit is None else f'{hit:.0%}'} | "
                         + " | ".join(f"{rows[p]['tpot_mean'] * 1e3:.1f}" for p in policies) + " |")
    lines += ["", f"Highest load at which the best static K still has a mean TPOT at least {PAYS:.0%} lower than "
              "speculation off: "
              + "; ".join(f"prefix caching {c}: {'never' if v is None else f'{v:g} conversations/s'}"
                          for c, v in crossover.items()) + "."]
    (OUT / "table.md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for cache, style in (("on", "-"), ("off", "--")):
        for name in policies:
            ys = [next(r["tpot_mean"] for r in results if r["prefix_caching"] == cache and r["rate"] == rate
                       and r["policy"] == name) * 1e3 for rate in RATES]
            ax.plot(RATES, ys, style, marker="o", ms=3, label=f"{name}, prefix caching {cache}")
    ax.set_xlabel("conversations started per second")
    ax.set_ylabel("mean TPOT (ms)")
    ax.set_xscale("log")
    ax.set_title("Where speculation stops paying, with and without prefix caching")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(OUT / "crossover.png", dpi=120)
    print("\n".join(lines[-1:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
