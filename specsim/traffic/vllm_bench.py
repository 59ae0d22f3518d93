"""Importer for `vllm bench serve` results: the workload as a trace, and the run as a measured run.

`vllm bench serve --save-result --save-detailed` writes one JSON object (vLLM's
`vllm/benchmarks/serve.py`) with the run's settings (`date`, `model_id`, `request_rate`,
`burstiness`, `max_concurrency`, `num_prompts`), aggregates (`duration`, `completed`, `failed`,
`mean_ttft_ms`, ...), the speculative-decoding counters when the server reports them
(`spec_decode_num_drafts`, `spec_decode_draft_tokens`, `spec_decode_accepted_tokens`) and, with
`--save-detailed`, one entry per request in each of `input_lens`, `output_lens` (tokens actually
generated; 0 for a failed request), `start_times` (the client's `perf_counter` when it sent the
request), `ttfts` (s, from the send), `itls` (s, the gaps between streamed chunks), `latencies`
(s, send to last token; `e2els` in some versions) and `errors` ("" for a success).

- The **trace** holds the successful requests: arrival = send time relative to the first, input
  length, output length as generated. Failed requests are dropped and counted. Simulate it as the
  benchmark ran it: open loop for `--request-rate`, `--concurrency N` for `--max-concurrency N`.
- The **measured run** is written like `specsim loadgen`'s (requests.csv + summary.json, the
  simulator's column and key names for what a client measures), so `specsim compare` puts it beside
  a simulation. TTFT, TPOT ((latency - TTFT) / (output - 1), vLLM's definition), ITL and end-to-end
  are from the send, as vLLM reports them; failed requests count as not completed. Its duration runs
  from the first send to the last finish; vLLM's own `duration`, `request_throughput` and
  `output_throughput` are kept beside it as `bench_duration_s`, `bench_requests_per_s` and
  `bench_output_tokens_per_s`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from specsim.errors import SpecsimError
from specsim.formats._common import parse_json, read_text
from specsim.formats.traffic import Traffic

# The keys below are those of vLLM 0.32's vllm/benchmarks/serve.py: `benchmark()` builds the result
# (`duration`, `completed`, `failed`, `request_throughput`, `output_throughput`, ... and the per-request
# `input_lens`, `output_lens` (0 for a failed request), `ttfts`, `itls`, `latencies`, `start_times`,
# `queue_times`, `generated_texts`, `errors`), adding `spec_decode_*` when the server exports them;
# `main()` adds `date`, `backend`, `label`, `model_id`, `tokenizer_id`, `num_prompts`, `request_rate`
# ("inf" when unbounded), `burstiness` and `max_concurrency`, and without --save-detailed deletes
# `input_lens`, `output_lens`, `start_times`, `ttfts`, `itls`, `generated_texts` and `errors`.
PER_REQUEST = ("input_lens", "output_lens", "start_times", "ttfts", "itls")
"""Per-request lists the import needs (`--save-detailed`), besides `latencies` or `e2els`."""
SETTINGS = ("date", "backend", "label", "model_id", "tokenizer_id", "num_prompts", "request_rate", "burstiness",
            "max_concurrency")
"""Run settings copied into the measured summary."""
SPEC_KEYS = {"spec_decode_num_drafts": "spec_drafts", "spec_decode_draft_tokens": "draft_tokens",
             "spec_decode_accepted_tokens": "accepted_tokens"}


@dataclass
class BenchRun:
    """A parsed `vllm bench serve` result."""

    result: dict[str, Any]
    ok: np.ndarray
    """Per request: it succeeded."""
    start: np.ndarray
    inp: np.ndarray
    out: np.ndarray
    ttft: np.ndarray
    latency: np.ndarray
    itls: list[list[float]]
    errors: list[str]


def _numbers(result: dict[str, Any], key: str, where: str, n: int) -> np.ndarray:
    v = result[key]
    if not isinstance(v, list) or len(v) != n:
        raise SpecsimError(f"{where}: '{key}' must be a list of {n} numbers (one per request)")
    try:
        arr = np.array([math.nan if x is None else x for x in v], dtype=np.float64)
    except (TypeError, ValueError):
        raise SpecsimError(f"{where}: '{key}' must hold numbers") from None
    if any(isinstance(x, bool) for x in v):
        raise SpecsimError(f"{where}: '{key}' must hold numbers")
    return arr


def read_bench(path: str | Path) -> BenchRun:
    """Parse and check a `vllm bench serve --save-result --save-detailed` JSON file."""
    p = Path(path)
    where = f"vllm bench result {p}"
    text = read_text(p, "vllm bench result")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(lines) > 1 and all(ln.lstrip().startswith("{") and ln.rstrip().endswith("}") for ln in lines):
        try:
            for ln in lines:
                json.loads(ln)
        except ValueError:
            pass
        else:
            raise SpecsimError(f"{where} holds {len(lines)} results (written with --append-result); "
                               f"keep one line in a file of its own")
    result = parse_json(text, where)
    if not isinstance(result, dict):
        raise SpecsimError(f"{where}: expected a JSON object")
    e2e_key = "latencies" if "latencies" in result else "e2els"
    missing = [k for k in (*PER_REQUEST, e2e_key) if k not in result]
    if missing:
        raise SpecsimError(f"{where} has no per-request data ({', '.join(missing)} missing): run "
                           f"`vllm bench serve` with --save-result --save-detailed")
    inp_raw = result["input_lens"]
    if not isinstance(inp_raw, list) or not inp_raw:
        raise SpecsimError(f"{where}: 'input_lens' must be a non-empty list")
    n = len(inp_raw)
    inp = _numbers(result, "input_lens", where, n)
    out = _numbers(result, "output_lens", where, n)
    start = _numbers(result, "start_times", where, n)
    ttft = _numbers(result, "ttfts", where, n)
    latency = _numbers(result, e2e_key, where, n)
    itls = result["itls"]
    if not isinstance(itls, list) or len(itls) != n or not all(
            isinstance(x, list) and all(isinstance(g, (int, float)) and not isinstance(g, bool) for g in x)
            for x in itls):
        raise SpecsimError(f"{where}: 'itls' must be a list of {n} lists of numbers")
    errors = result.get("errors")
    if errors is None:
        errors = ["" if o > 0 and la > 0 else "no output" for o, la in zip(out, latency, strict=True)]
    if not isinstance(errors, list) or len(errors) != n:
        raise SpecsimError(f"{where}: 'errors' must be a list of {n} strings")
    errors = ["" if e is None else str(e) for e in errors]
    ok = np.array([e == "" for e in errors]) & (out >= 1) & np.isfinite(latency) & np.isfinite(ttft)
    if not np.all(np.isfinite(start)):
        raise SpecsimError(f"{where}: 'start_times' must be finite numbers")
    for name, arr in (("input_lens", inp), ("output_lens", out)):
        if np.any(~np.isfinite(arr)) or np.any(arr < 0) or np.any(arr != np.floor(arr)) or np.any(arr >= 2**62):
            raise SpecsimError(f"{where}: '{name}' must hold integers >= 0")
    if np.any(inp[ok] < 1):
        raise SpecsimError(f"{where}: a successful request has an input length of 0")
    return BenchRun(result, ok, start, inp.astype(np.int64), out.astype(np.int64), ttft, latency,
                    [list(map(float, x)) for x in itls], errors)


def import_vllm_bench(path: str | Path, category: str | None = None, limit: int | None = None,
                      run: BenchRun | None = None) -> Traffic:
    """The benchmark's successful requests as a trace (arrivals at their send times)."""
    if limit is not None and limit < 1:
        raise SpecsimError(f"--limit must be >= 1, got {limit}")
    b = run or read_bench(path)
    idx = np.nonzero(b.ok)[0]
    if not len(idx):
        raise SpecsimError(f"vllm bench result {path} holds no successful request")
    idx = idx[np.argsort(b.start[idx], kind="stable")]
    if limit is not None:
        idx = idx[:limit]
    r = b.result
    meta: dict[str, Any] = {"source": "vllm-bench", "source_file": Path(path).name,
                            "rows": int(len(b.ok)), "dropped_failed": int((~b.ok).sum())}
    meta.update({k: r[k] for k in SETTINGS if k in r and r[k] is not None})
    if limit is not None:
        meta["limit"] = limit
    t = b.start[idx]
    return Traffic.from_arrays(t - t[0], b.inp[idx], b.out[idx], [category] * len(idx),
                               [f"bench-{i}" for i in idx.tolist()], meta)


