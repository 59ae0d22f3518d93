"""End to end: `specsim tune` writes a policy with provenance; `sweep` and `report` write their files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from specsim.cli import main
from specsim.formats.policy import load_policy
from specsim.formats.traffic import load_traffic
from specsim.tuner.cli import parse_rates
from specsim.tuner.objectives import Objective
from tests.tuner.helpers import write_inputs


def test_parse_rates() -> None:
    r = parse_rates("0.5:32")
    assert len(r) == 8 and r[0] == pytest.approx(0.5) and r[-1] == pytest.approx(32)
    assert parse_rates("4,1,2") == [1.0, 2.0, 4.0]
    assert len(parse_rates("1:8:4")) == 4


def test_objective_names() -> None:
    o = Objective.parse("p99-tpot")
    assert o.primary.key == "tpot_p99" and o.primary.direction == "minimize" and not o.slo
    g = Objective.parse("goodput")
    assert g.slo == {"ttft": 2.0, "tpot": 0.05}  # the default SLO when none is given
    # goodput ties are broken by latency, by less than half a request
    s = {"goodput": 10.0, "offered_rps": 10.0, "requests": 100, "e2e_mean": 3.0}
    fast = dict(s, e2e_mean=1.0)
    assert g.values(fast)[0] > g.values(s)[0] > 10.0 - 0.05
    p = Objective.parse("pareto")
    assert [m.name for m in p.metrics] == ["throughput", "p99-tpot"] and p.multi


def test_tune_sweep_report_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prof, traf = write_inputs(tmp_path, n=120, rate=10.0)
    out = tmp_path / "policy.json"
    url = f"journal:{tmp_path / 'study.log'}"
    rc = main(["tune", "--profile", str(prof), "--traffic", str(traf), "--trials", "12", "--jobs", "2",
               "--storage", url, "--study", "e2e", "--out", str(out), "--no-progress", "--hysteresis", "4",
               "--slo", "ttft=2s,tpot=40ms"])
    text = capsys.readouterr().out
    assert rc == 0, text
    pol = load_policy(out)
    prov = pol.provenance
    assert prov.objective == "goodput" and prov.slo == {"ttft": 2.0, "tpot": 0.04}
    assert prov.traffic_sha256 == load_traffic(traf).digest()
    for key in ("output_tokens_per_s", "goodput", "ttft_p50", "ttft_p99", "tpot_p50", "tpot_p99"):
        assert key in prov.predicted
    names = set(prov.baselines)
    assert "no speculation" in names and "default K=4 (draft_model)" in names
    assert any(n.startswith("best static K=") for n in names)
    assert all("gain" in b for b in prov.baselines.values())
    assert "vs no speculation" in text

    sweep_dir = tmp_path / "sweep"
    rc = main(["sweep", "--profile", str(prof), "--policy", str(out), "--traffic-shape", str(traf),
               "--rates", "2:40:4", "--target-qps", "100", "--jobs", "2", "--out", str(sweep_dir)])
    assert rc == 0
    for name in ("sweep.md", "sweep.json", "latency_vs_load.png", "speedup_vs_load.png", "k_vs_batch.png"):
        assert (sweep_dir / name).stat().st_size > 0, name
    data = json.loads((sweep_dir / "sweep.json").read_text())
    assert len(data["rates"]) == 4 and "policy" in data["findings"]
    md = (sweep_dir / "sweep.md").read_text()
    assert "max QPS per replica" in md and "replicas for 100 QPS" in md

    rep = tmp_path / "report"
    assert main(["report", "e2e", "--storage", url, "--out", str(rep)]) == 0
    assert (rep / "optimization_history.png").stat().st_size > 0
    assert (rep / "param_importances.png").stat().st_size > 0


def test_pareto_objective_uses_nsga2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prof, traf = write_inputs(tmp_path, n=60, rate=10.0)
    out = tmp_path / "pareto.json"
    url = f"journal:{tmp_path / 'p.log'}"
    rc = main(["tune", "--profile", str(prof), "--traffic", str(traf), "--objective", "pareto", "--trials", "10",
               "--storage", url, "--study", "par", "--out", str(out), "--no-progress", "--no-baselines"])
    assert rc == 0, capsys.readouterr().err
    pol = load_policy(out)
    assert pol.provenance.objective == "pareto:throughput,p99-tpot"
    assert len(pol.provenance.predicted["objective_values"]) == 2
    assert main(["report", "par", "--storage", url, "--out", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "pareto_front.png").is_file()
