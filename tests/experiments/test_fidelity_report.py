"""The fidelity study's report path re-derives its committed table and figures from the saved runs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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
