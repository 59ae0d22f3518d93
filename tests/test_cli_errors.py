"""Every bad input of issue 17 ends with exit code 2 and one line `specsim: error: ...` (no traceback,
no "internal error", no hang), and the settings that must still run do run."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from specsim.cli import main
from specsim.formats.policy import DrafterRef, Policy, save_policy
from specsim.formats.profile import save_profile
from specsim.formats.traffic import Traffic, save_traffic
from specsim.profiler.analytic import analytic_profile, constant_profile


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small profiles, traces and policies, plus awkward files, shared by the cases."""
    d = tmp_path_factory.mktemp("inputs")
    save_profile(constant_profile(step_ms=10, draft_ratio=0.1, alpha=0.6, k_max=4, traces=4, trace_length=256),
                 d / "p.json")
    save_profile(analytic_profile(target="llama-8b", drafter_model="llama-1b", k_max=4), d / "a.json")
    save_traffic(Traffic.from_arrays([0.0, 0.1, 0.2], [100, 100, 100], [20, 20, 20]), d / "t.jsonl")
    save_policy(Policy.static(DrafterRef(name="draft", method="draft_model", model="draft"), 3), d / "k3.json")
    doc = json.loads((d / "k3.json").read_text())
    (d / "mismatch.json").write_text(json.dumps({**doc, "drafter": {"name": "ngram", "method": "eagle3"}}))
    (d / "kbool.json").write_text(json.dumps({**doc, "k_schedule": [[1, 4, True]]}))
    (d / "afile").write_text("x")
    (d / "random.log").write_bytes(bytes(range(256)) * 8)
    (d / "azure_conv.csv").write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.97,10,5\n")
    return {p.stem if p.suffix != ".jsonl" else "t": p for p in d.iterdir()} | {"dir": d}


def run(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str]:
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    return rc, err


def refused(capsys: pytest.CaptureFixture[str], argv: list[Any], *needles: str) -> str:
    rc, err = run(capsys, argv)
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("specsim: error: "), err
    assert "internal error" not in err and "Traceback" not in err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def sim(i: dict[str, Path], *extra: Any) -> list[Any]:
    return ["simulate", "--profile", i["p"], "--traffic", i["t"], "--no-plot", "--out", i["dir"] / "sim", *extra]


def tune(i: dict[str, Path], *extra: Any) -> list[Any]:
    return ["tune", "--profile", i["a"], "--traffic", i["t"], "--trials", "2", "--no-progress", "--no-baselines",
            *extra]


SYNTH = ["traffic", "synth", "--rate", "1", "--num-requests", "3", "--input-mean", "10", "--output-mean", "10"]


# ---- hangs and the engine's limits ------------------------------------------------------------------
def test_a_prompt_over_the_step_budget_without_chunked_prefill(inputs: dict[str, Path], capsys) -> None:  # noqa: ANN001
    refused(capsys, sim(inputs, "--no-chunked-prefill", "--max-num-seqs", "8", "--max-num-batched-tokens", "99"),
            "max_num_batched_tokens is 99", "must fit in one step")


def test_a_token_budget_below_max_num_seqs_is_refused_as_vllm_does(inputs: dict[str, Path], capsys) -> None:  # noqa: ANN001
    refused(capsys, sim(inputs, "--policy", inputs["k3"], "--max-num-batched-tokens", "3"),
            "max_num_batched_tokens (3) must be >= max_num_seqs")
    refused(capsys, tune(inputs, "--max-num-batched-tokens", "3", "--out", inputs["dir"] / "x.json"),
            "max_num_batched_tokens (3) must be >= max_num_seqs")


