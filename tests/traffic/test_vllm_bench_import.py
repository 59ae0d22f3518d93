"""`vllm bench serve` result import: the workload as a trace, the run as a measured run, and `specsim compare`."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from specsim.cli import main
from specsim.errors import SpecsimError
from specsim.formats.traffic import load_traffic
from specsim.traffic.vllm_bench import import_vllm_bench, measured_run, read_bench


def _result(**over: Any) -> dict[str, Any]:
    """A small `--save-result --save-detailed` result in vLLM 0.32's layout: four requests, the third failed,
    sent out of list order (start_times are the client's perf_counter)."""
    r: dict[str, Any] = {
        "date": "20250101-120000", "backend": "openai", "label": None, "model_id": "m", "tokenizer_id": "m",
        "num_prompts": 4, "request_rate": 2.0, "burstiness": 1.0, "max_concurrency": None,
        "duration": 3.2, "completed": 3, "failed": 1, "total_input_tokens": 350, "total_output_tokens": 14,
        "request_throughput": 0.9375, "output_throughput": 4.375, "mean_ttft_ms": 100.0,
        "input_lens": [100, 200, 30, 50],
        "output_lens": [5, 1, 0, 8],
        "ttfts": [0.1, 0.2, 0.0, 0.05],
        "itls": [[0.02, 0.02, 0.03, 0.03], [], [], [0.01] * 7],
        "latencies": [0.2, 0.2, 0.0, 0.12],
        "start_times": [1000.5, 1000.0, 1001.0, 1002.0],
        "queue_times": [0.0, 0.0, 0.0, 0.0],
        "generated_texts": ["a", "b", "", "c"],
        "errors": ["", "", "HTTP 500", ""],
        "spec_decode_num_drafts": 4, "spec_decode_draft_tokens": 12, "spec_decode_accepted_tokens": 6,
    }
    r.update(over)
    return r


def _write(tmp_path: Path, result: dict[str, Any] | None = None, name: str = "bench.json") -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(_result() if result is None else result), encoding="utf-8")
    return p


def test_trace_is_the_successful_requests_at_their_send_times(tmp_path: Path) -> None:
    tr = import_vllm_bench(_write(tmp_path))
    assert tr.timestamps.tolist() == [0.0, 0.5, 2.0]
    assert tr.input_lengths.tolist() == [200, 100, 50] and tr.output_lengths.tolist() == [1, 5, 8]
    assert tr.request_ids == ("bench-1", "bench-0", "bench-3")
    m = tr.metadata
    assert (m["rows"], m["dropped_failed"], m["model_id"], m["request_rate"]) == (4, 1, "m", 2.0)
    assert "max_concurrency" not in m  # None is not copied
    assert len(import_vllm_bench(_write(tmp_path), limit=2)) == 2


def test_measured_run_has_the_simulators_shape(tmp_path: Path) -> None:
    run = measured_run(_write(tmp_path), slo_ttft=0.15)
    s = run.summary
    assert (s["requests"], s["completed"], s["failed"]) == (4, 3, 1)
    assert s["ttft_mean"] == pytest.approx((0.2 + 0.1 + 0.05) / 3)
    # TPOT as vLLM defines it: (latency - TTFT) / (output - 1), requests with one token have none
    assert s["tpot_mean"] == pytest.approx(((0.2 - 0.1) / 4 + (0.12 - 0.05) / 7) / 2)
    assert s["slo_attainment"] == pytest.approx(2 / 4)  # the failed one and the 0.2 s TTFT miss
    assert (s["spec_drafts"], s["accepted_tokens"], s["mean_acceptance_length"]) == (4, 6, 2.5)
    assert s["source"] == "vllm-bench" and s["errors"] == ["bench-2: HTTP 500"]
    assert (s["bench_duration_s"], s["bench_requests_per_s"], s["bench_output_tokens_per_s"]) == (3.2, 0.9375, 4.375)
    run.write(tmp_path / "measured")
    rows = list(csv.DictReader(open(tmp_path / "measured" / "requests.csv", encoding="utf-8")))
    assert [r["request_id"] for r in rows] == ["bench-1", "bench-0", "bench-2", "bench-3"]
    assert list(rows[0])[:6] == ["request_id", "category", "replica", "arrival", "input_length", "output_length"]
    assert rows[2]["ttft"] == "nan" and rows[2]["output_length"] == "0"
    assert float(rows[1]["arrival"]) == 0.5 and float(rows[1]["mean_itl"]) == pytest.approx(0.025)
    assert json.loads((tmp_path / "measured" / "summary.json").read_text())["completed"] == 3


