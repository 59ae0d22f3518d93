"""specsim against Vidur, side by side: the same trace, engine limits and step costs, speculation off.

Replays the Azure conv trace through specsim and through Vidur (PyPI vidur==0.0.26, which has no
speculative decoding) and prints, for each, the wall and CPU time of the simulation loop,
simulated requests per second, the specsim/Vidur ratio against the target (at least 20x Vidur),
and, for the record, both simulators' predicted throughput and latency.

Vidur runs in a venv of its own under the benchmark cache (created with `python -m venv` and pip
on first use, about 90 s and 100 packages; reused afterwards), never in the project's venv, as a
subprocess that reports its own loop timings as JSON. It gets its step costs without the model
hub: specsim's analytic 70B H100 profile (the one sim_speed.py uses) is written as Vidur's own
prediction tables (per-layer op times keyed as Vidur looks them up), laid out as the offline
Hugging Face cache Vidur reads before it would train anything. The tables split specsim's step
time over Vidur's ops so that Vidur's sum reproduces it (see `write_vidur_tables`).

Run: .venv/bin/python benchmarks/vs_vidur.py [--max-requests N] [--vidur-python PATH]
     (or SPECSIM_VIDUR_PYTHON=PATH to reuse an interpreter that already has vidur 0.0.26)
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import lzma
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from specsim.shared_data import azure_trace_path

TRACE = azure_trace_path("conv")
VIDUR_VERSION = "0.0.26"
VIDUR_MODEL = "meta-llama/Llama-2-70b-hf"  # Vidur's built-in config of the 70B target (80 layers, GQA)
VIDUR_LAYERS = 80
VIDUR_TP = 4  # as the profile's 4 x H100 (Vidur's memory planner refuses 70B on one H100, even with a block count)
KV_GRANULARITY = 256  # Vidur's default: decode/prefill KV sizes are rounded up to this
TARGET_RATIO = 20.0
RUNNER = Path(__file__).with_name("vidur_runner.py")
PER_TOKEN_OPS = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj", "mlp_act", "attn_rope",
                 "attn_kv_cache_save", "input_layernorm", "post_attention_layernorm", "add")


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "specsim" / "benchmarks"


def _round_up(x: int, m: int) -> int:
    return (x + m - 1) // m * m


def _vidur_version(python: str) -> str | None:
    out = subprocess.run([python, "-c", "import importlib.metadata as m; print(m.version('vidur'))"],
                         capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else None


def ensure_vidur(cache: Path, python: str | None) -> tuple[str, bool]:
    """Interpreter that has vidur==0.0.26, and whether it is the benchmark's own venv."""
    if python:
        found = _vidur_version(python)
        if found != VIDUR_VERSION:
            sys.exit(f"{python} has vidur {found or 'not installed'}, this benchmark needs {VIDUR_VERSION}")
        return python, False
    venv = cache / "vidur-venv"
    py = venv / "bin" / "python"
    if py.exists() and _vidur_version(str(py)) == VIDUR_VERSION:
        return str(py), True
    print(f"creating {venv} and installing vidur=={VIDUR_VERSION} from PyPI (first use: about 90 s)...",
          flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                          f"vidur=={VIDUR_VERSION}"], capture_output=True, text=True)
    if pip.returncode != 0:
        sys.stderr.write(pip.stdout[-4000:] + pip.stderr[-4000:])
        sys.exit(f"pip install vidur=={VIDUR_VERSION} into {venv} failed (exit {pip.returncode})")
    return str(py), True


