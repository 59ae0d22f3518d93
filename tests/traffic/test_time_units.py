"""Time units: `--time-unit s|ms` on every trace loader, and millisecond traces refused when read as seconds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from specsim.cli import main
from specsim.errors import SpecsimError
from specsim.formats.traffic import Traffic, load_traffic, looks_like_ms, save_traffic, to_seconds


def _ms_trace(path: Path, n: int = 200, gap_ms: float = 300.0, seed: int = 1) -> np.ndarray:
    """A headerless third-party JSONL trace with integer millisecond timestamps (about 3 req/s)."""
    rng = np.random.default_rng(seed)
    ts = np.cumsum(np.rint(rng.exponential(gap_ms, n))).astype(np.int64)
    ts -= ts[0]
    with open(path, "w", encoding="utf-8") as f:
        for t in ts.tolist():
            f.write(json.dumps({"timestamp": t, "input_length": 100, "output_length": 20}) + "\n")
    return ts


def test_rule() -> None:
    """At least an hour at under 0.01 req/s looks like milliseconds; anything denser or shorter does not."""
    assert looks_like_ms(np.array([0.0, 2000.0, 3600.0]))  # 2 gaps in an hour: 0.00056 req/s
    assert not looks_like_ms(np.array([0.0, 3599.0]))  # under an hour
    assert not looks_like_ms(np.arange(0.0, 7200.0, 50.0))  # 0.02 req/s for 2 hours: a sparse real trace
    assert not looks_like_ms(np.array([5.0]))
    # BurstGPT-like: integer seconds over 121 days at 0.13 req/s is read as seconds
    assert not looks_like_ms(np.arange(0, 121 * 86400, 8, dtype=np.float64))


def test_to_seconds_converts_and_refuses() -> None:
    ms = np.array([0, 1500, 3_600_000, 7_200_000], dtype=np.float64)
    assert to_seconds(ms, "ms", "t").tolist() == [0.0, 1.5, 3600.0, 7200.0]
    assert to_seconds(ms, "s", "t").tolist() == ms.tolist()  # the user said seconds: trusted
    with pytest.raises(SpecsimError, match=r"t: timestamps look like milliseconds .*pass --time-unit ms"):
        to_seconds(ms, None, "t")
    with pytest.raises(SpecsimError, match="unknown time unit"):
        to_seconds(ms, "us", "t")


def test_load_refuses_ms_read_as_seconds(tmp_path: Path) -> None:
    """The issue's case: a millisecond trace loads only with its unit named."""
    p = tmp_path / "mooncake.jsonl"
    ts = _ms_trace(p)
    with pytest.raises(SpecsimError) as exc:
        load_traffic(p)
    msg = str(exc.value)
    assert "\n" not in msg and "--time-unit ms" in msg and str(p) in msg and "hours" in msg
    tr = load_traffic(p, "ms")
    assert np.allclose(tr.timestamps, ts / 1000.0)
    assert tr.metadata["time_unit"] == "ms"
    assert 2.0 < tr.rate < 5.0  # about 3.3 req/s, not 0.0033
    raw = load_traffic(p, "s")  # the user insists on seconds: read as written
    assert raw.timestamps.tolist() == ts.astype(float).tolist()


def test_seconds_trace_loads_unchanged(tmp_path: Path) -> None:
    p = tmp_path / "s.jsonl"
    p.write_text("".join(json.dumps({"timestamp": 0.25 * i, "input_length": 5, "output_length": 3}) + "\n"
                         for i in range(50)))
    tr = load_traffic(p)
    assert tr.timestamps[-1] == pytest.approx(12.25) and "time_unit" not in tr.metadata


def test_specsim_trace_is_seconds_by_contract(tmp_path: Path) -> None:
    """A trace with specsim's header was written in seconds: never refused, and ms is an error."""
    sparse = Traffic.from_arrays([0.0, 5000.0, 9000.0], [4, 4, 4], [2, 2, 2])
    p = tmp_path / "sparse.jsonl"
    save_traffic(sparse, p)
    assert load_traffic(p).timestamps.tolist() == [0.0, 5000.0, 9000.0]
    with pytest.raises(SpecsimError, match="seconds by contract; drop --time-unit ms"):
        load_traffic(p, "ms")


def _run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str, str]:
    rc = main(argv)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_cli_stats_and_synth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "ms.jsonl"
    _ms_trace(p)
    rc, _, err = _run(capsys, ["traffic", "stats", str(p), "--json"])
    assert rc == 2 and err.count("\n") == 1 and err.startswith("specsim: error: ") and "--time-unit ms" in err
    rc, out, _ = _run(capsys, ["traffic", "stats", str(p), "--json", "--time-unit", "ms"])
    stats = json.loads(out)
    assert rc == 0 and stats["duration_s"] < 100 and stats["rate_rps"] > 2
    rc, _, err = _run(capsys, ["traffic", "synth", "--lengths-from", str(p), "--num-requests", "3", "--rate", "1",
                               "--out", str(tmp_path / "s.jsonl")])
    assert rc == 2 and "--time-unit ms" in err
    rc, _, _ = _run(capsys, ["traffic", "synth", "--lengths-from", str(p), "--num-requests", "3", "--rate", "1",
                             "--time-unit", "ms", "--out", str(tmp_path / "s.jsonl")])
    assert rc == 0
    rc, _, err = _run(capsys, ["traffic", "stats", str(p), "--time-unit", "us"])
    assert rc == 2 and "invalid choice" in err


def test_cli_simulate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """simulate refuses the millisecond trace before it writes anything, and runs it with --time-unit ms."""
    from specsim.formats.profile import save_profile
    from specsim.profiler.analytic import constant_profile

    prof = tmp_path / "p.json"
    save_profile(constant_profile(step_ms=10, draft_ratio=0.1, alpha=0.6, k_max=2, traces=2, trace_length=64), prof)
    p = tmp_path / "ms.jsonl"
    _ms_trace(p, n=30)
    out = tmp_path / "sim"
    argv = ["simulate", "--profile", str(prof), "--traffic", str(p), "--no-plot", "--out", str(out)]
    rc, _, err = _run(capsys, argv)
    assert rc == 2 and "--time-unit ms" in err and not out.exists()
    rc, _, _ = _run(capsys, [*argv, "--time-unit", "ms"])
    summary = json.loads((out / "summary.json").read_text())
    assert rc == 0 and summary["completed"] == 30
    assert summary["duration_s"] < 60  # about 9 s of arrivals, not 9,000
