"""`specsim simulate` end to end, sampled (temperature > 0) acceptance, and closed-loop CLI runs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from specsim.cli import main
from specsim.formats.policy import DrafterRef, Policy, save_policy
from specsim.formats.profile import save_profile
from specsim.formats.traffic import save_traffic
from specsim.profiler.analytic import analytic_profile, constant_profile
from specsim.simulator import SimConfig, simulate
from tests.simulator.helpers import poisson_traffic, spaced_traffic, static


def test_sampled_acceptance_matches_expected_tokens_per_step() -> None:
    alpha, k = 0.6, 3
    prof = constant_profile(step_ms=10, draft_ratio=0.0, alpha=alpha, mode="sampled", traces=4)
    res = simulate(prof, spaced_traffic(8, 3001), static(k), SimConfig(seed=1))
    per_step = (res.requests["output_length"].sum() - 8) / res.requests["decode_steps"].sum()
    assert per_step == pytest.approx((1 - alpha ** (k + 1)) / (1 - alpha), rel=0.02)
    again = simulate(prof, spaced_traffic(8, 3001), static(k), SimConfig(seed=1))
    np.testing.assert_array_equal(res.requests["e2e"], again.requests["e2e"])


def test_simulate_cli_writes_summary_and_per_request_csv(tmp_path: Path, capsys) -> None:
    prof = analytic_profile(target="llama-8b", drafter_model="llama-1b", k_max=4)
    save_profile(prof, tmp_path / "p.json")
    save_traffic(poisson_traffic(120, rate=10.0, inp=300, out=(10, 120), seed=2, cat="code"), tmp_path / "t.jsonl")
    pol = Policy(drafter=DrafterRef(name="draft_model", method="draft_model"), k_schedule=[(1, 16, 4)])
    save_policy(pol, tmp_path / "pol.json")
    rc = main([
        "simulate", "--profile", str(tmp_path / "p.json"), "--traffic", str(tmp_path / "t.jsonl"),
        "--policy", str(tmp_path / "pol.json"), "--compare-off", "--slo", "ttft=2s,tpot=50ms",
        "--out", str(tmp_path / "out"),
    ])
    assert rc == 0
    shown = capsys.readouterr().out
    assert "no speculation" in shown and "TPOT p99" in shown
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["completed"] == 120 and summary["slo_tpot_s"] == 0.05
    assert summary["mean_acceptance_length"] > 1.5
    assert (tmp_path / "out" / "run.png").read_bytes()[:4] == b"\x89PNG"
    rows = list(csv.DictReader(open(tmp_path / "out" / "requests.csv")))
    assert len(rows) == 120 and float(rows[0]["ttft"]) > 0 and rows[0]["category"] == "code"


def test_closed_loop_and_replicas_from_cli(tmp_path: Path, capsys) -> None:
    save_profile(analytic_profile(target="llama-8b", drafter_model=None, k_max=2), tmp_path / "p.json")
    save_traffic(poisson_traffic(60, rate=5.0, inp=100, out=(10, 50)), tmp_path / "t.jsonl")
    rc = main([
        "simulate", "--profile", str(tmp_path / "p.json"), "--traffic", str(tmp_path / "t.jsonl"),
        "--concurrency", "4", "--replicas", "2", "--router", "least_loaded", "--out", str(tmp_path / "o"),
    ])
    assert rc == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["completed"] == 60 and summary["replicas"] == 2


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--slo", "ttft=fast"], "duration"),
        (["--slo", "latency=2s"], "unknown SLO"),
        (["--concurrency", "0"], "concurrency"),
        (["--rate-scale", "-1"], "rate_scale"),
    ],
)
def test_bad_options_are_one_line_errors(tmp_path: Path, capsys, args: list[str], needle: str) -> None:
    save_profile(analytic_profile(target="llama-8b", drafter_model=None, k_max=2), tmp_path / "p.json")
    save_traffic(poisson_traffic(5, rate=5.0, inp=100, out=10), tmp_path / "t.jsonl")
    rc = main(["simulate", "--profile", str(tmp_path / "p.json"), "--traffic", str(tmp_path / "t.jsonl"), *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and needle in err and "\n" not in err


def test_drafter_that_proposes_nothing_without_a_match_drafts_and_costs_less() -> None:
    from specsim.formats.profile import AcceptanceTrace

    prof = constant_profile(step_ms=10, draft_ratio=0.1, alpha=0.5, k_max=4)
    # a position pattern: full match (4 drafted, 2 accepted), then no match (0 drafted) x3
    drafted = [4, 0, 0, 0] * 256
    r = [2, 0, 0, 0] * 256
    prof.acceptance = [
        AcceptanceTrace(
            prompt_id="x", drafter="draft", prompt_length=8, output_length=1024, k_max=4, r=r, drafted=drafted
        )
    ]
    traffic = spaced_traffic(1, 301)
    res = simulate(prof, traffic, static(4), SimConfig())
    steps = res.steps
    dec = steps["decoding"] > 0
    # decode starts at pos 1 (no match) ... every 4th position drafts 4 and accepts 2 -> 3 tokens
    assert set(steps["decode_tokens"][dec].tolist()) == {1, 5}
    assert res.requests["draft_tokens"][0] == 4 * (steps["decode_tokens"][dec] == 5).sum()
    assert res.requests["accepted_tokens"][0] == 2 * (steps["decode_tokens"][dec] == 5).sum()
    # a verify step costs 10 ms + drafter 4 x 0.1 x 10 ms; a step without drafts only 10 ms
    durations = set(np.round(steps["duration"][dec] * 1e3, 6).tolist())
    assert durations == {10.0, 14.0}
    full = simulate(prof, traffic, static(0), SimConfig())
    assert res.summary["e2e_mean"] < full.summary["e2e_mean"]
