"""Silent wrong results and a capacity planner's friction (issue 27, items 6 and 7): each test failed
before its fix."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from specsim.cli import main
from specsim.errors import SpecsimError
from specsim.formats.policy import Policy, load_policy, read_policy
from specsim.formats.profile import load_profile, save_profile
from specsim.formats.traffic import Traffic, save_traffic
from specsim.policies.export import export
from specsim.profiler.analytic import constant_profile
from specsim.tuner.storage import open_storage
from tests.tuner.helpers import REPO, poisson, write_inputs


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    prof = constant_profile(step_ms=10, draft_ratio=0.1, alpha=0.6, k_max=4, traces=4, trace_length=128)
    save_profile(prof, tmp_path / "p.json")
    save_traffic(poisson(60, 20.0, seed=1, inp=(16, 64), out=(4, 24)), tmp_path / "t.jsonl")
    return {"p": tmp_path / "p.json", "t": tmp_path / "t.jsonl", "dir": tmp_path}


# ---- 6. silent wrong results ----------------------------------------------------------------------------
def test_an_objective_no_request_can_measure_is_refused(files: dict[str, Path], capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    one = files["dir"] / "one.jsonl"
    save_traffic(Traffic.from_arrays([0.0, 0.5, 1.0], [20, 20, 20], [1, 1, 1]), one)
    for objective in ("p99-tpot", "mean-itl"):
        rc, _, err = _run(["tune", "--profile", str(files["p"]), "--traffic", str(one), "--objective", objective,
                           "--trials", "3", "--no-progress", "--out", str(files["dir"] / "pol.json")], capsys)
        assert rc == 2 and "undefined on this traffic" in err, err
    assert not (files["dir"] / "pol.json").exists()


@pytest.mark.parametrize("doc,why", [
    ({"version": 1, "family": "trtllm", "drafter": {"name": "ngram", "method": "ngram"},
      "trtllm": {"max_draft_len": 2}}, "version 2 field"),
    ({"version": 1, "drafter": {"name": "ngram", "method": "ngram"}, "k_schedule": [[1, 4, 2]],
      "queue": {"max_waiting": 2, "k": 0}}, "version 2 field"),
    ({"version": 1.0, "drafter": {"name": "ngram", "method": "ngram"}, "k_schedule": [[1, 4, 2]]}, "version 1.0"),
    ({"version": "1", "k_schedule": []}, "version '1'"),
])
def test_policy_versions_are_read_as_written(tmp_path: Path, doc: dict, why: str) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(SpecsimError, match=why):
        load_policy(path)


def test_an_older_profile_carrying_later_fields_is_refused(files: dict[str, Path], tmp_path: Path) -> None:
    doc = json.loads(files["p"].read_text())
    doc["drafters"][next(iter(doc["drafters"]))]["family"] = {"kind": "parallel"}
    for version in (1, 2):
        doc["version"] = version
        (tmp_path / "old.json").write_text(json.dumps(doc))
        with pytest.raises(SpecsimError, match="version 3 field"):
            load_profile(tmp_path / "old.json")
    doc["drafters"][next(iter(doc["drafters"]))].pop("family")
    doc["version"], doc["target"]["start_spread"] = 1, 0.05
    (tmp_path / "old.json").write_text(json.dumps(doc))
    with pytest.raises(SpecsimError, match="target.start_spread is a version 2 field"):
        load_profile(tmp_path / "old.json")
    doc["version"] = 1.0
    (tmp_path / "old.json").write_text(json.dumps(doc))
    with pytest.raises(SpecsimError, match="unsupported profile schema version 1.0"):
        load_profile(tmp_path / "old.json")


def test_a_policy_must_match_the_profiles_drafter_in_model_and_parameters(files: dict[str, Path],
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from specsim.profiler.analytic import analytic_profile

    prof = analytic_profile(k_max=4)  # drafters draft_model (llama-1b) and ngram 2..4
    save_profile(prof, files["dir"] / "a.json")
    for drafter, msg in (({"name": "ngram", "method": "ngram", "params": {"prompt_lookup_min": 7,
                                                                          "prompt_lookup_max": 9}}, "prompt_lookup"),
                         ({"name": "draft_model", "method": "draft_model", "model": "llama-8b"}, "names model")):
        pol = files["dir"] / "pol.json"
        pol.write_text(json.dumps({"version": 2, "drafter": drafter, "k_schedule": [[1, 8, 2]]}))
        rc, _, err = _run(["simulate", "--profile", str(files["dir"] / "a.json"), "--traffic", str(files["t"]),
                           "--policy", str(pol), "--no-plot", "--out", str(files["dir"] / "o")], capsys)
        assert rc == 2 and msg in err, err


def test_lossy_export_drops_what_vllm_cannot_enforce_and_lists_it() -> None:
    eagle = Policy.model_validate({"version": 2, "drafter": {"name": "e", "method": "eagle3", "model": "/h"},
                                   "k_schedule": [[1, 8, 3]], "hysteresis": 2})
    queue = Policy.model_validate({"version": 2, "family": "specsim", "drafter": {"name": "ngram", "method": "ngram"},
                                   "k_schedule": [[1, 8, 3]], "hysteresis": 1, "queue": {"max_waiting": 4, "k": 1},
                                   "acceptance_floor": {"min_rate": 0.3}})
    for pol, dropped in ((eagle, ["hysteresis"]), (queue, ["hysteresis", "acceptance_floor"])):
        with pytest.raises(SpecsimError, match="--lossy"):
            export(pol, "vllm")
        exp = export(pol, "vllm", lossy=True)
        assert [u.split(" ")[0] for u in exp.unsupported] == dropped
        assert exp.config is not None and exp.config["method"] == pol.drafter.method  # not specsim's proposer
        assert exp.config["num_speculative_tokens_per_batch_size"][0] == [1, 8, 3]


def test_sqlite_with_two_workers_runs_the_budget_exactly(tmp_path: Path) -> None:
    prof, traf = write_inputs(tmp_path, n=60)
    url = f"sqlite:///{tmp_path / 's.db'}"
    args = ("tune", "--profile", str(prof), "--traffic", str(traf), "--trials", "30", "--storage", url,
            "--study", "s", "--no-progress", "--no-baselines", "--jobs", "2", "--out", str(tmp_path / "pol.json"))
    res = subprocess.run([sys.executable, "-m", "specsim", *args], capture_output=True, text=True, cwd=REPO,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    trials = optuna.load_study(study_name="s", storage=open_storage(url)).get_trials()
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == 30


def test_a_trial_ctrl_c_interrupted_is_run_again_on_resume(tmp_path: Path) -> None:
    """SIGINT in the middle of a study: the running trial is failed as 'interrupted', not counted, and
    --resume finishes every trial of the budget."""
    prof, traf = write_inputs(tmp_path, n=300)
    url = f"journal:{tmp_path / 'j.log'}"
    args = ["tune", "--profile", str(prof), "--traffic", str(traf), "--trials", "40", "--storage", url,
            "--study", "s", "--no-progress", "--no-baselines", "--out", str(tmp_path / "pol.json")]
    proc = subprocess.Popen([sys.executable, "-m", "specsim", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            done = [t for t in optuna.load_study(study_name="s", storage=open_storage(url)).get_trials()
                    if t.state == TrialState.COMPLETE]
        except (KeyError, SpecsimError):
            done = []
        if len(done) >= 4:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    res = subprocess.run([sys.executable, "-m", "specsim", *args, "--resume"], capture_output=True, text=True,
                         cwd=REPO, timeout=300)
    assert res.returncode == 0, res.stderr
    trials = optuna.load_study(study_name="s", storage=open_storage(url)).get_trials()
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == 40
    for t in trials:
        if t.state == TrialState.FAIL:
            assert t.user_attrs["failed_because"] in ("interrupted", "over budget"), t.user_attrs


def test_tune_says_how_many_requests_it_tunes_on(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _run(["tune", "--profile", str(files["p"]), "--traffic", str(files["t"]), "--max-requests", "20",
                         "--trials", "3", "--no-progress", "--out", str(files["dir"] / "pol.json")], capsys)
    assert rc == 0, err
    assert "on the first 20 of 60 requests" in out and "on 60 requests" not in out


def test_loads_with_max_requests_simulates_every_load(files: dict[str, Path], capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    rc, out, err = _run(["tune", "--profile", str(files["p"]), "--traffic", str(files["t"]), "--loads", "2,8",
                         "--max-requests", "10", "--trials", "3", "--no-progress", "--out",
                         str(files["dir"] / "pol.json")], capsys)
    assert rc == 0, err
    assert "2 loads (2, 8 req/s): 10 requests at each, 20 in all" in out
    pol = load_policy(files["dir"] / "pol.json")
    assert pol.provenance.predicted["requests"] == 20


# ---- 7. a capacity planner's friction ---------------------------------------------------------------
def test_compare_off_is_written_and_plotted(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    out = files["dir"] / "o"
    rc, _, err = _run(["simulate", "--profile", str(files["p"]), "--traffic", str(files["t"]), "--policy",
                       "static:3", "--compare-off", "--out", str(out)], capsys)
    assert rc == 0, err
    off = json.loads((out / "summary-off.json").read_text())
    on = json.loads((out / "summary.json").read_text())
    assert off["requests"] == on["requests"] == 60 and off["tpot_mean"] != on["tpot_mean"]
    assert (out / "requests-off.csv").is_file() and (out / "run.png").stat().st_size > 10_000
    # without --compare-off, the earlier run's off files (specsim's own) leave with the set
    rc, _, err = _run(["simulate", "--profile", str(files["p"]), "--traffic", str(files["t"]), "--policy",
                       "static:3", "--no-plot", "--out", str(out)], capsys)
    assert rc == 0 and not (out / "summary-off.json").exists() and not (out / "run.png").exists()


def test_headers_count_the_requests_simulated(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _run(["simulate", "--profile", str(files["p"]), "--traffic", str(files["t"]), "--max-requests",
                         "7", "--no-plot", "--out", str(files["dir"] / "o")], capsys)
    assert rc == 0, err
    assert "7 of the trace's 60 requests" in out and "60 requests" not in out.replace("trace's 60 requests", "")


def test_static_and_off_shorthands_wherever_a_policy_is_read(files: dict[str, Path],
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    prof = load_profile(files["p"])
    assert read_policy("off", prof) == Policy()
    k3 = read_policy("static:3", prof)
    assert k3.k_at(1) == k3.k_at(1000) == 3 and k3.drafter is not None
    assert read_policy(f"static:2@{k3.drafter.name}", prof).max_k == 2
    for bad, msg in (("static:0", "whole number"), ("static:x", "whole number"), ("static:9", "may run K"),
                     ("static:2@nope", "not in the profile"), ("k4", "not found")):
        with pytest.raises(SpecsimError, match=msg):
            read_policy(bad, prof)
    for argv in (["simulate", "--profile", str(files["p"]), "--traffic", str(files["t"]), "--policy", "off",
                  "--no-plot", "--out", str(files["dir"] / "a")],
                 ["sweep", "--profile", str(files["p"]), "--policy", "static:2", "--traffic-shape", str(files["t"]),
                  "--rates", "1,4", "--out", str(files["dir"] / "b")],
                 ["export", "static:3@ngram", "--to", "vllm"],
                 ["serve", "static:2", "--profile", str(files["p"]), "--dry-run"]):
        rc, _, err = _run(argv, capsys)
        assert rc == 0 or "vLLM is not installed" in err or "model not found" in err, (argv, err)


def test_a_fleet_larger_than_the_traffic_says_so(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _run(["simulate", "--profile", str(files["p"]), "--traffic", str(files["t"]), "--replicas", "100",
                         "--no-plot", "--out", str(files["dir"] / "o")], capsys)
    assert rc == 0, err
    assert "at least 40 of them will serve nothing" in out and "simulating 100 replicas" in out
    assert "replicas served no request" in out
