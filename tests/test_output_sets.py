"""A run's output files land as one set; an interrupted run leaves the previous set and no temporaries."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from specsim.cli import main
from specsim.errors import SpecsimError
from specsim.formats.profile import save_profile
from specsim.formats.traffic import Traffic, save_traffic
from specsim.io import (
    MANIFEST,
    STAGING_PREFIX,
    Terminated,
    check_output_dir,
    check_output_file,
    output_set,
    raise_on_signals,
)
from specsim.profiler.analytic import constant_profile

REPO = Path(__file__).resolve().parents[1]
N_BIG = 10_000


def files(out: Path) -> list[str]:
    """The folder's entries other than specsim's record of what it wrote."""
    return sorted(p.name for p in out.iterdir() if p.name != MANIFEST)


def leftovers(root: Path) -> list[Path]:
    """Staging folders and temporary files anywhere under root."""
    return [p for p in root.rglob("*") if STAGING_PREFIX in p.name or p.name.endswith(".tmp")]


def test_set_is_moved_in_together_and_replaces_the_old_set(tmp_path: Path) -> None:
    out = tmp_path / "new" / "out"
    with output_set(out, ("a.txt", "b.txt", "c.png")) as s:
        s.path("a.txt").write_text("1")
        s.path("b.txt").write_text("1")
        s.path("c.png").write_text("1")
        assert not out.exists()  # nothing visible until the block ends
    assert files(out) == ["a.txt", "b.txt", "c.png"] and (out / MANIFEST).is_file()
    with output_set(out, ("a.txt", "b.txt", "c.png")) as s:  # a folder of specsim's own files: no --force
        s.path("a.txt").write_text("2")
        s.path("b.txt").write_text("2")
        assert (out / "a.txt").read_text() == "1"
    # the old set's c.png is not part of the new set
    assert files(out) == ["a.txt", "b.txt"] and (out / "a.txt").read_text() == "2" and not leftovers(tmp_path)


def test_a_folder_with_the_users_files_is_refused_and_their_files_never_deleted(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with output_set(out, ("a.txt", "c.png")) as s:
        s.path("a.txt").write_text("1")
        s.path("c.png").write_text("1")
    (out / "notes.md").write_text("mine")
    with pytest.raises(SpecsimError, match=r"holds files specsim did not write \(notes.md\).*--force"):
        output_set(out, ("a.txt", "c.png")).__enter__()
    assert files(out) == ["a.txt", "c.png", "notes.md"] and not leftovers(tmp_path)
    (out / "c.png").write_text("the user's own plot now")  # changed since specsim wrote it: the user's
    with output_set(out, ("a.txt", "c.png"), force=True) as s:
        s.path("a.txt").write_text("2")
    assert files(out) == ["a.txt", "c.png", "notes.md"]
    assert (out / "c.png").read_text() == "the user's own plot now" and (out / "notes.md").read_text() == "mine"
    # a plain folder of the user's (no record at all): refused, and with --force nothing of theirs goes
    user = tmp_path / "user"
    user.mkdir()
    (user / "run.png").write_text("theirs")
    with pytest.raises(SpecsimError, match="did not write"):
        output_set(user, ("summary.json", "run.png")).__enter__()
    with output_set(user, ("summary.json", "run.png"), force=True) as s:
        s.path("summary.json").write_text("{}")
    assert (user / "run.png").read_text() == "theirs" and files(user) == ["run.png", "summary.json"]


def test_a_failed_run_changes_nothing_and_leaves_no_staging(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with output_set(out, ("a.txt", "b.txt")) as s:
        s.path("a.txt").write_text("old")
        s.path("b.txt").write_text("old")
    for exc in (RuntimeError("boom"), KeyboardInterrupt(), Terminated(signal.SIGTERM)):
        with pytest.raises(type(exc)), output_set(out, ("a.txt", "b.txt")) as s:
            s.path("a.txt").write_text("new")
            raise exc
        assert {n: (out / n).read_text() for n in files(out)} == {"a.txt": "old", "b.txt": "old"}
    # a first run that fails leaves no folder behind, not even the parents it made
    with pytest.raises(RuntimeError), output_set(tmp_path / "x" / "y" / "z", ("a.txt",)) as s:
        s.path("a.txt").write_text("new")
        raise RuntimeError
    assert not (tmp_path / "x").exists() and not leftovers(tmp_path)


def test_a_set_with_nothing_written_leaves_the_folder_alone(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.txt").write_text("old")
    with output_set(out, ("a.txt",), force=True):
        pass
    assert (out / "a.txt").read_text() == "old" and not leftovers(tmp_path)


def test_staging_of_a_killed_process_is_removed_by_the_next_run(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"{STAGING_PREFIX}{dead.stdout.strip()}-abcd"
    stale.mkdir()
    (stale / "a.txt").write_text("half")
    with output_set(tmp_path, ("a.txt",)) as s:
        s.path("a.txt").write_text("new")
    assert not stale.exists() and (tmp_path / "a.txt").read_text() == "new"


def test_unusable_outputs_are_refused_before_any_work(tmp_path: Path, unwritable_dir: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(SpecsimError, match="existing file, not a folder"):
        check_output_dir(f)
    with pytest.raises(SpecsimError, match="is a file, not a folder"):
        check_output_dir(f / "sub")
    with pytest.raises(SpecsimError, match="not writable"):
        check_output_dir(unwritable_dir / "out")
    with pytest.raises(SpecsimError, match="is a folder"):
        check_output_file(tmp_path)
    with pytest.raises(SpecsimError, match="is a file, not a folder"):
        check_output_file(f / "x.json")
    with pytest.raises(SpecsimError, match="not writable"):
        check_output_file(unwritable_dir / "x.json")
    check_output_file(tmp_path / "new" / "x.json")
    assert not (tmp_path / "new").exists()  # checking creates nothing


def test_sigterm_raises_in_this_process_only() -> None:
    with raise_on_signals(), pytest.raises(Terminated):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(signal.getsignal(signal.SIGTERM))


def _sigterm_action() -> str:
    return str(signal.getsignal(signal.SIGTERM))


def test_forked_workers_keep_the_default_sigterm() -> None:
    """Pool.terminate() stops idle workers with SIGTERM; a Python-level handler would never run in a
    worker blocked on its task queue, and the pool (tune/sweep --jobs) would hang."""
    from specsim.tuner.parallel import fork_context

    with raise_on_signals():
        with fork_context().Pool(1) as pool:
            assert pool.apply(_sigterm_action) == str(signal.SIG_DFL)
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL  # the parent still raises


# ---- simulate, interrupted --------------------------------------------------------------------------
def _trace(n: int, seed: int) -> Traffic:
    rng = np.random.default_rng(seed)
    return Traffic.from_arrays(np.cumsum(rng.exponential(1 / 50, n)), rng.integers(20, 100, n),
                               rng.integers(5, 40, n))


def _set_size(out: Path) -> int:
    """Requests in the run whose files are in `out`; asserts summary and CSV belong to the same run."""
    summary = json.loads((out / "summary.json").read_text())
    with open(out / "requests.csv", newline="") as f:
        rows = sum(1 for _ in csv.reader(f)) - 1
    assert summary["requests"] == rows, f"summary of {summary['requests']} requests beside a CSV of {rows}"
    return rows


def _kill_when(proc: subprocess.Popen[bytes], ready: Callable[[], bool], sig: int, limit: float = 60.0) -> None:
    end = time.monotonic() + limit
    while not ready():
        if proc.poll() is not None or time.monotonic() > end:
            return
        time.sleep(0.002)
    proc.send_signal(sig)


def test_killed_simulate_leaves_the_old_set_or_the_new_one_and_no_temporaries(tmp_path: Path) -> None:
    save_profile(constant_profile(step_ms=10, draft_ratio=0.1, alpha=0.6, k_max=4, traces=4, trace_length=64),
                 tmp_path / "p.json")
    save_traffic(_trace(20, 1), tmp_path / "small.jsonl")
    save_traffic(_trace(N_BIG, 2), tmp_path / "big.jsonl")
    out = tmp_path / "out"
    base = ["simulate", "--profile", str(tmp_path / "p.json"), "--no-plot", "--out", str(out)]
    assert main([*base, "--traffic", str(tmp_path / "small.jsonl")]) == 0
    assert _set_size(out) == 20
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))

    def writing_csv() -> bool:
        return any(p.name.startswith(".requests.csv.") for p in out.rglob("*"))

    def simulating() -> bool:  # staging exists from before the simulation starts; else give it 2.5 s
        return any(p.name.startswith(STAGING_PREFIX) for p in out.iterdir()) or time.monotonic() > start + 2.5

    # SIGTERM while simulating, then Ctrl-C once requests.csv is being written
    for sig, ready in ((signal.SIGTERM, simulating), (signal.SIGINT, writing_csv)):
        start = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "specsim", *base, "--traffic", str(tmp_path / "big.jsonl")],
                                cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _kill_when(proc, ready, sig)
        _, err = proc.communicate(timeout=120)
        # 0: it finished first; 143 / 130: the CLI unwound; -sig: killed while Python was still starting
        assert proc.returncode in (0, 128 + sig, 130, -sig), err
        assert _set_size(out) in (20, N_BIG)  # the old complete set or the new complete set
        if proc.returncode != 0:
            assert _set_size(out) == 20
            if proc.returncode > 0:
                assert err.decode().strip().splitlines()[-1] in ("specsim: terminated by SIGTERM",
                                                                 "specsim: interrupted")
        assert not leftovers(tmp_path), leftovers(tmp_path)
    assert files(out) == ["requests.csv", "summary.json"]
