"""Recorded engine steps: periods come from consecutive steps of one engine, never across a restart."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from specsim.vllmkit.recorder import read_steps


def test_periods_stop_at_an_engine_restart_in_the_same_file(tmp_path: Path) -> None:
    steps = [
        {"t": 100.0, "rows": [[7, 0, 0, 7]], "w": 1},
        {"t": 100.25, "rows": [[1, 7, 0, 7]], "w": 1},  # the engine was stopped after this step
        {"t": 5000.0, "rows": [[9, 0, 0, 9]], "w": 1},  # a new engine appends to the file
        {"t": 5000.5, "rows": [[1, 9, 0, 9]], "w": 0},  # then waits for work
        {"t": 5003.0, "rows": [], "w": 0},
    ]
    path = tmp_path / "steps.jsonl"
    path.write_text("".join(json.dumps(s) + "\n" for s in steps) + '{"t": 5004.0, "ro')  # a cut line
    got = read_steps(path)
    assert len(got) == 5
    assert got[0]["period"] == pytest.approx(0.25)
    assert "period" not in got[1]  # 4,900 s to the next engine's first step is no step's period
    assert got[2]["period"] == pytest.approx(0.5)
    assert "period" not in got[3]  # nothing left to run: the engine idled
