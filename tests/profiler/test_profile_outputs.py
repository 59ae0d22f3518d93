"""`specsim profile` writes its profile and plot as one set, and refuses an unusable --out up front."""

from __future__ import annotations

from pathlib import Path

import pytest

from specsim.cli import main
from specsim.formats.profile import load_profile
from specsim.profiler.analytic import constant_profile
from specsim.profiler.cli import write_profile_set
from tests.test_output_sets import leftovers


def test_profile_and_plot_move_in_together(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = (constant_profile(step_ms=ms, draft_ratio=0.1, alpha=0.6, k_max=2, traces=2, trace_length=16)
                for ms in (10, 20))
    out, plot = tmp_path / "prof.json", tmp_path / "prof.png"
    write_profile_set(old, out, plot)
    assert load_profile(out).target.decode.step_ms[0][0] == 10 and plot.read_bytes()[:4] == b"\x89PNG"
    before = plot.read_bytes()

    def broken(*a: object) -> None:
        raise KeyboardInterrupt  # interrupted while drawing: the profile must not be replaced alone

    monkeypatch.setattr("specsim.profiler.report.plot_costs", broken)
    with pytest.raises(KeyboardInterrupt):
        write_profile_set(new, out, plot)
    assert load_profile(out).target.decode.step_ms[0][0] == 10 and plot.read_bytes() == before
    assert not leftovers(tmp_path)
    monkeypatch.undo()
    write_profile_set(new, out, tmp_path / "plots" / "p.png")  # a plot in another folder: plot first
    assert load_profile(out).target.decode.step_ms[0][0] == 20 and (tmp_path / "plots" / "p.png").is_file()


def test_profile_refuses_an_unusable_out_before_measuring(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "f").write_text("x")
    assert main(["profile", "--out", str(tmp_path / "f" / "p.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("specsim: error: cannot write profile") and len(err.splitlines()) == 1
