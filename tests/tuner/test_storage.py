"""Crash safety and multi-worker studies: real subprocesses, SIGKILL, shared journal and SQLite storage."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

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
    """Deterministic whatever the machine's speed: with --min-workers 2 each process claims a trial and
    holds it until the other has claimed one, so both run trials even when the study takes a second."""
    prof, traf = write_inputs(tmp_path, n=100)
    url = f"journal:{tmp_path / 'study.log'}" if kind == "journal" else f"sqlite:///{tmp_path / 'study.db'}"
    n_trials = 24
    main = popen("tune", "--profile", str(prof), "--traffic", str(traf), "--trials", str(n_trials),
                 "--storage", url, "--study", "shared", "--out", str(tmp_path / "policy.json"),
                 "--no-baselines", "--startup-trials", "6", "--min-workers", "2", *TUNE)
    worker = popen("tune-worker", "--storage", url, "--study", "shared", "--no-progress", "--wait", "120")
    out_m, err_m = main.communicate(timeout=300)
    out_w, err_w = worker.communicate(timeout=300)
    assert main.returncode == 0, err_m
    assert worker.returncode == 0, err_w
    trials = _trials(url, "shared")
    numbers = sorted(t.number for t in trials)
    assert numbers == list(range(len(trials))), "trial numbers must be unique and contiguous"
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    # the budget is exact: a worker that lost the race for the last place withdrew its trial unrun
    assert len(finished) == n_trials, [(t.number, t.state, t.user_attrs.get("failed_because")) for t in trials]
    others = [t for t in trials if t not in finished]
    assert all(t.state == TrialState.FAIL and t.user_attrs["failed_because"] == "over budget" for t in others)
    owners = {t.user_attrs["worker"] for t in finished}
    assert len(owners) == 2, f"both processes should have run trials, got {owners}"
    assert "worker done" in out_w
    assert (tmp_path / "policy.json").is_file()


def test_min_workers_gives_up_with_one_line_when_nobody_joins(tmp_path: Path) -> None:
    from specsim.tuner.study import NOT_COUNTED, TrialRunner, budget_used

    study = optuna.create_study()
    runner = TrialRunner.__new__(TrialRunner)
    runner.study, runner.min_workers, runner.worker_wait_s, runner._joined = study, 2, 0.2, False
    trial = study.ask()
    trial.set_user_attr("worker", "here:1")
    from specsim.errors import SpecsimError

    with pytest.raises(SpecsimError, match="only 1 of 2 worker processes joined"):
        runner._wait_for_workers(trial)
    t = study.get_trials()[0]
    assert t.state == TrialState.FAIL and t.user_attrs["failed_because"] in NOT_COUNTED
    assert budget_used(study) == 0


def _race_for_places(storage: optuna.storages.BaseStorage, places: int, ran: list[int], start: Any) -> None:
    """One worker's loop over the budget rule `TrialRunner.run_one` applies (check, ask, withdraw if over)."""
    from specsim.tuner.study import holds_budget, over_budget

    st = optuna.load_study(study_name="race", storage=storage)
    start.wait()
    while True:
        if sum(1 for t in st.get_trials(deepcopy=False) if holds_budget(t)) >= places:
            return
        trial = st.ask()
        if over_budget(st, trial.number, places):
            trial.set_user_attr("failed_because", "over budget")
            st.tell(trial, state=TrialState.FAIL)
            continue
        ran.append(trial.number)
        st.tell(trial, 1.0)


@pytest.mark.filterwarnings("ignore:Heartbeat")
def test_racing_workers_never_exceed_the_budget(tmp_path: Path) -> None:
    """Four threads race one SQLite study for 5 places, five times over: exactly 5 run each time (before the
    withdrawal rule, the same check-then-ask loop ran 6, 7, 6, 6 and 6)."""
    import threading

    for rep in range(5):
        storage = open_storage(f"sqlite:///{tmp_path / f'race{rep}.db'}")
        optuna.create_study(storage=storage, study_name="race")
        ran: list[int] = []
        start = threading.Barrier(4)
        threads = [threading.Thread(target=_race_for_places, args=(storage, 5, ran, start)) for _ in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(60)
        assert len(ran) == 5, (rep, ran)


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


def test_a_journal_cut_mid_record_resumes_with_every_finished_trial(tmp_path: Path) -> None:
    """A crash during a write leaves the journal's last record without its end: --resume keeps every record
    before it, sets the cut bytes aside, says so in one line, and the study stays readable afterwards."""
    prof, traf = write_inputs(tmp_path, n=60)
    log = tmp_path / "study.log"
    url = f"journal:{log}"
    args = ("tune", "--profile", str(prof), "--traffic", str(traf), "--storage", url, "--study", "cut",
            "--out", str(tmp_path / "policy.json"), "--no-baselines", *TUNE)
    first = specsim(*args, "--trials", "8")
    assert first.returncode == 0, first.stderr
    before = {t.number: t.values for t in _trials(url, "cut") if t.state == TrialState.COMPLETE}
    whole = log.read_bytes()
    log.write_bytes(whole + b'{"op_code": 5, "worker_id": "x", "trial_id": 3, "sta')  # the crash
    again = specsim(*args, "--trials", "12", "--resume")
    assert again.returncode == 0, again.stderr
    assert "cut short by a crash" in again.stderr and again.stderr.count("\n") == 1, again.stderr
    assert (tmp_path / "study.log.torn-1").read_bytes().startswith(b'{"op_code": 5')
    after = {t.number: t for t in _trials(url, "cut")}
    assert all(after[n].values == v for n, v in before.items())
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in after.values()) == 12
    report = specsim("report", "cut", "--storage", url, "--out", str(tmp_path / "rep"))
    assert report.returncode == 0, report.stderr


def test_a_journal_damaged_mid_file_is_one_line(tmp_path: Path) -> None:
    prof, traf = write_inputs(tmp_path, n=60)
    log = tmp_path / "study.log"
    first = specsim("tune", "--profile", str(prof), "--traffic", str(traf), "--storage", f"journal:{log}",
                    "--study", "s", "--trials", "4", "--out", str(tmp_path / "p.json"), "--no-baselines", *TUNE)
    assert first.returncode == 0, first.stderr
    lines = log.read_bytes().split(b"\n")
    lines[2] = lines[2][: len(lines[2]) // 2]
    log.write_bytes(b"\n".join(lines))
    size = log.stat().st_size
    for cmd in (("tune", "--profile", str(prof), "--traffic", str(traf), "--storage", f"journal:{log}", "--study",
                 "s", "--trials", "6", "--out", str(tmp_path / "p.json"), "--resume", *TUNE),
                ("report", "s", "--storage", f"journal:{log}", "--out", str(tmp_path / "r")),
                ("tune-worker", "--storage", f"journal:{log}", "--study", "s", "--wait", "1")):
        res = specsim(*cmd)
        assert res.returncode == 2 and "damaged at line 3" in res.stderr and res.stderr.count("\n") == 1, res.stderr
    assert log.stat().st_size == size  # nothing was appended or cut