def measured_run(path: str | Path, slo_ttft: float | None = None, slo_tpot: float | None = None,
                 run: BenchRun | None = None) -> Any:
    """The benchmark as a measured run (`specsim.runs.MeasuredRun`): requests.csv and
    summary.json with the simulator's names, in the order the requests were sent."""
    from specsim.runs import MeasuredRun, summarise

    b = run or read_bench(path)
    order = np.argsort(b.start, kind="stable")
    n = len(order)
    ok = b.ok[order]
    arrival = b.start[order] - b.start.min()
    out = np.where(ok, b.out[order], 0)
    ttft = np.where(ok, b.ttft[order], np.nan)
    e2e = np.where(ok, b.latency[order], np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(ok & (out > 1), (e2e - ttft) / np.maximum(out - 1, 1), np.nan)
    gaps = [np.asarray(b.itls[i]) if b.ok[i] else np.zeros(0) for i in order.tolist()]
    mean_itl = np.array([g.mean() if len(g) else np.nan for g in gaps])
    max_itl = np.array([g.max() if len(g) else np.nan for g in gaps])
    cols = {
        "replica": np.zeros(n, dtype=np.int64),
        "arrival": arrival,
        "input_length": b.inp[order],
        "output_length": out.astype(np.int64),
        "ttft": ttft,
        "tpot": tpot,
        "e2e": e2e,
        "mean_itl": mean_itl,
        "max_itl": max_itl,
        "decode_steps": np.array([len(g) for g in gaps], dtype=np.int64),
    }
    itl = np.concatenate([g for g in gaps if len(g)]) if any(len(g) for g in gaps) else np.zeros(0)
    summary = summarise(cols, itl, slo_ttft, slo_tpot)
    r = b.result
    summary.update({"source": "vllm-bench", "source_file": Path(path).name})
    summary.update({k: r[k] for k in SETTINGS if k in r})
    for key, name in (("duration", "bench_duration_s"), ("request_throughput", "bench_requests_per_s"),
                      ("output_throughput", "bench_output_tokens_per_s")):
        if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool):
            summary[name] = float(r[key])  # vLLM's own figures: over the whole run, from its first send
    if all(isinstance(r.get(k), (int, float)) for k in SPEC_KEYS):
        drafts, drafted, accepted = (int(r[k]) for k in SPEC_KEYS)
        summary.update({"spec_drafts": drafts, "draft_tokens": drafted, "accepted_tokens": accepted,
                        "acceptance_rate": accepted / drafted if drafted else 0.0,
                        "mean_acceptance_length": 1.0 + accepted / drafts if drafts else 1.0})
    ids = [f"bench-{i}" for i in order.tolist()]
    errors = [f"{ids[j]}: {b.errors[i]}" for j, i in enumerate(order.tolist()) if not b.ok[i]]
    summary["errors"] = errors[:20]
    return MeasuredRun(summary, cols, tuple(ids), (None,) * n, errors)