def test_a_budget_smaller_than_one_decode_step_with_k3_finishes(inputs: dict[str, Path], capsys) -> None:  # noqa: ANN001
    t0 = time.monotonic()
    rc, err = run(capsys, sim(inputs, "--policy", inputs["k3"], "--max-num-seqs", "2",
                              "--max-num-batched-tokens", "3"))
    assert rc == 0, err
    rc, err = run(capsys, tune(inputs, "--max-num-seqs", "2", "--max-num-batched-tokens", "3",
                               "--out", inputs["dir"] / "small-budget.json"))
    assert rc == 0, err
    assert time.monotonic() - t0 < 60


def test_the_engine_watchdog_reaches_the_user_as_one_line(inputs: dict[str, Path], capsys,  # noqa: ANN001
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from specsim.simulator import kernel

    # both ways into the compiled loop: the SimPy-driven one and the open-loop one
    monkeypatch.setattr(kernel, "run_steps", lambda *a: kernel.RET_STUCK)
    def stuck_after_the_first_arrival(req, rep, *a):  # noqa: ANN001, ANN002, ANN202
        kernel.submit(req, rep, 0)
        return kernel.RET_STUCK

    monkeypatch.setattr(kernel, "run_open_loop", stuck_after_the_first_arrival)
    refused(capsys, sim(inputs), "can never be scheduled")


@pytest.mark.parametrize(("flags", "needle"), [
    (["--max-requests", "0"], "max_requests must be >= 1"),
    (["--max-requests", "-1"], "max_requests must be >= 1"),
    (["--seed", "-1"], "seed must be >= 0"),
    (["--rate-scale", "inf"], "rate_scale must be a finite number > 0"),
    (["--concurrency", "2", "--think-time", "nan"], "think_time must be a finite number >= 0"),
    (["--slo", "ttft=2s,ttft=1s"], "SLO 'ttft' given twice"),
])
def test_simulator_settings(inputs: dict[str, Path], capsys, flags: list[str], needle: str) -> None:  # noqa: ANN001
    refused(capsys, sim(inputs, *flags), needle)


# ---- --out ------------------------------------------------------------------------------------------
def _outs(i: dict[str, Path], unwritable: Path) -> dict[str, Any]:
    return {"unwritable": unwritable / "out", "existing file": i["afile"], "under a file": i["afile"] / "out"}


@pytest.mark.parametrize("where", ["unwritable", "existing file", "under a file"])
def test_simulate_out(inputs: dict[str, Path], capsys, unwritable_dir: Path, where: str) -> None:  # noqa: ANN001
    out = _outs(inputs, unwritable_dir)[where]
    argv = ["simulate", "--profile", inputs["p"], "--traffic", inputs["t"], "--no-plot", "--out", out]
    needle = {"unwritable": "not writable", "existing file": "existing file, not a folder",
              "under a file": "is a file, not a folder"}[where]
    refused(capsys, argv, needle)


@pytest.mark.parametrize("cmd", ["traffic synth", "traffic import", "export", "tune"])
@pytest.mark.parametrize("where", ["unwritable", "existing folder", "under a file"])
def test_file_out(inputs: dict[str, Path], capsys, unwritable_dir: Path, cmd: str, where: str) -> None:  # noqa: ANN001
    out = {"unwritable": unwritable_dir / "o.json", "existing folder": inputs["dir"],
           "under a file": inputs["afile"] / "o.json"}[where]
    argv = {"traffic synth": SYNTH, "traffic import": ["traffic", "import", inputs["azure_conv"]],
            "export": ["export", inputs["k3"]], "tune": tune(inputs)}[cmd]
    needle = {"unwritable": "not writable", "existing folder": "is a folder",
              "under a file": "is a file, not a folder"}[where]
    refused(capsys, [*argv, "--out", out], needle)


# ---- tune storage -----------------------------------------------------------------------------------
def test_tune_storage(inputs: dict[str, Path], capsys, unwritable_dir: Path) -> None:  # noqa: ANN001
    argv = tune(inputs, "--out", inputs["dir"] / "x.json", "--storage")
    refused(capsys, [*argv, f"journal:{unwritable_dir / 's.log'}"], "journal storage", "not writable")
    refused(capsys, [*argv, "journal:"], "journal storage needs a file path")
    refused(capsys, [*argv, f"journal:{inputs['dir']}"], "is a folder")
    refused(capsys, [*argv, f"journal:{inputs['random']}"], "is not an Optuna journal file")


def test_report_on_a_missing_journal_creates_nothing(inputs: dict[str, Path], capsys, tmp_path: Path) -> None:  # noqa: ANN001
    refused(capsys, ["report", "x", "--storage", f"journal:{tmp_path / 'missing.log'}", "--out", tmp_path / "r"],
            "journal storage file not found")
    refused(capsys, ["report", "x", "--storage", f"sqlite:///{tmp_path / 'missing.db'}", "--out", tmp_path / "r"],
            "SQLite storage file not found")
    assert list(tmp_path.iterdir()) == []


# ---- values accepted without a check ----------------------------------------------------------------
def test_values_that_slipped_through(inputs: dict[str, Path], capsys) -> None:  # noqa: ANN001
    out = inputs["dir"] / "x.json"
    refused(capsys, [*SYNTH[:-3], "1e30", "--output-mean", "10", "--out", out], "length mean", "2^62")
    refused(capsys, sim(inputs, "--policy", inputs["kbool"]), "k_schedule", "[1, 4, true]")
    refused(capsys, tune(inputs, "--k-max", "9", "--out", out), "--k-max 9 is above the profile's k_max 4")
    refused(capsys, tune(inputs, "--jobs", "0", "--out", out), "--jobs must lie in 1..256")
    refused(capsys, ["simulate", "--profile", inputs["a"], "--traffic", inputs["t"], "--no-plot",
                     "--policy", inputs["mismatch"], "--out", inputs["dir"] / "sim"],
            "'ngram' says method 'eagle3'", "measured 'ngram' as method 'ngram'")
    refused(capsys, ["export", inputs["mismatch"]], "method 'eagle3', which needs a draft model")
    refused(capsys, sim(inputs, "--traffic", inputs["dir"]), "is a directory, not a file")


# ---- loadgen ----------------------------------------------------------------------------------------
class Server:
    """A loopback TCP server: 'silent' accepts and never answers, 'text' answers every request with
    a 200 whose body is not JSON."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.port = 0

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if self.kind == "text":
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot json!")
                await writer.drain()
                writer.close()
            else:
                await asyncio.sleep(3600)

        async def start() -> None:
            self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
            self.port = self.server.sockets[0].getsockname()[1]
            ready.set()

        def serve() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(start())
            self.loop.run_forever()

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        ready.wait(10)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    s = Server(request.param)
    yield s
    s.close()


def loadgen(i: dict[str, Path], url: str, *extra: Any) -> list[Any]:
    return ["loadgen", "--url", url, "--traffic", i["t"], "--out", i["dir"] / "lg", *extra]


def test_loadgen_bad_urls_and_bounds(inputs: dict[str, Path], capsys) -> None:  # noqa: ANN001
    refused(capsys, loadgen(inputs, "http://127.0.0.1:99999"), "bad port", "1..65535")
    refused(capsys, loadgen(inputs, "http://127.0.0.1:abc"), "bad port")
    for t in ("0", "-1", "nan"):
        refused(capsys, loadgen(inputs, "http://127.0.0.1:9", "--timeout", t), "--timeout must be")


@pytest.mark.parametrize("server", ["text"], indirect=True)
def test_loadgen_against_a_server_that_answers_non_json(inputs: dict[str, Path], capsys, server: Server) -> None:  # noqa: ANN001
    refused(capsys, loadgen(inputs, f"http://127.0.0.1:{server.port}", "--timeout", "5"), "did not return JSON")


@pytest.mark.parametrize("server", ["silent"], indirect=True)
def test_loadgen_against_a_silent_server_respects_the_timeout(inputs: dict[str, Path], capsys,  # noqa: ANN001
                                                              server: Server) -> None:
    t0 = time.monotonic()
    refused(capsys, loadgen(inputs, f"http://127.0.0.1:{server.port}", "--timeout", "2"),
            "did not answer", "within 2 s")
    assert time.monotonic() - t0 < 3.5
    # with --model the first call is /tokenize: the same bound holds
    t0 = time.monotonic()
    refused(capsys, loadgen(inputs, f"http://127.0.0.1:{server.port}", "--timeout", "2", "--model", "m"),
            "did not answer", "within 2 s")
    assert time.monotonic() - t0 < 3.5
    assert not (inputs["dir"] / "lg").exists()


def test_signals_are_restored_after_main(inputs: dict[str, Path], capsys) -> None:  # noqa: ANN001
    import signal

    before = signal.getsignal(signal.SIGTERM)
    run(capsys, sim(inputs))
    assert signal.getsignal(signal.SIGTERM) is before
    assert os.getpid() > 0


# ---- found by tests/test_cli_fuzz.py ----------------------------------------------------------------
@pytest.mark.parametrize(("argv", "needle"), [
    (lambda i: sim(i, "--rate-scale", "5e-324"), "rate_scale must lie in [1e-9, 1e9]"),  # inf arrivals: the
    (lambda i: sim(i, "--max-num-seqs", "4294967296"), "max_num_seqs must be at most 65536"),  # engine wrote
    (lambda i: sim(i, "--seed", "4294967296"), "seed must be at most 2^32 - 1"),  # out of bounds / ran out of memory
    (lambda i: sim(i, "--concurrency", "1", "--think-time", "1e300"), "think_time must be at most 1e9"),
    (lambda i: [*SYNTH, "--arrival", "gamma", "--cv", "1e-300", "--out", i["dir"] / "s.jsonl"], "cv must lie in"),
    (lambda i: tune(i, "--hysteresis", str(10**30), "--out", i["dir"] / "x.json"), "--hysteresis must lie in"),
    (lambda i: tune(i, "--jobs", str(2**63), "--out", i["dir"] / "x.json"), "--jobs must lie in 1..256"),  # a hang
    (lambda i: tune(i, "--trials", str(10**30), "--out", i["dir"] / "x.json"), "--trials must lie in"),
    (lambda i: tune(i, "--tune-engine", "--tokens-choices", "0", "--out", i["dir"] / "x.json"),
     "--tokens-choices needs integers in 1.."),
    (lambda i: ["sweep", "--profile", i["p"], "--policy", i["k3"], "--traffic-shape", i["t"], "--max-requests", "1",
                "--out", i["dir"] / "sw"], "at least two requests"),
    (lambda i: ["sweep", "--profile", i["p"], "--policy", i["k3"], "--traffic-shape", i["t"], "--rates", "1e308",
                "--out", i["dir"] / "sw"], "rates must be numbers in (0, 1e+06]"),
    (lambda i: loadgen(i, "http://[::1"), "cannot read URL"),
    (lambda i: loadgen(i, "http://127.0.0.1:9", "--rate-scale", "5e-324"), "past what a float holds"),
])
def test_fuzz_findings(inputs: dict[str, Path], capsys, argv, needle: str) -> None:  # noqa: ANN001
    refused(capsys, argv(inputs), needle)


def test_loadgen_with_a_model_name_and_no_server(inputs: dict[str, Path], capsys) -> None:  # noqa: ANN001
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    refused(capsys, loadgen(inputs, f"http://127.0.0.1:{port}", "--model", "m"), "no server", "connection refused")


def test_a_policy_with_an_absurd_hysteresis_is_refused_when_loaded(inputs: dict[str, Path], capsys) -> None:  # noqa: ANN001
    doc = json.loads(inputs["k3"].read_text())
    bad = inputs["dir"] / "hyst.json"
    bad.write_text(json.dumps({**doc, "hysteresis": 10**30}))
    refused(capsys, sim(inputs, "--policy", bad), "hysteresis")
