"""Distributed tuning on a real PostgreSQL server: `specsim tune` and `specsim tune-worker` share one study.

The test starts a throw-away server (initdb + pg_ctl into a fresh folder, listening on a Unix socket
only, so nothing is reachable from outside), creates a database, runs two worker processes against it
at once and checks that both workers' trials landed in the one study and that the policy was written.
PostgreSQL refuses to run as root, so as root the server runs as the `postgres` system user
(docs: /work/shared/notes/postgresql.md). It skips, saying why, when no server binary, no `postgres`
user (as root) or no psycopg driver is present; `make test` installs the driver (dev extra) and
`.ci/run` the server (apt, where it can).
"""

from __future__ import annotations

import glob
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from specsim.tuner.storage import open_storage
from tests.tuner.helpers import load_json, popen, write_inputs

pytestmark = pytest.mark.slow

TUNE = ("--no-progress", "--max-num-seqs", "64", "--slo", "ttft=2s,tpot=50ms")
START_TIMEOUT_S = 60


def _server_bin() -> Path | None:
    """The folder holding initdb, pg_ctl and createdb: from PATH, else Debian's /usr/lib/postgresql/N/bin."""
    found = shutil.which("initdb")
    if found:
        folder = Path(found).resolve().parent
        if (folder / "pg_ctl").exists():
            return folder
    for cand in sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True):
        return Path(cand).parent
    return None


def _driver() -> str | None:
    """SQLAlchemy's dialect+driver for the installed PostgreSQL driver (psycopg 3 preferred)."""
    if importlib.util.find_spec("psycopg") is not None:
        return "postgresql+psycopg"
    if importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2"
    return None


def _free_port() -> int:
    """A TCP port nobody listens on; the server uses it only to name its socket file."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """An SQLAlchemy URL of an empty database on a private, throw-away PostgreSQL server."""
    bindir = _server_bin()
    if bindir is None:
        pytest.skip("no PostgreSQL server binary (initdb/pg_ctl on PATH or in /usr/lib/postgresql/*/bin); "
                    "install it with `apt-get install -y postgresql`")
    driver = _driver()
    if driver is None:
        pytest.skip("no PostgreSQL driver for SQLAlchemy (pip install 'psycopg[binary]', in the dev extra)")
    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and no `postgres` system user to run the PostgreSQL server as")
        if shutil.which("runuser") is None:
            pytest.skip("running as root and no `runuser` to start the PostgreSQL server as `postgres`")
        as_user = ["runuser", "-u", "postgres", "--"]
    # NOTE: not pytest's tmp_path: as root that lies in a 0700 folder the `postgres` user cannot enter,
    # and a Unix socket path must stay under about 100 characters
    d = Path(tempfile.mkdtemp(prefix="specsim-pg-"))
    if as_user:
        shutil.chown(d, "postgres")
    data, port = d / "data", _free_port()

    def run(*cmd: str, timeout: float = START_TIMEOUT_S) -> None:
        res = subprocess.run([*as_user, *cmd], capture_output=True, text=True, timeout=timeout)
        if res.returncode != 0:
            log = (d / "log").read_text() if (d / "log").exists() else ""
            raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr.strip()} {log[-2000:]}")

    started = False
    try:
        run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync")
        run(str(bindir / "pg_ctl"), "-D", str(data), "-w", "-t", str(START_TIMEOUT_S), "-l", str(d / "log"),
            "-o", f"-p {port} -k {d} -c listen_addresses='' -c fsync=off", "start")
        started = True
        run(str(bindir / "createdb"), "-h", str(d), "-p", str(port), "-U", "postgres", "specsim")
        yield f"{driver}://postgres@/specsim?host={d}&port={port}"
    finally:
        if started:
            try:
                run(str(bindir / "pg_ctl"), "-D", str(data), "-w", "-m", "fast", "stop", timeout=30)
            except (RuntimeError, subprocess.TimeoutExpired):
                run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(d, ignore_errors=True)


def test_tune_and_a_worker_share_one_study_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    prof, traf = write_inputs(tmp_path, n=100)
    n_trials = 24
    # the worker starts first and waits for the study, so both processes are loaded when trials begin
    worker = popen("tune-worker", "--storage", postgres_url, "--study", "pg", "--no-progress", "--wait", "120")
    main = popen("tune", "--profile", str(prof), "--traffic", str(traf), "--trials", str(n_trials),
                 "--storage", postgres_url, "--study", "pg", "--out", str(tmp_path / "policy.json"),
                 "--no-baselines", "--startup-trials", "6", "--prune-percentile", "40", "--min-workers", "2", *TUNE)
    try:
        out_m, err_m = main.communicate(timeout=300)
        out_w, err_w = worker.communicate(timeout=300)
    finally:
        for p in (main, worker):
            if p.poll() is None:
                p.kill()
                p.wait()
    assert main.returncode == 0, err_m
    assert worker.returncode == 0, err_w
    assert "worker done" in out_w

    storage = open_storage(postgres_url)
    assert isinstance(storage, RDBStorage)
    try:
        study = optuna.load_study(study_name="pg", storage=storage)
        trials = study.get_trials(deepcopy=False)
        task = study.user_attrs["specsim_task"]
    finally:
        storage.engine.dispose()  # close this process's connections before the server stops
    numbers = sorted(t.number for t in trials)
    assert numbers == list(range(len(trials))), "trial numbers must be unique and contiguous"
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    # the budget is exact: a worker that lost the race for the last place withdrew its trial unrun
    assert len(finished) == n_trials, [(t.number, t.state, t.user_attrs.get("failed_because")) for t in trials]
    assert all(t.user_attrs.get("failed_because") == "over budget" for t in trials if t not in finished)
    # --min-workers 2: each process claimed a trial before either ran one, however fast the study goes
    owners = {str(t.user_attrs["worker"]).rpartition(":")[2] for t in finished}
    assert owners == {str(main.pid), str(worker.pid)}, f"both processes should have run trials, got {owners}"
    assert (task["prune_percentile"], task["startup_trials"]) == (40.0, 6)

    pol = load_json(tmp_path / "policy.json")
    assert pol["provenance"]["objective"] == "goodput"
    assert "trials" in out_m and "wrote" in out_m
