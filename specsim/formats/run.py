"""Run outputs: `summary.json` and `requests.csv`, the files that simulated and measured runs share.

`specsim simulate --out`, `specsim loadgen --out`, `specsim verify`, `traffic import --format
vllm-bench --run-out` and the experiments all write this pair, and `specsim compare` and the
experiments read it back, so it is a contract like the trace, profile and policy (docs/formats.md,
"Run outputs"):

- `RunSummary`: the summary, versioned (`schema: specsim.run`, `version: 1`), every key typed and
  documented; fields that only one kind of run has are optional (None when absent). Latencies are
  seconds, NaN where no request produced the figure (JSON `NaN`, as Python's json module writes it).
- `REQUEST_COLUMNS`: the columns of requests.csv with their units; `load_requests` reads the file
  back into arrays, refusing unknown columns.

A summary.json written before version 1 (no `schema` / `version`) still loads: its keys are the same.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, ValidationError

from specsim.errors import SpecsimError
from specsim.formats._common import _Strict, check_version, read_json, validation_message

SCHEMA = "specsim.run"
VERSIONS = (1,)

Seconds = float
"""A duration in seconds (NaN: no request produced it)."""


class AcceptanceMatching(_Strict):
    """How the simulator matched each request to the profile's acceptance traces."""

    by_prompt: int
    """Requests that named a profiled prompt (prompt_id) and replayed its own trace."""
    by_category: int
    """Requests whose category the profile has: a trace of that category was drawn."""
    by_category_map: int
    """Requests matched through --category-map."""
    drawn: int
    """Requests that matched nothing: a trace was drawn from every category."""
    drawn_categories: dict[str, int] = Field(default_factory=dict)
    """Unmatched requests per traffic category."""
    profile_categories: list[str | None] = Field(default_factory=list)


