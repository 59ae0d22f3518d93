"""Where does a 1B draft model stop paying for a 70B target on H100? Before and after calibration.

Llama-70B target (4 x H100, the fewest that fit in bf16) with a Llama-1B draft model, static K=4
against speculation off, closed loop at concurrency 1..128, on the analytic profile with the plain
roofline (`--uncalibrated`) and with the calibrated cost model. Acceptance: the profile's synthetic
i.i.d. traces, alpha 0.65 (the default for category conv) and, as a sensitivity check, alpha 0.5.
Traffic: one synthetic trace (lognormal lengths, input mean 512, output mean 256); at each
concurrency the first min(3000, max(150, 25 x concurrency)) requests.

The same study on the command line, for one concurrency (K4.json: drafter
{"name": "draft_model", "method": "draft_model"}, k_schedule [[1, 1048576, 4]]):

    specsim profile-analytic --target llama-70b --drafter llama-1b --gpu h100 --no-ngram --out P.json
    specsim traffic synth --rate 10 --num-requests 3000 --input-mean 512 --input-median 384 \\
        --input-max 4096 --output-mean 256 --output-median 200 --output-max 1024 --category conv --out T.jsonl
    specsim simulate --profile P.json --traffic T.jsonl --policy K4.json --compare-off --concurrency 32

Writes results.json and results.md next to this file. About 30 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

CONCURRENCY = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128)
TRACE_REQUESTS = 3000
K = 4
ALPHAS = (0.65, 0.5)


def crossover(concurrency: list[int], speedup: list[float]) -> float | None:
    """First concurrency where speedup falls to 1, interpolated linearly between measured points."""
    for (c0, s0), (c1, s1) in zip(zip(concurrency, speedup, strict=True), zip(concurrency[1:], speedup[1:],
                                                                                strict=True), strict=False):
        if s0 >= 1.0 > s1:
            return c0 + (c1 - c0) * (s0 - 1.0) / (s0 - s1)
    return None if speedup[-1] >= 1.0 else float(concurrency[0])


def main() -> int:
    from specsim.formats.policy import DrafterRef, Policy
    from specsim.profiler.analytic import analytic_profile
    from specsim.simulator import SimConfig
    from specsim.simulator.run import simulate
    from specsim.traffic.synth import LengthDist, synthesize

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=HERE)
    args = ap.parse_args()

    traffic = synthesize(rate=10.0, num_requests=TRACE_REQUESTS, input_dist=LengthDist(512, 384, 4096),
                         output_dist=LengthDist(256, 200, 1024), category="conv", seed=0)
    drafter = DrafterRef(name="draft_model", method="draft_model", model="llama-1b")
    policies = {"off": Policy(), f"K={K}": Policy.static(drafter, K)}
    results: dict[str, dict] = {}
    for alpha in ALPHAS:
        for label, calibrated in (("uncalibrated roofline", False), ("calibrated", True)):
            prof = analytic_profile(target="llama-70b", drafter_model="llama-1b", gpu="h100", ngram=False,
                                    calibrated=calibrated, alphas={"conv": alpha})
            rows = []
            for c in CONCURRENCY:
                n = min(TRACE_REQUESTS, max(150, 25 * c))
                tps = {}
                for name, pol in policies.items():
                    res = simulate(prof, traffic, pol, SimConfig(concurrency=c, max_requests=n, seed=0))
                    tps[name] = res.summary
                off, on = tps["off"], tps[f"K={K}"]
                rows.append({"concurrency": c, "requests": n, "off_tok_s": off["output_tokens_per_s"],
                             "k4_tok_s": on["output_tokens_per_s"],
                             "speedup": on["output_tokens_per_s"] / off["output_tokens_per_s"],
                             "off_batch": off["mean_decoding_batch"], "k4_batch": on["mean_decoding_batch"],
                             "acceptance_length": on["mean_acceptance_length"]})
                print(f"alpha {alpha} {label:22s} c={c:4d} off {rows[-1]['off_tok_s']:8.1f} tok/s  K={K} "
                      f"{rows[-1]['k4_tok_s']:8.1f} tok/s  speedup {rows[-1]['speedup']:.2f}x", flush=True)
            cs, sp = [r["concurrency"] for r in rows], [r["speedup"] for r in rows]
            results[f"alpha {alpha}, {label}"] = {
                "alpha": alpha, "model": label, "rows": rows, "crossover_concurrency": crossover(cs, sp),
                "hardware": prof.metadata.hardware, "decode_ms_b1_k0": prof.target.decode.step_ms[0][0],
                "draft_ms_b1_k4": prof.drafters["draft_model"].cost.step_ms[0][K]}
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / "results.md").write_text(render(results))
    print(render(results))
    return 0


def render(results: dict[str, dict]) -> str:
    first = next(iter(results.values()))
    lines = [f"Llama-70B + Llama-1B draft on {first['hardware']}, static K={K} against speculation off, closed "
             "loop; throughput is output tokens/s, speedup is K=4 over off (written by crossover.py)."]
    for alpha in ALPHAS:
        labels = [k for k, v in results.items() if v["alpha"] == alpha]
        lines += ["", f"#### Acceptance alpha {alpha}", "",
                  "| concurrency | " + " | ".join(f"{results[lab]['model']}: off | K={K} | speedup" for lab in labels)
                  + " |", "|---|" + "---|---|---|" * len(labels)]
        for i, c in enumerate(CONCURRENCY):
            cells = []
            for lab in labels:
                r = results[lab]["rows"][i]
                cells.append(f"{r['off_tok_s']:.0f} | {r['k4_tok_s']:.0f} | {r['speedup']:.2f}x")
            lines.append(f"| {c} | " + " | ".join(cells) + " |")
        lines.append("")
        for lab in labels:
            x = results[lab]["crossover_concurrency"]
            where = f"at about {x:.0f} clients" if x is not None else f"not below {CONCURRENCY[-1]} clients"
            lines.append(f"- {results[lab]['model']}: speculation stops paying {where} (target step at batch 1 "
                         f"{results[lab]['decode_ms_b1_k0']:.1f} ms; four draft tokens "
                         f"{results[lab]['draft_ms_b1_k4']:.1f} ms).")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