@pytest.mark.parametrize(("change", "needle"), [
    ({"ttfts": None}, r"no per-request data \(ttfts missing\).*--save-detailed"),
    ({"output_lens": [1, 2]}, "'output_lens' must be a list of 4 numbers"),
    ({"input_lens": [1, 2, "x", 4]}, "'input_lens' must hold numbers"),
    ({"input_lens": [1, 2, 3.5, 4]}, "'input_lens' must hold integers >= 0"),
    ({"itls": [[], [], [], "x"]}, "'itls' must be a list of 4 lists of numbers"),
    ({"errors": ["x", "y", "z", "w"]}, "holds no successful request"),
])
def test_bad_results(tmp_path: Path, change: dict[str, Any], needle: str) -> None:
    r = _result()
    for k, v in change.items():
        if v is None:
            del r[k]
        else:
            r[k] = v
    with pytest.raises(SpecsimError, match=needle):
        import_vllm_bench(_write(tmp_path, r))


def test_appended_results_and_not_json(tmp_path: Path) -> None:
    p = tmp_path / "many.json"
    p.write_text(json.dumps(_result()) + "\n" + json.dumps(_result()) + "\n")
    with pytest.raises(SpecsimError, match="holds 2 results .*--append-result"):
        read_bench(p)
    p.write_text("[1, 2]")
    with pytest.raises(SpecsimError, match="expected a JSON object"):
        read_bench(p)


def test_cli_import_and_compare_with_a_simulation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Import writes the trace and the measured run; simulate the trace; compare puts both side by side."""
    from specsim.formats.profile import save_profile
    from specsim.profiler.analytic import constant_profile

    src, out, measured = _write(tmp_path), tmp_path / "t.jsonl", tmp_path / "measured"
    assert main(["traffic", "import", "--format", "vllm-bench", str(src), "--out", str(out),
                 "--run-out", str(measured), "--slo", "ttft=150ms"]) == 0
    text = capsys.readouterr().out
    assert "3 requests" in text and "dropped 1 failed requests (an error or no output) from the trace" in text
    assert f"wrote the measured run to {measured}: 3/4 requests" in text
    assert np.allclose(load_traffic(out).timestamps, [0.0, 0.5, 2.0])
    assert {p.name for p in measured.iterdir()} - {".specsim-outputs.json"} == {"summary.json", "requests.csv"}

    prof = tmp_path / "p.json"
    save_profile(constant_profile(step_ms=10, draft_ratio=0.1, alpha=0.6, k_max=2, traces=2, trace_length=64), prof)
    sim = tmp_path / "sim"
    assert main(["simulate", "--profile", str(prof), "--traffic", str(out), "--no-plot", "--out", str(sim)]) == 0
    capsys.readouterr()
    assert main(["compare", str(sim), str(measured), "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert table["completed"] == {"sim": 3, "measured": 3}
    assert main(["compare", str(sim), str(measured / "summary.json")]) == 0
    text = capsys.readouterr().out
    assert "(simulated)" in text and "(vllm-bench)" in text and "measured vs sim" in text

    # one-line errors
    assert main(["compare", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.startswith("specsim: error: run summary file not found")
    assert main(["compare", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"specsim: error: run folder {tmp_path} has no summary.json\n"
    assert main(["traffic", "import", "--format", "azure", str(src), "--out", str(out), "--run-out", "x"]) == 2
    assert "--run-out applies to --format vllm-bench, not azure" in capsys.readouterr().err
    bad = _write(tmp_path, {"duration": 1.0}, "agg.json")
    assert main(["traffic", "import", "--format", "vllm-bench", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("specsim: error: vllm bench result") and "--save-detailed" in err and "\n" == err[-1]
    assert err.count("\n") == 1