class RunSummary(_Strict):
    """summary.json: the aggregate metrics of one run, simulated or measured."""

    schema_name: Literal["specsim.run"] = Field(default="specsim.run", alias="schema")
    version: Literal[1] = 1
    source: Literal["simulated", "measured", "vllm-bench"] = "simulated"
    """Who produced the run: the simulator, `specsim loadgen` against a live server, or an imported
    `vllm bench serve` result."""

    # --- every run ---------------------------------------------------------------------------
    requests: int
    completed: int
    failed: int = 0
    """Requests that errored or were never sent (measured runs)."""
    duration_s: Seconds
    """From the first arrival to the last completion."""
    output_tokens: int
    output_tokens_per_s: float
    requests_per_s: float
    """Completed requests per second of duration."""
    goodput_rps: float | None
    """Requests that met the SLO per second; None when no SLO was given."""
    slo_attainment: float | None
    """Share of requests that met the SLO (0..1); None when no SLO was given."""
    slo_ttft_s: Seconds | None
    slo_tpot_s: Seconds | None
    ttft_mean: Seconds
    ttft_p50: Seconds
    ttft_p90: Seconds
    ttft_p99: Seconds
    tpot_mean: Seconds
    """Mean over requests of each request's time per output token after the first."""
    tpot_p50: Seconds
    tpot_p90: Seconds
    tpot_p99: Seconds
    e2e_mean: Seconds
    e2e_p50: Seconds
    e2e_p90: Seconds
    e2e_p99: Seconds
    itl_mean: Seconds
    """Inter-token latency over every gap between tokens (a step that emits several tokens is one gap)."""
    itl_p50: Seconds
    itl_p90: Seconds
    itl_p99: Seconds

    # --- speculation counters (simulated; measured when the server exposes them) --------------
    mean_acceptance_length: float | None = None
    """Tokens per verification step (1 + accepted / verifications)."""
    acceptance_rate: float | None = None
    """Accepted draft tokens / draft tokens."""
    draft_tokens: int | None = None
    accepted_tokens: int | None = None
    spec_drafts: int | None = None
    """Verifications with drafts (measured: vLLM's spec_decode_num_drafts)."""

    # --- simulated runs -----------------------------------------------------------------------
    queue_mean: Seconds | None = None
    queue_p50: Seconds | None = None
    queue_p90: Seconds | None = None
    queue_p99: Seconds | None = None
    steps: int | None = None
    """Engine steps over all replicas."""
    mean_batch_size: float | None = None
    """Mean batch size on the policy's K basis."""
    mean_scheduled: float | None = None
    mean_decoding_batch: float | None = None
    mean_k: float | None = None
    """Mean K over steps with decoding rows."""
    mean_drafts_per_row: float | None = None
    busy_fraction: float | None = None
    preemptions: int | None = None
    replicas: int | None = None
    policy_max_k: int | None = None
    drafter: str | None = None
    scheduler: Literal["fast", "vllm"] | None = None
    async_scheduling: bool | None = None
    extrapolated_step_share: float | None = None
    """Share of steps whose cost lay outside the profile's measured range."""
    kv_blocks: int | None = None
    """KV blocks per replica (None: unlimited)."""
    prefix_caching: bool | None = None
    prefix_cache_hit_rate: float | None = None
    prefix_cached_tokens: int | None = None
    prefix_identities_from: str | None = None
    start_spread: float | None = None
    """The profile's engine-start spread (relative), carried for prediction bands."""
    capped_at_max_model_len: int | None = None
    """Requests whose output was cut at max_model_len."""
    acceptance_matching: AcceptanceMatching | None = None
    acceptance_prompt_matches: int | None = None
    acceptance_note: str | None = None

    # --- measured runs ------------------------------------------------------------------------
    url: str | None = None
    model: str | None = None
    wall_s: Seconds | None = None
    trace_duration_s: Seconds | None = None
    mode: Literal["open", "closed"] | None = None
    concurrency: int | None = None
    send_lag_mean_s: Seconds | None = None
    """How late the load generator sent requests against the trace."""
    send_lag_max_s: Seconds | None = None
    errors: list[str] = Field(default_factory=list)
    """The first 20 request errors."""
    source_file: str | None = None
    bench_duration_s: Seconds | None = None
    bench_requests_per_s: float | None = None
    bench_output_tokens_per_s: float | None = None
    date: str | None = None
    backend: str | None = None
    label: str | None = None
    model_id: str | None = None
    tokenizer_id: str | None = None
    num_prompts: int | None = None
    request_rate: float | str | None = None
    burstiness: float | None = None
    max_concurrency: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The file's content: schema and version first, then every required field (null when no SLO was
        given) and every optional field that is set."""
        fields = type(self).model_fields
        return {k: v for k, v in self.model_dump(by_alias=True, mode="python").items()
                if v is not None or fields[_FIELD_OF.get(k, k)].is_required()}

    def get(self, key: str, default: Any = math.nan) -> Any:
        """A metric by its key (`summary.get("tpot_mean")`), `default` when absent or None."""
        v = getattr(self, key, None) if key in type(self).model_fields else None
        return default if v is None else v


_FIELD_OF = {"schema": "schema_name"}


def run_summary(summary: dict[str, Any], source: str | None = None, where: str = "run summary") -> RunSummary:
    """Validate an in-memory summary (as simulate() and loadgen build them) against the contract."""
    data = {k: v for k, v in summary.items() if k not in ("schema", "version")}
    if source is not None:
        data["source"] = source
    return _validated({k: (v.item() if isinstance(v, np.generic) else v) for k, v in data.items()}, where)


def load_run_summary(path: str | Path) -> RunSummary:
    """Read summary.json (version 1, or an older file without schema/version); one-line errors."""
    data = read_json(path, "run summary")
    if isinstance(data, dict) and "version" in data:
        check_version(data, "run summary", str(path), SCHEMA, VERSIONS)
    elif not isinstance(data, dict):
        raise SpecsimError(f"invalid run summary {path}: expected a JSON object")
    return _validated(data, str(path))


def _validated(data: dict[str, Any], where: str) -> RunSummary:
    try:
        return RunSummary.model_validate(data)
    except ValidationError as exc:
        raise SpecsimError(validation_message(exc, "run summary", where)) from None


REQUEST_COLUMNS: dict[str, str] = {
    "request_id": "the trace's request id",
    "category": "the trace's category (empty: none)",
    "replica": "replica that served it (simulated)",
    "arrival": "s, arrival time relative to the trace start",
    "input_length": "prompt tokens",
    "output_length": "output tokens",
    "queue_delay": "s, arrival to first scheduled (simulated)",
    "ttft": "s, arrival to first token",
    "tpot": "s, per output token after the first (NaN for one-token outputs)",
    "e2e": "s, arrival to last token (NaN: failed)",
    "mean_itl": "s, mean gap between token emissions",
    "max_itl": "s, longest gap between token emissions",
    "decode_steps": "token emissions after the first",
    "accepted_tokens": "accepted draft tokens (simulated)",
    "draft_tokens": "draft tokens verified (simulated)",
    "verify_steps": "steps that verified drafts (simulated)",
    "preemptions": "times preempted (simulated)",
    "cached_tokens": "prompt tokens found in the prefix cache (simulated)",
}
"""requests.csv: every column a run may write, in order, with its unit."""

_TEXT_COLUMNS = ("request_id", "category")


def load_requests(path: str | Path) -> dict[str, np.ndarray]:
    """requests.csv as arrays by column (text columns as str arrays); unknown columns are refused."""
    p = Path(path)
    if not p.is_file():
        raise SpecsimError(f"requests file not found: {p}")
    try:
        with open(p, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecsimError(f"cannot read requests file {p}: {exc}") from None
    if not rows:
        raise SpecsimError(f"requests file {p} is empty")
    header = rows[0]
    unknown = [c for c in header if c not in REQUEST_COLUMNS]
    if unknown or header[:2] != list(_TEXT_COLUMNS):
        what = f"unknown column {unknown[0]!r}" if unknown else "the first columns must be request_id, category"
        raise SpecsimError(f"invalid requests file {p}: {what}")
    out: dict[str, np.ndarray] = {}
    for j, name in enumerate(header):
        col = [r[j] if j < len(r) else "" for r in rows[1:]]
        if name in _TEXT_COLUMNS:
            out[name] = np.asarray(col, dtype=str)
            continue
        try:
            out[name] = np.asarray([float(x) if x not in ("", "nan") else math.nan for x in col], dtype=float)
        except ValueError:
            raise SpecsimError(f"invalid requests file {p}: column {name!r} has a value that is not a number") from None
    return out


__all__ = ["REQUEST_COLUMNS", "RunSummary", "load_requests", "load_run_summary", "run_summary"]
