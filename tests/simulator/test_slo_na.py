"""Without an SLO, SLO attainment and goodput are null in JSON and n/a wherever they are printed; a tuner
objective that needs an SLO refuses to run without one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from specsim.cli import main
from specsim.errors import SpecsimError
from specsim.formats.profile import save_profile
from specsim.formats.traffic import save_traffic
from specsim.policies.loadgen import LoadgenConfig
from specsim.policies.loadgen import summarise as loadgen_summarise
from specsim.profiler.analytic import constant_profile
from specsim.simulator.config import SimConfig
from specsim.simulator.report import summary_table
from specsim.simulator.run import simulate
from specsim.tuner.evaluate import Evaluator, with_goodput
from specsim.tuner.objectives import Objective, metric
from tests.simulator.helpers import poisson_traffic, static


def _profile():  # noqa: ANN202
    return constant_profile(step_ms=10, draft_ratio=0.1, alpha=0.6, k_max=2, traces=2, trace_length=64)


def _table_text(summaries: dict) -> str:
    import io

    from rich.console import Console

    buf = io.StringIO()
    Console(file=buf, width=200).print(summary_table(summaries))
    return buf.getvalue()


def test_simulate_without_slo_is_na() -> None:
    """An overloaded run without an SLO must not read as 100% attainment."""
    tr = poisson_traffic(60, rate=400.0, inp=64, out=40, seed=2)
    s = simulate(_profile(), tr, static(2), SimConfig()).summary
    assert s["slo_attainment"] is None and s["goodput_rps"] is None
    assert json.loads(json.dumps(s, default=str))["slo_attainment"] is None
    with_slo = simulate(_profile(), tr, static(2), SimConfig(slo_ttft=s["ttft_p50"])).summary
    assert 0.0 < with_slo["slo_attainment"] < 1.0 and with_slo["goodput_rps"] > 0
    text = _table_text({"none": s, "ttft p50": with_slo})
    row = next(ln for ln in text.splitlines() if "SLO attainment" in ln)
    assert "n/a" in row and "%" in row
    assert "n/a" in next(ln for ln in text.splitlines() if "goodput" in ln)


def test_loadgen_summary_without_slo() -> None:
    n = 4
    cols = {"arrival": np.arange(n, dtype=float), "ttft": np.full(n, 0.5), "tpot": np.full(n, 0.02),
            "e2e": np.full(n, 1.0), "output_length": np.full(n, 10)}
    s = loadgen_summarise(cols, np.zeros(0), LoadgenConfig())
    assert s["slo_attainment"] is None and s["goodput_rps"] is None
    s = loadgen_summarise(cols, np.zeros(0), LoadgenConfig(slo_ttft=0.4))
    assert s["slo_attainment"] == 0.0 and s["goodput_rps"] == 0.0


def test_goodput_needs_an_slo() -> None:
    tr = poisson_traffic(10, rate=5.0, inp=16, out=8)
    assert with_goodput({"slo_attainment": None, "goodput_rps": None, "requests_per_s": 1.0}, tr,
                        SimConfig())["goodput"] is None
    bare = Objective("goodput", [metric("goodput")], {})
    with pytest.raises(SpecsimError, match=r"objective goodput needs an SLO: give one, e.g. --slo"):
        Evaluator(_profile(), tr, SimConfig(), bare)
    assert Objective.parse("goodput").slo  # the CLI's goodput gets the documented default SLO
    ev = Evaluator(_profile(), tr, SimConfig(), Objective.parse("throughput"))
    s = ev.summary(static(1))
    assert "goodput" not in s and "slo_attainment" not in s and s["output_tokens_per_s"] > 0


def test_cli_prints_na(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """simulate and tune (an objective without an SLO) print n/a; sweep names the SLO it used."""
    prof, traf = tmp_path / "p.json", tmp_path / "t.jsonl"
    save_profile(_profile(), prof)
    save_traffic(poisson_traffic(20, rate=10.0, inp=16, out=8, seed=1), traf)
    assert main(["simulate", "--profile", str(prof), "--traffic", str(traf), "--no-plot",
                 "--out", str(tmp_path / "sim")]) == 0
    out = capsys.readouterr().out
    assert "n/a" in next(ln for ln in out.splitlines() if "SLO attainment" in ln)
    assert json.loads((tmp_path / "sim" / "summary.json").read_text())["goodput_rps"] is None

    pol = tmp_path / "pol.json"
    assert main(["tune", "--profile", str(prof), "--traffic", str(traf), "--objective", "throughput",
                 "--trials", "2", "--no-progress", "--no-baselines", "--out", str(pol)]) == 0
    out = capsys.readouterr().out
    assert "n/a" in next(ln for ln in out.splitlines() if "goodput at offered load" in ln)

    assert main(["sweep", "--profile", str(prof), "--policy", str(pol), "--traffic-shape", str(traf),
                 "--rates", "2,4", "--out", str(tmp_path / "sweep")]) == 0
    out = capsys.readouterr().out
    assert "SLO: TTFT <= 2000 ms, TPOT <= 50 ms (the default; set it with --slo)" in out
