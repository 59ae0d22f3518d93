"""Study storage: in-memory, an Optuna journal file, SQLite, or any RDB URL Optuna supports.

`journal:PATH` is Optuna's JournalStorage with its file backend: an append-only log that survives
a crash (kill -9) and is safe for several processes on one machine (file lock). `sqlite:///f.db`,
`postgresql://...`, `mysql://...` go to Optuna's RDBStorage, with heartbeats so trials of a dead
worker on another machine are marked failed.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import warnings
from datetime import datetime
from pathlib import Path

import optuna
from optuna.storages import BaseStorage, InMemoryStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.trial import TrialState

from specsim.errors import SpecsimError
from specsim.io import check_output_file

HEARTBEAT_S = 10
GRACE_S = 60
LOCK_GRACE_S = 5
UNOWNED_GRACE_S = 10
SCHEMA_RETRIES = 8


def is_persistent(url: str | None) -> bool:
    """True for a storage other processes can share."""
    return bool(url) and url != "memory"


def open_storage(url: str | None, create: bool = True) -> BaseStorage:
    """Storage for a URL: None/'memory', 'journal:PATH', or an RDB URL (sqlite:///..., postgresql://...).

    `create=False` (reading a finished study): a journal or SQLite file that does not exist is an
    error, and nothing is created.
    """
    if not url or url == "memory":
        return InMemoryStorage()
    if url.startswith("journal:"):
        return _open_journal(url[len("journal:"):], create)
    if "://" in url:
        if url.startswith("sqlite:///"):
            db = Path(url[len("sqlite:///"):]).expanduser()
            if not create and not db.is_file():
                raise SpecsimError(f"SQLite storage file not found: {db}")
            if create:
                check_output_file(db, "SQLite storage")
                db.parent.mkdir(parents=True, exist_ok=True)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        for attempt in range(SCHEMA_RETRIES):
            try:
                return RDBStorage(
                    url,
                    heartbeat_interval=HEARTBEAT_S,
                    grace_period=GRACE_S,
                    engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None,
                )
            except ImportError as exc:
                raise SpecsimError(f"storage {url!r} needs a database driver that is not installed: {exc}") from None
            except Exception as exc:  # sqlalchemy: bad URL, unreachable server, schema race
                # two processes creating the schema of a new database at once: one loses (a duplicate
                # version row, or "table ... already exists" from CREATE TABLE) and retries
                text = type(exc).__name__ + str(exc)
                race = "IntegrityError" in text or "already exists" in text
                if race and attempt < SCHEMA_RETRIES - 1:
                    time.sleep(0.2 * (attempt + 1))
                    continue
                raise SpecsimError(f"cannot open storage {url!r}: {type(exc).__name__}: {exc}") from None
    raise SpecsimError(f"unknown storage {url!r} (use journal:PATH, sqlite:///PATH or an RDB URL)")


def _open_journal(raw: str, create: bool) -> JournalStorage:
    if not raw.strip():
        raise SpecsimError("journal storage needs a file path: --storage journal:study.log")
    path = Path(raw).expanduser()
    if path.is_dir():
        raise SpecsimError(f"journal storage {path} is a folder; give a file path, e.g. journal:{path / 'study.log'}")
    if not create and not path.exists():
        raise SpecsimError(f"journal storage file not found: {path}")
    if create:
        check_output_file(path, "journal storage")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # The open-lock (O_EXCL lock file) is held only while appending a few lines; a process killed
        # while holding it leaves the file behind, which the next writer removes after the grace period.
        lock = JournalFileOpenLock(str(path), grace_period=LOCK_GRACE_S)
        if path.exists():
            check_journal(path, lock if create else None)
        return JournalStorage(JournalFileBackend(str(path), lock_obj=lock))
    except OSError as exc:
        raise SpecsimError(f"cannot open journal storage {path}: {exc.strerror or exc}") from None
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:  # not lines of Optuna JSON logs
        why = "not UTF-8 JSON lines" if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
        raise SpecsimError(f"journal storage {path} is not an Optuna journal file ({why})") from None


def check_journal(path: Path, lock: JournalFileOpenLock | None) -> None:
    """Refuse a journal damaged in the middle (one line); with `lock` (the caller will write; held while
    checking, so that no writer is mid-append), set a last record cut short by a crash aside, so that
    nothing is ever appended onto it.

    NOTE: Optuna's JournalFileBackend.read_logs skips a last line without its newline but appends the
    next record right after it, which joins the two into one line that no reader accepts again
    (optuna/storages/journal/_file.py): every finished trial would become unreadable."""
    if lock is None:
        _check_journal(path, repair=False)
        return
    lock.acquire()
    try:
        _check_journal(path, repair=True)
    finally:
        lock.release()


def _check_journal(path: Path, repair: bool) -> None:
    from specsim.formats._common import open_input
    from specsim.io import set_aside_torn_tail

    records = 0
    torn = b""
    with open_input(path, "journal storage") as f:  # a regular file within the size limit
        for n, line in enumerate(f, start=1):
            if not line.endswith(b"\n"):
                torn = line[:1]  # a last line cut short (read-only: Optuna skips it)
                break
            try:
                rec = json.loads(line)
            except ValueError:
                where = f"damaged at line {n}" if records else f"not an Optuna journal file (line {n})"
                raise SpecsimError(f"journal storage {path} is {where}: not a JSON record; restore it from a copy, "
                                   "or start another --storage") from None
            if not isinstance(rec, dict) or "op_code" not in rec:
                raise SpecsimError(f"journal storage {path} line {n} is not an Optuna journal record") from None
            records += 1
    if torn and not (records and torn == b"{"):
        raise SpecsimError(f"journal storage {path} is not an Optuna journal file (its last line is no record)")
    if torn and repair:
        moved, side = set_aside_torn_tail(path)
        if moved:
            print(f"specsim: note: journal storage {path} ended in a record cut short by a crash ({moved} bytes, "
                  f"moved to {side}); every record before it is kept", file=sys.stderr)


def worker_id() -> str:
    """host:pid of this process, recorded on every trial it runs."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_orphans(study: optuna.Study) -> list[int]:
    """Fail RUNNING trials whose worker process on this host is gone and re-queue their parameters.

    This is what `--resume` relies on after a kill -9: finished trials are in the storage already;
    the trial that was running is marked FAIL and its parameters are enqueued to run again.
    Trials of workers on other hosts are left to the RDB heartbeat.
    """
    host = socket.gethostname()
    now = datetime.now()
    redo: list[int] = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = str(t.user_attrs.get("worker", ""))
        if not owner:  # killed between ask() and recording its owner, which takes milliseconds
            started = t.datetime_start or now
            if (now - started).total_seconds() < UNOWNED_GRACE_S:
                continue
        else:
            h, _, p = owner.rpartition(":")
            if h != host or not p.isdigit() or _alive(int(p)):
                continue
        study._storage.set_trial_user_attr(t._trial_id, "failed_because", "worker died")
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
        if t.params:
            study.enqueue_trial(dict(t.params), user_attrs={"retry_of": t.number}, skip_if_exists=False)
        redo.append(t.number)
    return redo