def runner_json(python: str, *args: str) -> dict[str, Any]:
    """Run vidur_runner.py in Vidur's interpreter; its last 'VIDUR_RESULT {json}' line is the answer."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="disabled", PYTHONPATH="")
    proc = subprocess.run([python, str(RUNNER), *args], capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("VIDUR_RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        sys.exit(f"Vidur runner failed (exit {proc.returncode})")
    out: dict[str, Any] = json.loads(lines[-1].removeprefix("VIDUR_RESULT "))
    return out


def write_vidur_tables(cost: Any, out: Path, layers: int, max_batch: int, max_tokens: int,
                       max_chunk: int, max_batch_tokens: int) -> None:
    """specsim's step time as Vidur's prediction tables (ms per layer; Vidur multiplies by layers).

    Vidur times a batch as layers x (per-token ops at the batch's total tokens rounded up to 8
    + decode attention at (decode rows B, mean KV rounded up to 256) + prefill attention summed
    over prefill rows at (KV rounded up to 256, chunk rounded up to 32)). specsim (speculation off)
    times it as T(B, context) + (P(prefill tokens) - c) with a decode part, or P(prefill tokens)
    alone, c being the prefill curve's intercept. So the per-token ops carry c (mlp_up_proj, the
    rest 0), decode attention T(B, B x KV) - c and prefill attention P(chunk) - c: Vidur's sum is
    specsim's step time for decode-only, prefill-only and mixed steps with one prefill chunk, up to
    Vidur's rounding of the keys (each table is evaluated at the middle of its rounding bucket).
    With several chunks in one step Vidur adds P per chunk where specsim takes P of their sum.
    """
    from specsim.simulator import kernel

    (out / "compute").mkdir(parents=True, exist_ok=True)
    (out / "network").mkdir(parents=True, exist_ok=True)
    ms = 1e3 / layers
    c = float(cost.arrays.cf[kernel.C_PREINTERCEPT])

    def write(name: str, cols: list[np.ndarray], values: np.ndarray) -> None:
        # Vidur's prediction-file format: columns X_0[, X_1] (the key) and prediction, xz-compressed CSV
        with lzma.open(out / f"{name}.csv.xz", "wt", newline="") as f:
            w = csv.writer(f)
            w.writerow([*(f"X_{i}" for i in range(len(cols))), "prediction"])
            w.writerows(zip(*(col.tolist() for col in cols), values.tolist(), strict=True))

    tokens = np.arange(1, _round_up(max(max_tokens, max_batch_tokens, max_batch), 8) + 9)
    for op in PER_TOKEN_OPS:
        write(f"compute/{op}", [tokens], np.full(tokens.size, c * ms if op == "mlp_up_proj" else 0.0))
    kv = np.arange(0, _round_up(max_tokens, KV_GRANULARITY) + 1, KV_GRANULARITY)
    kv_mid = np.maximum(kv - (KV_GRANULARITY - 1) / 2, 1.0)
    b = np.arange(1, max_batch + 1)
    dec = np.array([[cost.step_s(int(bb), 0.0, 0, float(bb * k)) - c for k in kv_mid] for bb in b])
    bg, kg = np.meshgrid(b, kv, indexing="ij")
    write("compute/attn_decode", [bg.ravel(), kg.ravel()], dec.ravel() * ms)
    chunks = np.arange(32, _round_up(max_chunk, 32) + 1, 32)
    pre = np.array([cost.prefill_s(float(ch) - 15.5) - c for ch in chunks])  # type: ignore[arg-type]
    kg2, cg = np.meshgrid(kv, chunks, indexing="ij")
    write("compute/attn_prefill", [kg2.ravel(), cg.ravel()], np.tile(pre, kv.size) * ms)
    # tensor-parallel all-reduce (keyed by tokens rounded up to 8): inside specsim's step time already
    write("network/all_reduce", [tokens], np.zeros(tokens.size))


def check_costs(python: str, work: Path, spec: dict[str, Any], cost: Any) -> None:
    """Vidur's predicted time of every batch it ran against specsim's step time for the same
    composition (decode rows with their KV tokens as context, prefill tokens)."""
    path = work / "spec-check.json"
    path.write_text(json.dumps({**spec, "record_batches": True}, indent=1))
    v = runner_json(python, "run", str(path))
    b = np.asarray(v["batches"], dtype=np.float64).reshape(-1, 5)
    ours = np.array([cost.step_s(int(n), 0.0, int(p), float(ctx)) for n, ctx, _, p, _ in b])
    rel = b[:, 4] / ours - 1.0
    kinds = {"decode only": (b[:, 0] > 0) & (b[:, 2] == 0), "prefill only": (b[:, 0] == 0) & (b[:, 2] > 0),
             "mixed, 1 chunk": (b[:, 0] > 0) & (b[:, 2] == 1), "2+ chunks": b[:, 2] >= 2}
    print(f"step-cost check: {len(b)} Vidur batches, Vidur's time / specsim's step time - 1")
    print(f"{'batches':<16} {'count':>7} {'mean %':>8} {'mean |%|':>9} {'max |%|':>8}")
    for name, m in {"all": np.ones(len(b), dtype=bool), **kinds}.items():
        if m.any():
            r = rel[m] * 100
            print(f"{name:<16} {int(m.sum()):>7} {r.mean():>8.3f} {np.abs(r).mean():>9.3f} {np.abs(r).max():>8.3f}")
    print(f"total busy time: Vidur {b[:, 4].sum():.1f} s, specsim's costs {ours.sum():.1f} s")


def load_avg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def main() -> int:
    from specsim.formats.policy import Policy
    from specsim.profiler.analytic import analytic_profile
    from specsim.simulator import SimConfig, simulate
    from specsim.simulator.costs import StepCostModel
    from specsim.traffic.azure import import_azure

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trace", type=Path, default=TRACE)
    ap.add_argument("--max-requests", type=int, default=None, help="replay only the first N requests")
    ap.add_argument("--repeats", type=int, default=3, help="specsim runs (best of); Vidur runs once")
    ap.add_argument("--vidur-python", default=os.environ.get("SPECSIM_VIDUR_PYTHON"),
                    help="interpreter that already has vidur 0.0.26 (default: the benchmark's own venv)")
    ap.add_argument("--cache-dir", type=Path, default=default_cache())
    ap.add_argument("--vidur-scheduler", choices=("sarathi", "vllm"), default="sarathi",
                    help="sarathi (chunked prefill with decodes first, as vLLM V1 and specsim schedule) or "
                         "vllm (Vidur's vLLM V0: whole prompts, prefill-only or decode-only steps)")
    ap.add_argument("--max-num-seqs", type=int, default=256)
    ap.add_argument("--max-num-batched-tokens", type=int, default=8192)
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--num-kv-blocks", type=int, default=None,
                    help="KV blocks as vLLM counts them, its null block included (default: the profile's capacity)")
    ap.add_argument("--check-costs", action="store_true",
                    help="instead of timing, compare Vidur's time of every batch it runs with specsim's step "
                         "time for the same composition (use with --max-requests)")
    args = ap.parse_args()
    if not args.trace.is_file():
        print(f"skipped: {args.trace} not present")
        return 0
    load_start = load_avg()

    traffic = import_azure(args.trace)
    if args.max_requests:
        traffic = traffic.head(args.max_requests)
    profile = analytic_profile(target="llama-70b", drafter_model="llama-1b", gpu="h100", calibrated=False)
    blocks = args.num_kv_blocks or profile.target.kv_cache_tokens // args.block_size
    inp = np.asarray(traffic.input_lengths, dtype=np.int64)
    outp = np.asarray(traffic.output_lengths, dtype=np.int64)
    longest = int((inp + outp).max())
    if args.vidur_scheduler == "vllm" and args.max_num_batched_tokens < longest:
        sys.exit(f"--vidur-scheduler vllm cannot chunk prompts: --max-num-batched-tokens must be >= {longest}")
    cfg = SimConfig(max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens,
                    block_size=args.block_size, num_kv_blocks=blocks,
                    chunked_prefill=args.vidur_scheduler == "sarathi",
                    async_scheduling="off", prefix_caching="off")  # Vidur has neither
    print(f"trace: {args.trace.name}, {len(traffic)} requests over {traffic.duration:.0f} s; profile: "
          f"{profile.metadata.hardware}, analytic Llama-70B; speculation off")
    print(f"engine limits (both): max_num_seqs {cfg.max_num_seqs}, max_num_batched_tokens "
          f"{cfg.max_num_batched_tokens}, {blocks} KV blocks of {cfg.block_size} tokens "
          f"(vLLM's count, 1 null block: {blocks - 1} usable); Vidur scheduler: {args.vidur_scheduler}")

    # Vidur side: its venv, the restart fix, the trace and tables in its formats
    cache: Path = args.cache_dir
    python, own = ensure_vidur(cache, args.vidur_python)
    if own:
        fix = runner_json(python, "patch-restart")
        fix_note = f"Request.restart fix: {fix['status']} in {fix['file']}"
    else:
        fix_note = "Request.restart fix: applied in memory if needed (interpreter not owned by the benchmark)"
    max_tokens = _round_up(longest, KV_GRANULARITY)
    max_chunk = args.max_num_batched_tokens if args.vidur_scheduler == "sarathi" else max_tokens
    key = hashlib.sha256(json.dumps([profile.target.model_dump_json(), traffic.digest(), blocks, args.block_size,
                                     args.max_num_seqs, args.max_num_batched_tokens, args.vidur_scheduler,
                                     VIDUR_MODEL, VIDUR_TP, 2], sort_keys=True).encode()).hexdigest()[:16]
    work = cache / "vidur-inputs" / key
    tables = work / "tables"
    trace_csv = work / "trace.csv"
    if not (work / "done").exists():
        cost = StepCostModel(profile, None, b_max=max(args.max_num_seqs, 2))
        write_vidur_tables(cost, tables, VIDUR_LAYERS, args.max_num_seqs, max_tokens, max_chunk,
                           args.max_num_batched_tokens)
        ts = np.asarray(traffic.timestamps, dtype=np.float64)
        with open(trace_csv, "w", newline="") as f:  # Vidur 0.0.26's trace_replay format, times in s
            w = csv.writer(f)
            w.writerow(["Date", "Time", "PromptTokenCount", "CompletionTokenCount"])
            w.writerows(("2023-08-21", repr(t), int(i), int(o))
                        for t, i, o in zip((ts - ts[0]).tolist(), inp, outp, strict=True))
        (work / "done").write_text("")
    spec = {"work_dir": str(work), "tables_dir": str(tables), "trace_csv": str(trace_csv),
            "scheduler": args.vidur_scheduler, "max_num_seqs": args.max_num_seqs,
            "max_num_batched_tokens": args.max_num_batched_tokens, "block_size": args.block_size,
            "num_blocks": blocks - 1, "max_tokens": max_tokens, "max_chunk": max_chunk,
            "kv_granularity": KV_GRANULARITY, "model_name": VIDUR_MODEL, "num_layers": VIDUR_LAYERS,
            "tensor_parallel": VIDUR_TP}
    (work / "spec.json").write_text(json.dumps(spec, indent=1))
    print(f"vidur {VIDUR_VERSION}: {python}; {fix_note}; inputs: {work}", flush=True)

    if args.check_costs:
        check_costs(python, work, spec, StepCostModel(profile, None, b_max=max(args.max_num_seqs, 2)))
        return 0

    # specsim: the whole simulate() call (set-up, loop and metrics), best of --repeats, after a
    # short warm-up run that loads the compiled kernel (numba's on-disk cache, compiled on first use)
    simulate(profile, traffic.head(min(len(traffic), 50)), Policy(), cfg)
    best: tuple[float, float] | None = None
    res = None
    for _ in range(max(args.repeats, 1)):
        w0, c0 = time.perf_counter(), time.process_time()
        res = simulate(profile, traffic, Policy(), cfg)
        w, c = time.perf_counter() - w0, time.process_time() - c0
        best = (w, c) if best is None or w < best[0] else best
    assert res is not None and best is not None
    s_wall, s_cpu = best

    v = runner_json(python, "run", str(work / "spec.json"))
    if v["requests"] != len(traffic):
        sys.exit(f"Vidur replayed {v['requests']} requests, the trace has {len(traffic)}")
    v_wall, v_cpu = v["loop_wall_s"], v["loop_cpu_s"]
    n = len(traffic)

    print(f"\npython {platform.python_version()} (specsim), {v['python']} (Vidur); "
          f"Vidur: {v['restart_fix']}")
    print(f"{'simulator':<10} {'loop wall s':>12} {'loop CPU s':>11} {'sim req/s':>10} {'start-up s':>11}")
    print(f"{'specsim':<10} {s_wall:>12.2f} {s_cpu:>11.2f} {n / s_wall:>10.0f} {'(included)':>11}"
          f"   best of {args.repeats}: whole simulate() call")
    print(f"{'Vidur':<10} {v_wall:>12.2f} {v_cpu:>11.2f} {n / v_wall:>10.0f} {v['init_s']:>11.2f}"
          f"   one run: Simulator.run() event loop, output writing off")
    r_wall, r_cpu = v_wall / s_wall, v_cpu / s_cpu
    print(f"speed ratio specsim/Vidur: {r_wall:.1f}x wall, {r_cpu:.1f}x CPU")
    met = [name for name, r in (("wall", r_wall), ("CPU", r_cpu)) if r >= TARGET_RATIO]
    verdict = "met" if len(met) == 2 else ("NOT met" if not met else f"met on {met[0]} time only")
    print(f"target >= {TARGET_RATIO:.0f}x Vidur: {verdict}")

    rq, sm = res.requests, res.summary
    rows = [("specsim", sm["requests_per_s"], sm["output_tokens_per_s"], float(np.nanmean(rq["ttft"])),
             float(np.nanmean(rq["tpot"])), float(np.nanmean(rq["e2e"])), int(sm["preemptions"])),
            ("Vidur", v["requests_per_s"], v["output_tokens_per_s"], v["mean_ttft_s"], v["mean_tpot_s"],
             v["mean_e2e_s"], v["preemptions"])]
    print("\npredictions (for the record; same step costs, each simulator's own scheduler):")
    print(f"{'simulator':<10} {'req/s':>7} {'out tok/s':>10} {'mean TTFT s':>12} {'mean TPOT ms':>13} "
          f"{'mean E2E s':>11} {'preemptions':>12}")
    for name, rps, tps, ttft, tpot, e2e, pre in rows:
        print(f"{name:<10} {rps:>7.3f} {tps:>10.1f} {ttft:>12.3f} {tpot * 1e3:>13.2f} {e2e:>11.2f} {pre:>12}")
    print(f"\nload average (1/5/15 min): {load_start} at start, {load_avg()} at end; {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
