"""Inputs nothing can be tuned on get one line on stderr and exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from specsim.cli import main
from specsim.errors import SpecsimError
from specsim.formats.profile import save_profile
from specsim.formats.traffic import Traffic
from specsim.profiler.analytic import analytic_profile
from specsim.tuner.objectives import Objective
from specsim.tuner.space import SearchSpace
from specsim.tuner.tune import tune
from tests.tuner.helpers import small_profile, write_inputs


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    rc = main(list(args))
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("specsim: error: ")
    return err


def _tune(prof: Path, traf: Path, tmp: Path, *extra: str) -> tuple[str, ...]:
    return ("tune", "--profile", str(prof), "--traffic", str(traf), "--trials", "3", "--no-progress",
            "--out", str(tmp / "p.json"), *extra)


def test_tpot_slo_below_the_fastest_possible_step(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prof, traf = write_inputs(tmp_path, n=20)
    err = _run(capsys, *_tune(prof, traf, tmp_path, "--slo", "ttft=2s,tpot=0.5ms"))
    assert "impossible SLO" in err and "fastest step" in err
    assert not (tmp_path / "p.json").exists()


def test_slo_no_baseline_meets_for_any_request(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prof, traf = write_inputs(tmp_path, n=20)
    err = _run(capsys, *_tune(prof, traf, tmp_path, "--slo", "ttft=1ms,tpot=50ms"))
    assert "impossible SLO" in err and "no request meets" in err


def test_empty_traffic(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prof, _ = write_inputs(tmp_path, n=5)
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"schema": "specsim.traffic", "version": 1}\n')
    err = _run(capsys, *_tune(prof, empty, tmp_path))
    assert "no requests" in err
    with pytest.raises(SpecsimError, match="no requests"):
        tune(small_profile(), Traffic.from_arrays([], [], []), Objective.parse("throughput"),
             SearchSpace.for_profile(small_profile()))


def test_profile_without_drafters(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, traf = write_inputs(tmp_path, n=5)
    bare = tmp_path / "bare.json"
    save_profile(analytic_profile(drafter_model=None, ngram=False), bare)
    err = _run(capsys, *_tune(bare, traf, tmp_path))
    assert "no drafters" in err


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (("--objective", "latency"), "unknown objective"),
        (("--objective", "pareto", "--pareto", "throughput"), "at least two"),
        (("--drafters", "eagle"), "not in the profile"),
        (("--resume",), "--resume needs --storage"),
        (("--window", "5000:6000"), "no request arrives"),
        (("--storage", "nothing-here"), "unknown storage"),
    ],
)
def test_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: tuple[str, ...], needle: str) -> None:
    prof, traf = write_inputs(tmp_path, n=10)
    assert needle in _run(capsys, *_tune(prof, traf, tmp_path, *extra))


def test_worker_without_study(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _run(capsys, "tune-worker", "--storage", f"journal:{tmp_path / 'none.log'}", "--study", "x",
               "--wait", "0.2", "--no-progress")
    assert "not found" in err


def test_sweep_and_report_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prof, traf = write_inputs(tmp_path, n=10)
    pol = tmp_path / "pol.json"
    pol.write_text('{"schema": "specsim.policy", "version": 1}\n')
    assert "cannot read rates" in _run(capsys, "sweep", "--profile", str(prof), "--policy", str(pol),
                                       "--traffic-shape", str(traf), "--rates", "32:1")
    assert "not found" in _run(capsys, "report", "nope", "--storage", f"journal:{tmp_path / 'j.log'}",
                               "--out", str(tmp_path / "r"))
