"""The run-output contract: summary.json (RunSummary) and requests.csv, as simulate and loadgen write them."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from specsim.errors import SpecsimError
from specsim.formats.policy import Policy
from specsim.formats.run import REQUEST_COLUMNS, RunSummary, load_requests, load_run_summary, run_summary
from specsim.formats.traffic import Traffic
from specsim.profiler.analytic import constant_profile
from specsim.runs import MeasuredRun, summarise
from specsim.simulator import SimConfig, simulate
from tests.simulator.helpers import static


def toy_profile():  # noqa: ANN201
    return constant_profile(step_ms=10, draft_ratio=0.1, alpha=0.6, k_max=2, traces=2, trace_length=64)


DOCS = Path(__file__).resolve().parents[2] / "docs" / "formats.md"


def _traffic(n: int = 30) -> Traffic:
    rng = np.random.default_rng(1)
    return Traffic.from_arrays(np.cumsum(rng.exponential(0.2, n)), rng.integers(20, 200, n), rng.integers(1, 40, n))


def test_simulated_summary_round_trips(tmp_path: Path) -> None:
    res = simulate(toy_profile(), _traffic(), static(2), SimConfig(slo_ttft=1.0, slo_tpot=0.05))
    res.write_json(tmp_path / "summary.json")
    raw = json.loads((tmp_path / "summary.json").read_text())
    assert list(raw)[:3] == ["schema", "version", "source"]
    assert raw["schema"] == "specsim.run" and raw["version"] == 1 and raw["source"] == "simulated"
    back = load_run_summary(tmp_path / "summary.json")
    for key, value in res.summary.items():
        got = back.get(key, None)
        if key == "acceptance_matching" and value is not None:
            assert got.model_dump() == value
        elif isinstance(value, float) and math.isnan(value):
            assert math.isnan(got)
        else:
            assert got == value, key


def test_no_slo_writes_null_goodput(tmp_path: Path) -> None:
    res = simulate(toy_profile(), _traffic(), Policy(), SimConfig())
    res.write_json(tmp_path / "summary.json")
    raw = json.loads((tmp_path / "summary.json").read_text())
    assert raw["goodput_rps"] is None and raw["slo_attainment"] is None  # n/a, never a silent 100%
    back = load_run_summary(tmp_path / "summary.json")
    assert back.goodput_rps is None and math.isnan(back.get("slo_attainment"))


def test_measured_summary_is_validated(tmp_path: Path) -> None:
    n = 4
    cols = {"arrival": np.arange(n, dtype=float), "input_length": np.full(n, 10), "output_length": np.full(n, 5),
            "ttft": np.full(n, 0.1), "tpot": np.full(n, 0.02), "e2e": np.array([0.2, 0.2, np.nan, 0.2])}
    summary = summarise(cols, np.full(6, 0.02), slo_ttft=1.0) | {"source": "measured", "mode": "open",
                                                                  "errors": ["r2: timed out"]}
    MeasuredRun(summary, cols, tuple("abcd"), (None,) * n, ["r2: timed out"]).write(tmp_path / "run")
    back = load_run_summary(tmp_path / "run" / "summary.json")
    assert back.source == "measured" and back.failed == 1 and back.errors == ["r2: timed out"]
    reqs = load_requests(tmp_path / "run" / "requests.csv")
    assert list(reqs)[:2] == ["request_id", "category"] and math.isnan(reqs["e2e"][2])

    bad = dict(summary, tpot_mean_ms=3.0)  # a misspelt key must not slip through
    with pytest.raises(SpecsimError, match="tpot_mean_ms"):
        MeasuredRun(bad, cols, tuple("abcd"), (None,) * n, []).write(tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_loader_errors_are_one_line(tmp_path: Path) -> None:
    res = simulate(toy_profile(), _traffic(), Policy(), SimConfig())
    res.write_json(tmp_path / "s.json")
    raw = json.loads((tmp_path / "s.json").read_text())
    cases = {
        "v2": (dict(raw, version=2), "unsupported run summary schema version 2"),
        "schema": (dict(raw, schema="specsim.policy"), "schema is 'specsim.policy'"),
        "unknown": (dict(raw, latency=1), "latency: Extra inputs are not permitted"),
        "type": (dict(raw, requests="many"), "requests:"),
        "missing": ({k: v for k, v in raw.items() if k != "ttft_mean"}, "ttft_mean: Field required"),
    }
    for name, (data, msg) in cases.items():
        p = tmp_path / f"{name}.json"
        p.write_text(json.dumps(data))
        with pytest.raises(SpecsimError, match=re.escape(msg)) as exc:
            load_run_summary(p)
        assert "\n" not in str(exc.value)
    legacy = {k: v for k, v in raw.items() if k not in ("schema", "version")}
    (tmp_path / "legacy.json").write_text(json.dumps(legacy))
    assert load_run_summary(tmp_path / "legacy.json").requests == raw["requests"]


def test_requests_csv_columns(tmp_path: Path) -> None:
    res = simulate(toy_profile(), _traffic(), Policy(), SimConfig())
    res.write_csv(tmp_path / "requests.csv")
    cols = load_requests(tmp_path / "requests.csv")
    assert list(cols) == list(REQUEST_COLUMNS)  # the simulator writes every column, in the documented order
    np.testing.assert_allclose(cols["ttft"], res.requests["ttft"], atol=1e-6)
    text = (tmp_path / "requests.csv").read_text().replace("ttft,", "time_to_first,", 1)
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(SpecsimError, match="unknown column 'time_to_first'"):
        load_requests(tmp_path / "bad.csv")


def test_docs_list_every_key_and_column() -> None:
    text = DOCS.read_text()
    section = text[text.index("## 6. Run outputs"):]
    for name, field in RunSummary.model_fields.items():
        assert f"| `{field.alias or name}` |" in section, name
    for col in REQUEST_COLUMNS:
        assert f"| `{col}` |" in section, col


def test_run_summary_names_the_source_of_an_error() -> None:
    with pytest.raises(SpecsimError, match="invalid run summary verify run: requests"):
        run_summary({"requests": -0.5j}, where="verify run")
