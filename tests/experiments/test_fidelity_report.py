"""The fidelity study's report path re-derives its committed table and figures from the saved runs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from specsim.formats.policy import load_policy
from specsim.formats.profile import load_profile

ROOT = Path(__file__).resolve().parents[2]
STUDY = ROOT / "experiments" / "fidelity"


@pytest.mark.skipif(not (STUDY / "results" / "results.json").is_file(), reason="no committed fidelity study")
def test_report_only_reproduces_the_committed_table(tmp_path: Path) -> None:
    out = tmp_path / "results"
    shutil.copytree(STUDY / "results", out)
    (out / "table.md").unlink()
    (out / "fidelity-requests.png").unlink()
    subprocess.run([sys.executable, str(STUDY / "run.py"), "--report-only", "--out", str(out),
                    "--profile", str(ROOT / "profiles" / "smollm2-135m-cpu.json")], check=True, cwd=ROOT)
    assert (out / "table.md").read_text() == (STUDY / "results" / "table.md").read_text()
    assert (out / "fidelity-requests.png").stat().st_size > 10_000


@pytest.mark.skipif(not (STUDY / "comparison.md").is_file(), reason="no committed comparison")
def test_comparison_matches_the_committed_studies() -> None:
    res = subprocess.run(
        [sys.executable, str(STUDY / "compare_studies.py"), f"A={STUDY / 'attempts' / 'quiet-A-category-draws'}",
         f"B={STUDY / 'attempts' / 'quiet-B-prompt-matched-unpinned'}", f"C={STUDY / 'results'}"],
        check=True, capture_output=True, text=True, cwd=ROOT)
    committed = (STUDY / "comparison.md").read_text()
    assert res.stdout.strip() in committed
    assert "34 of 45 cells within target" in res.stdout


@pytest.mark.skipif(not (STUDY / "study2" / "results.jsonl").is_file(), reason="no committed second study")
def test_record_margin_widens_the_start_spread_to_the_live_servers(tmp_path: Path) -> None:
    import json

    out = tmp_path / "study2"
    shutil.copytree(STUDY / "study2", out)
    profile = tmp_path / "profile.json"
    data = json.loads((ROOT / "profiles" / "smollm2-135m-cpu.json").read_text())
    data["target"]["start_spread"] = 0.0167  # as the profiler measured it over its own three starts
    data["metadata"]["fit"]["start_spread"] = {"starts": 3, "relative": 0.0167}
    profile.write_text(json.dumps(data))
    res = subprocess.run([sys.executable, str(STUDY / "study.py"), "--report-only", "--record-margin",
                          "--out", str(out), "--profile", str(profile)],
                         check=True, capture_output=True, text=True, cwd=ROOT)
    assert "over 18 live server starts" in res.stdout
    got = json.loads(profile.read_text())
    live = got["metadata"]["fit"]["start_spread"]["live"]
    ratios = list(live["per_start_median_ratio"].values())
    assert live["starts"] == len(ratios) == 18
    # the servers split into fast and slow starts, far wider than the profiler's own +-1.7%
    assert min(ratios) < 0.93 and max(ratios) > 1.05
    assert got["target"]["start_spread"] == live["relative"] == pytest.approx(
        (max(ratios) - min(ratios)) / 2 / (sum(ratios) / len(ratios)), abs=1e-3)
    assert got["metadata"]["fit"]["start_spread"]["relative"] == 0.0167
    # the tuned servers' speculative steps are predicted with the drafter their policy names
    assert live["per_start_median_ratio"]["tuned-r0"] == pytest.approx(1.068, abs=0.002)
    assert got["metadata"]["fit"]["fidelity"]["margin"] == pytest.approx(0.0259, abs=5e-4)
    # recording validation notes leaves the profile's digest, and so the policies tuned on it, as they were
    assert load_profile(profile).digest() == load_profile(ROOT / "profiles" / "smollm2-135m-cpu.json").digest()
    assert load_profile(profile).digest() == load_policy(out / "tuned.json").provenance.profile_sha256


def test_the_study_refuses_bad_inputs_in_one_line_before_starting_a_server(tmp_path: Path) -> None:
    import json

    tuned = json.loads((STUDY / "study2" / "tuned.json").read_text())
    tuned["provenance"]["profile_sha256"] = "0" * 64
    (tmp_path / "tuned.json").write_text(json.dumps(tuned))
    cases = [
        (["--profile", str(tmp_path / "missing.json")], "missing.json"),
        (["--profile", str(ROOT / "profiles" / "smollm2-135m-cpu.json"), "--tuned", str(tmp_path / "tuned.json")],
         "tuned on profile 000000000000"),
        (["--profile", str(ROOT / "profiles" / "smollm2-135m-cpu.json"), "--drafter", "eagle"], "'eagle' is not in"),
    ]
    for args, msg in cases:
        res = subprocess.run([sys.executable, str(STUDY / "study.py"), *args, "--out", str(tmp_path / "out")],
                             capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert res.returncode == 1, res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("study.py: error:") and msg in lines[0], res.stderr
        assert "Traceback" not in res.stderr
    assert not (tmp_path / "out" / "runs").exists()  # nothing started, nothing half-written
