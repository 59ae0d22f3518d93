"""`specsim demo`: the whole pipeline (traffic, capacity, tune, compare, export, report) in its short variant."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from specsim.cli import main
from specsim.demo import DEMO_FILES, REPO_PROFILE, DemoConfig, demo_traffic, place_loads, run_demo
from specsim.formats.policy import load_policy
from specsim.policies.export import to_vllm
from specsim.tuner.sweep import OFF, TUNED

pytestmark = pytest.mark.skipif(not REPO_PROFILE.is_file(), reason="the committed CPU profile is absent")


def test_demo_writes_the_report_set(tmp_path: Path) -> None:
    lines: list[str] = []
    facts = run_demo(DemoConfig.quick(), tmp_path / "demo", say=lines.append, progress=False)
    out = tmp_path / "demo"
    for name in DEMO_FILES:
        assert (out / name).is_file(), name
    assert (out / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "sweep" / "sweep.json").is_file()

    # three loads, in order, and every policy simulated at each
    loads = list(facts["loads"].values())
    assert len(loads) == 3 and loads[0] < loads[1] < loads[2]
    for by_policy in facts["compare"].values():
        assert {TUNED, OFF} <= set(by_policy)
        assert len(by_policy) == 3
        for s in by_policy.values():
            assert s["completed"] == s["requests"] > 0

    # the command line is the export of the written policy, exactly
    policy = load_policy(out / "policy.json")
    exp = to_vllm(policy, max_num_seqs=64, lossy=True)
    serve = (out / "vllm-serve.sh").read_text().splitlines()[-1]
    assert serve == facts["serve"]
    argv = shlex.split(serve)
    assert argv[:2] == ["vllm", "serve"]
    if exp.config is None:
        assert "--speculative-config" not in argv
    else:
        assert json.loads(argv[argv.index("--speculative-config") + 1]) == exp.config

    report = (out / "report.md").read_text()
    assert "![latency and SLO attainment against load](demo.png)" in report
    assert serve in report
    rows = re.findall(r"^\| (light|crossover|middle|loaded) \(", report, flags=re.M)
    assert len(rows) == 9  # 3 loads x 3 policies
    assert any(line.startswith("capacity:") for line in lines)


def test_place_loads_orders_light_middle_loaded() -> None:
    class Sweep:
        rates = [0.1, 0.2, 0.4, 0.8]
        findings = {OFF: {"max_qps_per_replica": 0.5},
                    "static": {"max_qps_per_replica": 0.4, "speculation_stops_paying_qps": 0.3}}

    loads = place_loads(Sweep())
    assert loads == pytest.approx({"light": 0.05, "crossover": 0.3, "loaded": 0.4})
    Sweep.findings["static"]["speculation_stops_paying_qps"] = None
    loads = place_loads(Sweep())
    assert list(loads) == ["light", "middle", "loaded"]
    assert loads["light"] < loads["middle"] < loads["loaded"]


def test_demo_traffic_clips_to_what_the_model_serves() -> None:
    cfg = DemoConfig(requests=50, max_input_tokens=300, max_output_tokens=40)
    tr, what = demo_traffic(cfg)
    assert len(tr) == 50
    assert tr.input_lengths.max() <= 300 and tr.output_lengths.max() <= 40
    assert tr.timestamps[0] == 0.0
    assert "clipped" in what


def test_demo_cli_rejects_bad_sizes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--quick", "--requests", "5", "--out", str(tmp_path / "d")]) == 2
    assert "--requests must lie in 20..100000" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
