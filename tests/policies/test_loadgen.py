"""`specsim loadgen` against an in-process fake streaming server: timing, format, bounds, loopback."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from specsim.cli import main
from specsim.errors import SpecsimError
from specsim.formats.traffic import Traffic
from specsim.policies.loadgen import COLUMNS, Endpoint, LoadgenConfig, parse_metrics, prompt_ids, run_loadgen
from specsim.simulator.metrics import request_columns
from tests.policies.fake_server import FakeServer


def trace(times: list[float], inp: int = 12, out: int = 6) -> Traffic:
    n = len(times)
    return Traffic.from_arrays(times, [inp] * n, [out] * n, categories=["chat"] * n)


@pytest.mark.parametrize("url", ["http://10.0.0.1:8000", "http://example.com", "https://127.0.0.1:1", "ftp://x"])
def test_refuses_non_loopback(url: str) -> None:
    with pytest.raises(SpecsimError):
        Endpoint.parse(url)


def test_loopback_forms() -> None:
    assert Endpoint.parse("http://localhost:9").host == "127.0.0.1"
    assert Endpoint.parse("http://[::1]:9").port == 9
    assert Endpoint.parse("http://127.0.0.2:9").host == "127.0.0.2"


def test_prompt_ids_exact_length() -> None:
    assert prompt_ids([1, 2, 3], 7, 2) == [3, 1, 2, 3, 1, 2, 3]


@pytest.mark.parametrize("chunked", [True, False])
def test_measures_ttft_tpot_itl(chunked: bool) -> None:
    with FakeServer(ttft=0.1, itl=0.02, chunked=chunked) as srv:
        res = run_loadgen(srv.url, trace([0.0, 0.05]), LoadgenConfig(timeout=20))
    r = res.requests
    assert list(r["output_length"]) == [6, 6]
    assert np.all((r["ttft"] > 0.09) & (r["ttft"] < 0.4))
    assert np.all((r["tpot"] > 0.015) & (r["tpot"] < 0.1))
    assert np.all(r["decode_steps"] == 5)
    assert np.allclose(r["mean_itl"], r["tpot"])
    assert np.all(r["e2e"] >= r["ttft"])
    s = res.summary
    assert s["completed"] == 2 and s["failed"] == 0 and s["output_tokens"] == 12
    assert s["spec_drafts"] == 0  # the fake's counter did not move


def test_sends_exact_prompt_and_forced_output_lengths() -> None:
    with FakeServer(ttft=0.0, itl=0.0) as srv:
        run_loadgen(srv.url, trace([0.0], inp=33, out=4), LoadgenConfig(timeout=20))
        req = srv.received[0][1]
    assert len(req["prompt"]) == 33 and all(isinstance(t, int) for t in req["prompt"])
    assert req["max_tokens"] == req["min_tokens"] == 4 and req["ignore_eos"] and req["stream"]
    assert req["model"] == "fake" and req["temperature"] == 0.0


def test_multi_token_chunks_count_tokens_not_events() -> None:
    with FakeServer(ttft=0.0, itl=0.01, per_chunk=3) as srv:
        res = run_loadgen(srv.url, trace([0.0], out=7), LoadgenConfig(timeout=20))
    assert res.requests["output_length"][0] == 7
    assert res.requests["decode_steps"][0] == 2  # 1 + 3 + 3 tokens


def test_open_loop_arrivals_are_honoured() -> None:
    # Each request takes ~0.5 s; arrivals 0.1 s apart must not wait for earlier ones.
    times = [0.0, 0.1, 0.2, 0.3]
    with FakeServer(ttft=0.5, itl=0.0) as srv:
        res = run_loadgen(srv.url, trace(times, out=1), LoadgenConfig(timeout=20))
        sent = np.array([t for t, _ in srv.received])
    rel = sent - sent[0]
    # NOTE: 0.15 s slack survives a loaded machine; waiting on earlier requests would be 0.5 s late
    assert np.allclose(rel, times, atol=0.15)
    assert res.summary["send_lag_max_s"] < 0.15


def test_closed_loop_keeps_n_requests_in_flight() -> None:
    # 6 requests of ~0.3 s each, 2 clients: sent in pairs at ~0, ~0.3, ~0.6 s whatever the timestamps say
    with FakeServer(ttft=0.3, itl=0.0) as srv:
        res = run_loadgen(srv.url, trace([0.0, 50.0, 100.0, 150.0, 200.0, 250.0], out=1),
                          LoadgenConfig(timeout=20, concurrency=2))
        sent = np.sort(np.array([t for t, _ in srv.received]))
    rel = sent - sent[0]
    assert np.allclose(rel, [0.0, 0.0, 0.3, 0.3, 0.6, 0.6], atol=0.15), rel
    assert res.summary["mode"] == "closed" and res.summary["completed"] == 6
    # arrival is the send time, so TTFT is the server's 0.3 s, not the distance from a trace timestamp
    assert np.allclose(res.requests["ttft"], 0.3, atol=0.15)
    assert res.requests["arrival"].max() < 2.0


def test_closed_loop_think_time_spaces_a_clients_requests() -> None:
    with FakeServer(ttft=0.0, itl=0.0) as srv:
        run_loadgen(srv.url, trace([0.0] * 3, out=1), LoadgenConfig(timeout=20, concurrency=1, think_time=0.3))
        sent = np.array([t for t, _ in srv.received])
    assert np.all(np.diff(sent) >= 0.3 - 0.01)


def test_bounded_in_count_and_time() -> None:
    with FakeServer(ttft=0.0, itl=0.2) as srv:
        res = run_loadgen(srv.url, trace([0.0] * 5 + [30.0], out=50), LoadgenConfig(max_requests=3, timeout=1.0))
        assert len(srv.received) == 3
    assert res.summary["requests"] == 3 and res.summary["failed"] == 3
    assert all("timed out" in e for e in res.errors)
    assert np.all(np.isnan(res.requests["e2e"]))


def test_no_server_is_a_clear_error() -> None:
    with FakeServer() as srv:
        url = srv.url
    with pytest.raises(SpecsimError, match="no server"):
        run_loadgen(url, trace([0.0]), LoadgenConfig(timeout=5))


def test_parse_metrics_sums_label_sets() -> None:
    text = ('# TYPE x counter\nvllm:spec_decode_num_drafts_total{engine="0"} 4.0\n'
            'vllm:spec_decode_num_drafts_total{engine="1"} 2.0\nvllm:spec_decode_num_draft_tokens_total 9\n')
    m = parse_metrics(text)
    assert m["spec_drafts"] == 6.0 and m["draft_tokens"] == 9.0 and m["accepted_tokens"] == 0.0


def test_cli_writes_the_simulators_format(tmp_path) -> None:  # noqa: ANN001
    tr = tmp_path / "t.jsonl"
    tr.write_text("\n".join(json.dumps({"timestamp": t, "input_length": 5, "output_length": 3, "category": "c"})
                            for t in (0.0, 0.1, 0.2)) + "\n")
    with FakeServer(ttft=0.01, itl=0.01) as srv:
        rc = main(["loadgen", "--url", srv.url, "--traffic", str(tr), "--out", str(tmp_path / "o"), "--timeout", "20",
                   "--slo", "ttft=2s,tpot=500ms"])
    assert rc == 0
    with open(tmp_path / "o" / "requests.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and rows[0]["category"] == "c"
    header = list(rows[0])
    assert header == ["request_id", "category", *COLUMNS]
    sim_cols = set(request_columns.__annotations__) | {"replica", "arrival", "input_length", "output_length",
                                                      "queue_delay", "ttft", "tpot", "e2e", "mean_itl", "max_itl",
                                                      "decode_steps"}
    assert set(COLUMNS) <= sim_cols
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["source"] == "measured" and summary["schema"] == "specsim.run"
    assert summary["slo_ttft_s"] == 2.0 and summary["slo_tpot_s"] == 0.5 and summary["slo_attainment"] == 1.0
    for key in ("output_tokens_per_s", "ttft_mean", "ttft_p99", "tpot_mean", "tpot_p99", "e2e_p50", "itl_p90"):
        assert np.isfinite(summary[key]), key


def test_cli_slo_is_spelt_as_in_simulate_and_tune(tmp_path, capsys) -> None:  # noqa: ANN001
    tr = tmp_path / "t.jsonl"
    tr.write_text(json.dumps({"timestamp": 0, "input_length": 5, "output_length": 3}) + "\n")
    base = ["loadgen", "--url", "http://127.0.0.1:9", "--traffic", str(tr), "--out", str(tmp_path / "o")]
    assert main([*base, "--slo", "ttft=2s", "--slo-ttft", "1"]) == 2
    assert "give the SLO once" in capsys.readouterr().err
    assert main([*base, "--slo", "tpot=-5ms"]) == 2
    assert "SLO" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_cli_refuses_remote_url(tmp_path, capsys) -> None:  # noqa: ANN001
    tr = tmp_path / "t.jsonl"
    tr.write_text(json.dumps({"timestamp": 0, "input_length": 5, "output_length": 3}) + "\n")
    assert main(["loadgen", "--url", "http://192.168.1.1:80", "--traffic", str(tr), "--out", str(tmp_path)]) == 2
    assert "loopback" in capsys.readouterr().err


def test_prompt_content_by_category() -> None:
    tr = Traffic.from_arrays([0.0, 0.0, 0.0], [5, 3, 5], [1, 1, 1], categories=["code", "chat", "code"])
    prompts = [("code", "abc"), ("chat", "xy"), ("code", "def")]
    with FakeServer(ttft=0.0, itl=0.0, tokenize=True) as srv:
        run_loadgen(srv.url, tr, LoadgenConfig(timeout=20, prompts=prompts))
        got = sorted(tuple(r["prompt"]) for _, r in srv.received)
    a, b, c, d, e, f, x, y = (ord(ch) for ch in "abcdefxy")
    assert got == sorted([(a, b, c, a, b), (x, y, x), (d, e, f, d, e)])


def test_prompts_need_tokenize() -> None:
    with FakeServer(tokenize=False) as srv, pytest.raises(SpecsimError, match="tokenize"):
        run_loadgen(srv.url, trace([0.0]), LoadgenConfig(timeout=20, prompts=[(None, "hello")]))


def test_chat_prompts_use_the_chat_form() -> None:
    tr = Traffic.from_arrays([0.0], [4], [1])
    with FakeServer(ttft=0.0, itl=0.0, tokenize=True) as srv:
        run_loadgen(srv.url, tr, LoadgenConfig(timeout=20, prompts=[(None, "ab")], chat=True))
        assert srv.received[0][1]["prompt"] == [ord(c) for c in "<ab>"]


def test_named_prompt_sends_that_prompts_text() -> None:
    tr = Traffic.from_arrays([0.0, 0.0], [3, 2], [1, 1], categories=["code", "code"], prompt_ids=["q2", "nope"])
    prompts = [("code", "abc"), ("code", "xy")]
    with FakeServer(ttft=0.0, itl=0.0, tokenize=True) as srv:
        cfg = LoadgenConfig(timeout=20, prompts=prompts, prompts_by_id={"q1": "abc", "q2": "def"})
        run_loadgen(srv.url, tr, cfg)
        got = sorted(tuple(r["prompt"]) for _, r in srv.received)
    # q2 is sent as its own text; the unknown id falls back to the category's first prompt
    assert got == sorted([tuple(ord(c) for c in "def"), tuple(ord(c) for c in "ab")])


DEEP = "[" * 200_000 + "]" * 200_000
MALFORMED = {
    "completion_tokens Infinity": {
        "event_raw": '{"choices": [{"text": "x"}], "usage": {"completion_tokens": Infinity}}'},
    "completion_tokens 1e300": {"event_raw": '{"choices": [{"text": "x"}], "usage": {"completion_tokens": 1e300}}'},
    "completion_tokens NaN": {"event_raw": '{"choices": [{"text": "x"}], "usage": {"completion_tokens": NaN}}'},
    "SSE data nested 200k deep": {"event_raw": DEEP},
    "SSE choices not a list": {"event_raw": '{"choices": 5, "usage": {"completion_tokens": 1}}'},
    "/v1/models nested 200k deep": {"models_body": DEEP.encode()},
    "/v1/models id not a string": {"models_body": b'{"data": [{"id": {"a": 1}}]}'},
    "/metrics counter nan": {
        "metrics_body": b"vllm:spec_decode_num_drafts_total 1\nvllm:spec_decode_num_drafts_total nan\n"},
    "/metrics counter -inf": {"metrics_body": b"vllm:spec_decode_num_accepted_tokens_total -Inf\n"},
}


@pytest.mark.parametrize("case", list(MALFORMED), ids=list(MALFORMED))
def test_every_malformed_answer_is_one_line_and_exit_2(case: str, tmp_path, capsys) -> None:  # noqa: ANN001
    from specsim.cli import main
    from specsim.formats.traffic import save_traffic

    save_traffic(Traffic.from_arrays([0.0, 0.01], [8, 8], [3, 3]), tmp_path / "t.jsonl")
    with FakeServer(ttft=0.0, itl=0.0, **MALFORMED[case]) as srv:
        rc = main(["loadgen", "--url", srv.url, "--traffic", str(tmp_path / "t.jsonl"), "--out", str(tmp_path / "o"),
                   "--timeout", "20"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("specsim: error:") and err.count("\n") == 1, (rc, err[-500:])
    assert "internal error" not in err and not (tmp_path / "o").exists()
