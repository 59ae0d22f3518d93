"""Scheduler parity: specsim's fast engine against vLLM's own V1 Scheduler on large cases.

For each case it runs the same trace, profile, policy and engine limits through both schedulers
(`simulate(scheduler="fast")` and `simulate(scheduler="vllm")`, the latter driving the installed
vLLM's Scheduler and KVCacheManager without a model) and prints the share of steps whose batch is
identical (requests, tokens, drafts), preemptions and finishes under both, and both wall times.
Target: >= 99% identical steps and equal preemption and finish counts in every case.
Run: .venv/bin/python benchmarks/scheduler_parity.py [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def cases(quick: bool):  # noqa: ANN201
    import numpy as np

    from specsim.formats.policy import DrafterRef, Policy
    from specsim.formats.profile import load_profile
    from specsim.formats.traffic import Traffic
    from specsim.profiler.analytic import analytic_profile
    from specsim.shared_data import azure_trace_path
    from specsim.simulator import SimConfig
    from specsim.traffic.azure import import_azure

    cpu = load_profile(REPO / "profiles" / "smollm2-135m-cpu.json")
    gpu = analytic_profile(target="llama-8b", drafter_model="llama-1b", gpu="h100", k_max=4)
    ngram = DrafterRef(name="ngram", method="ngram")
    draft = DrafterRef(name="draft_model", method="draft_model", model="llama-1b")
    window = 120.0 if quick else 600.0
    out = []
    for name in ("conv", "code"):
        path = azure_trace_path(name)
        if not path.is_file():
            print(f"skipped the {name} trace: {path} not present")
            continue
        tr = import_azure(path)
        tr = tr.head(int((tr.timestamps - tr.timestamps[0] < window).sum()))
        limits = SimConfig(max_num_seqs=64, max_num_batched_tokens=2048, num_kv_blocks=6000)
        label = f"{name}, first {window:.0f} s, 8B+1B H100"
        out += [
            (f"{label}: off (async)", gpu, tr, Policy(), limits),
            (f"{label}: draft K=4 (async)", gpu, tr, Policy.static(draft, 4), limits),
            (f"{label}: K=4 up to 24 (async)", gpu, tr, Policy(drafter=draft, k_schedule=[(1, 24, 4)]), limits),
        ]
        if name == "conv":
            # KV-starved: the conv trace's requests with prompts cut 8x and outputs 2x, at 1 req/s
            head = tr if quick else import_azure(path).head(1200)
            small = Traffic.from_arrays(head.timestamps, np.maximum(head.input_lengths // 8, 1),
                                        np.maximum(head.output_lengths // 2, 1), head.categories)
            for blocks in (120, 200):
                kv = SimConfig(max_num_seqs=16, max_num_batched_tokens=2048, num_kv_blocks=blocks,
                               rate_scale=1.0 / 5.53)
                out.append((f"KV-starved: conv/8 at 1 req/s, CPU, 16 seqs, {blocks} blocks: n-gram K=4",
                            cpu, small, Policy.static(ngram, 4), kv))
            kv = SimConfig(max_num_seqs=16, max_num_batched_tokens=2048, num_kv_blocks=200, rate_scale=1.0 / 5.53)
            out.append(("KV-starved: conv/8 at 1 req/s, CPU, 200 blocks: n-gram K=4 up to 6", cpu, small,
                        Policy(drafter=ngram, k_schedule=[(1, 6, 4)]), kv))
        if name == "code":
            lp = import_azure(path).head(300 if quick else 1000)
            chunk = SimConfig(max_num_seqs=32, max_num_batched_tokens=512, num_kv_blocks=3000, rate_scale=0.05)
            out.append(("code, long prompts in 512-token chunks, CPU: n-gram K=3", cpu, lp,
                        Policy.static(ngram, 3), chunk))
            out.append(("code, long prompts in 512-token chunks, CPU: off", cpu, lp, Policy(), chunk))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2-minute windows and fewer requests")
    args = ap.parse_args()
    try:
        from specsim.simulator.vllm_oracle import vllm_version

        version = vllm_version()
    except Exception as exc:  # noqa: BLE001 - report and skip
        print(f"skipped: {exc}")
        return 0
    from specsim.simulator.parity import compare
    from specsim.simulator.run import simulate

    print(f"vLLM {version}; identical = same requests, tokens and drafts in the step, per replica and step")
    hdr = f"{'case':<72} {'steps':>7} {'identical':>10} {'preempt fast/vLLM':>18} " \
          f"{'finished':>12} {'fast s':>7} {'vLLM s':>7}"
    print(hdr)
    worst = 1.0
    for name, prof, tr, pol, cfg in cases(args.quick):
        t0 = time.perf_counter()
        a = simulate(prof, tr, pol, dataclasses.replace(cfg, scheduler="fast"), detail=True)
        ta = time.perf_counter() - t0
        t0 = time.perf_counter()
        b = simulate(prof, tr, pol, dataclasses.replace(cfg, scheduler="vllm"), detail=True)
        tb = time.perf_counter() - t0
        rep = compare(a, b)
        worst = min(worst, rep.share)
        print(f"{name:<72} {rep.steps:>7} {rep.share:>9.2%} {rep.preemptions[0]:>8}/{rep.preemptions[1]:<9} "
              f"{rep.finished[0]:>5}/{rep.finished[1]:<6} {ta:>7.2f} {tb:>7.1f}", flush=True)
        if rep.first_difference is not None:
            print(f"    first difference at replica/step {rep.first_difference}: fast {rep.rows_a[:6]} "
                  f"vLLM {rep.rows_b[:6]}")
    print(f"worst case: {worst:.2%} identical steps (target >= 99%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
