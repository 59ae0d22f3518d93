"""Crash safety and multi-worker studies: real subprocesses, SIGKILL, shared journal and SQLite storage."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from specsim.tuner.storage import open_storage
from tests.tuner.helpers import load_json, popen, specsim, write_inputs

TUNE = ("--no-progress", "--max-num-seqs", "64", "--slo", "ttft=2s,tpot=50ms")


def _trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    try:
        return optuna.load_study(study_name=name, storage=open_storage(url)).get_trials(deepcopy=True)
    except KeyError:
        return []


def test_kill_9_then_resume_loses_no_finished_trial(tmp_path: Path) -> None:
    prof, traf = write_inputs(tmp_path, n=150)
    url = f"journal:{tmp_path / 'study.log'}"
    args = ("tune", "--profile", str(prof), "--traffic", str(traf), "--trials", "30", "--storage", url,
            "--study", "crash", "--out", str(tmp_path / "policy.json"), *TUNE)
    proc = popen(*args)
    deadline = time.monotonic() + 120
    finished: list[optuna.trial.FrozenTrial] = []
    while time.monotonic() < deadline:
        finished = [t for t in _trials(url, "crash") if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        if len(finished) >= 6:
            break
        assert proc.poll() is None, f"tune exited early: {proc.communicate()}"
        time.sleep(0.05)
    assert len(finished) >= 6, "study did not make progress"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    before = {t.number: t for t in _trials(url, "crash") if t.state in (TrialState.COMPLETE, TrialState.PRUNED)}
    assert len(before) >= len(finished)
    assert not (tmp_path / "policy.json").exists()

    # resuming without --resume is refused; with --resume the study completes
    clash = specsim(*args)
    assert clash.returncode == 2 and "--resume" in clash.stderr
    done = specsim(*args, "--resume")
    assert done.returncode == 0, done.stderr
    after = {t.number: t for t in _trials(url, "crash")}
    for n, t in before.items():  # no finished trial lost or changed
        assert after[n].state == t.state and after[n].values == t.values and after[n].params == t.params
    fin = [t for t in after.values() if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(fin) >= 30
    assert not [t for t in after.values() if t.state == TrialState.RUNNING]
    # the trial the kill interrupted, if any, was failed and re-queued with the parameters it had drawn
    for t in after.values():
        if t.state == TrialState.FAIL:
            assert t.user_attrs.get("failed_because") == "worker died"
            if t.params:  # (a kill between ask and the first suggest leaves nothing to re-run)
                retry = [r for r in after.values() if r.user_attrs.get("retry_of") == t.number]
                assert retry and retry[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
                assert t.params.items() <= retry[0].params.items()
    pol = load_json(tmp_path / "policy.json")
    assert pol["provenance"]["objective"] == "goodput"


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_two_workers_share_a_study_without_duplicates_or_losses(tmp_path: Path, kind: str) -> None:
    prof, traf = write_inputs(tmp_path, n=100)
    url = f"journal:{tmp_path / 'study.log'}" if kind == "journal" else f"sqlite:///{tmp_path / 'study.db'}"
    n_trials = 24
    main = popen("tune", "--profile", str(prof), "--traffic", str(traf), "--trials", str(n_trials),
                 "--storage", url, "--study", "shared", "--out", str(tmp_path / "policy.json"),
                 "--no-baselines", "--startup-trials", "6", *TUNE)
    worker = popen("tune-worker", "--storage", url, "--study", "shared", "--no-progress", "--wait", "120")
    out_m, err_m = main.communicate(timeout=300)
    out_w, err_w = worker.communicate(timeout=300)
    assert main.returncode == 0, err_m
    assert worker.returncode == 0, err_w
    trials = _trials(url, "shared")
    numbers = sorted(t.number for t in trials)
    assert numbers == list(range(len(trials))), "trial numbers must be unique and contiguous"
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials), [t.state for t in trials]
    # the budget is met; workers racing for the last slot may add at most one trial each
    assert n_trials <= len(trials) <= n_trials + 1
    owners = {t.user_attrs["worker"] for t in trials}
    assert len(owners) == 2, f"both processes should have run trials, got {owners}"
    assert "worker done" in out_w
    assert (tmp_path / "policy.json").is_file()


def _open(url: str) -> str:
    from specsim.errors import SpecsimError
    from specsim.tuner.storage import open_storage

    try:
        open_storage(url)
    except SpecsimError as exc:
        return str(exc)
    return "ok"


def test_processes_creating_one_new_sqlite_database_at_once_all_succeed(tmp_path: Path) -> None:
    """The loser of the schema-creation race ('table ... already exists') retries instead of failing."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    with ctx.Pool(4) as pool:
        for i in range(4):
            url = f"sqlite:///{tmp_path / f'race-{i}.db'}"
            assert pool.map(_open, [url] * 4) == ["ok"] * 4
