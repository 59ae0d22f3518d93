"""File output: atomic single files, whole output sets, and cleanup when a run is interrupted.

- `atomic_path` / `atomic_write_text`: one file, written beside its target and renamed over it.
- `output_set`: the files of one run (e.g. summary.json + requests.csv + run.png) staged in a hidden
  folder and moved into the output folder together, so a reader finds either the previous run's
  complete set or the new run's, never a mix (docs/formats.md, "Output sets").
- `raise_on_signals`: SIGTERM and SIGHUP raise `Terminated` (SIGINT already raises
  KeyboardInterrupt), so the `finally` blocks above remove their temporary files on a kill.
- `check_output_file` / `check_output_dir`: refuse an unusable `--out` before any work is done.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from specsim.errors import SpecsimError

STAGING_PREFIX = ".specsim-partial-"
"""Hidden folders holding a run's files until they are moved into place."""
_SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None)
_DEFERRED = tuple(s for s in (signal.SIGINT, *_SIGNALS))


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived: unwind like Ctrl-C so temporary files are removed."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


def os_error_message(exc: OSError, action: str = "cannot write") -> str:
    """'cannot write PATH: Permission denied' from an OSError (one line)."""
    reason = exc.strerror or type(exc).__name__
    where = exc.filename if exc.filename is not None else ""
    if exc.filename2 is not None:
        where = f"{where} -> {exc.filename2}"
    return f"{action} {where}: {reason}" if where else f"{action}: {reason}"


_owner: int | None = None
"""The process whose SIGTERM/SIGHUP raise `Terminated` (set by raise_on_signals)."""


def _raising_handler(signum: int, frame: object) -> None:
    if os.getpid() != _owner:  # a child forked without os.fork's hooks: act as the default action would
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    raise Terminated(signum)


def _default_in_child() -> None:
    """A forked worker (tune, sweep) dies on SIGTERM at once, as before: its parent's Pool stops it
    with SIGTERM, and a Python-level handler would wait until the worker runs Python code again."""
    for s in _SIGNALS:
        if signal.getsignal(s) is _raising_handler:
            signal.signal(s, signal.SIG_DFL)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_default_in_child)


@contextlib.contextmanager
def raise_on_signals() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise `Terminated` in this process (forked children get
    the default action back). Outside the main thread this does nothing."""
    global _owner
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _owner = os.getpid()
    old = {s: signal.signal(s, _raising_handler) for s in _SIGNALS}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP while the block runs; they are delivered when it ends."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _nearest_existing(p: Path) -> Path:
    p = Path(os.path.abspath(p))
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _probe_writable(folder: Path, target: Path, what: str) -> None:
    """Create and remove a file in `folder`, or raise a SpecsimError naming `target`."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".specsim-probe-", dir=folder)
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise SpecsimError(f"cannot write {what} {target}: {folder} is not writable ({reason})") from None
    os.close(fd)
    os.unlink(tmp)


def check_output_file(path: str | os.PathLike[str], what: str = "output") -> Path:
    """Refuse, before any work, a file output that is a folder, lies under a file, or cannot be written."""
    p = Path(path)
    if not str(path):
        raise SpecsimError(f"{what} path is empty")
    if p.is_dir():
        raise SpecsimError(f"{what} {p} is a folder; give a file name")
    base = _nearest_existing(p.parent)
    if not base.is_dir():
        raise SpecsimError(f"cannot write {what} {p}: {base} is a file, not a folder")
    _probe_writable(base, p, what)
    return p


def check_output_dir(path: str | os.PathLike[str], what: str = "output folder") -> Path:
    """Refuse, before any work, an output folder that is a file, lies under a file, or cannot be written."""
    p = Path(path)
    if not str(path):
        raise SpecsimError(f"{what} path is empty")
    if p.exists() and not p.is_dir():
        raise SpecsimError(f"{what} {p} is an existing file, not a folder")
    base = _nearest_existing(p)
    if not base.is_dir():
        raise SpecsimError(f"cannot create {what} {p}: {base} is a file, not a folder")
    _probe_writable(base, p, what)
    return p


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds."""
    target = Path(path)
    if target.is_dir():
        raise SpecsimError(f"cannot write {target}: it is a folder")
    base = _nearest_existing(target.parent)
    if not base.is_dir():
        raise SpecsimError(f"cannot write {target}: {base} is a file, not a folder")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise SpecsimError(f"cannot write {target}: {exc.strerror or exc}") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write `text` to `path` atomically (never leaves a half-written file)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale(folder: Path, prefix: str) -> None:
    """Remove staging folders left by a process that no longer exists (killed with SIGKILL)."""
    try:
        entries = list(folder.iterdir())
    except OSError:
        return
    for e in entries:
        if not e.name.startswith(prefix):
            continue
        pid = e.name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(e, ignore_errors=True)


class OutputSet:
    """The files one run writes into one folder, staged and then moved into place together.

    `names` lists every file the command can write into the folder; at commit, such a file that
    this run did not write is removed (it belongs to an earlier run's set). Other files in the
    folder are left alone.
    """

    def __init__(self, folder: str | os.PathLike[str], names: Iterable[str]) -> None:
        self.folder = Path(folder)
        self.names = tuple(names)
        self._created: list[Path] = []
        self._committed = False
        check_output_dir(self.folder)
        tag = f"{os.getpid()}-{secrets.token_hex(4)}"
        try:
            if self.folder.is_dir():
                _remove_stale(self.folder, STAGING_PREFIX)
                self.staging = self.folder / f"{STAGING_PREFIX}{tag}"
                self._fresh = False
            else:
                parent = Path(os.path.abspath(self.folder)).parent
                self._mkdirs(parent)
                _remove_stale(parent, f".{self.folder.name}{STAGING_PREFIX}")
                self.staging = parent / f".{self.folder.name}{STAGING_PREFIX}{tag}"
                self._fresh = True
            self.staging.mkdir()
        except OSError as exc:
            self.discard()
            raise SpecsimError(os_error_message(exc, "cannot create output folder")) from None

    def _mkdirs(self, p: Path) -> None:
        missing = []
        while not p.exists():
            missing.append(p)
            p = p.parent
        for d in reversed(missing):
            d.mkdir()
            self._created.append(d)

    def path(self, name: str) -> Path:
        """Where to write `name` now (inside the staging folder)."""
        if name not in self.names:
            raise ValueError(f"{name!r} is not one of this output set's files {self.names}")
        return self.staging / name

    def final(self, name: str) -> Path:
        """Where `name` will be once the set is committed."""
        return self.folder / name

    def commit(self) -> list[Path]:
        """Move the staged files into the folder (signals held meanwhile); return their final paths.
        A set with no file staged changes nothing."""
        written = [n for n in self.names if (self.staging / n).exists()]
        if not written:
            self.discard()
            return []
        with signals_deferred():
            try:
                if self._fresh and not self.folder.exists():
                    os.rename(self.staging, self.folder)
                else:
                    self.folder.mkdir(parents=True, exist_ok=True)
                    for n in self.names:
                        src, dst = self.staging / n, self.folder / n
                        if src.exists():
                            os.replace(src, dst)
                        elif dst.is_file() or dst.is_symlink():
                            dst.unlink()
                    shutil.rmtree(self.staging, ignore_errors=True)
            except OSError as exc:
                raise SpecsimError(os_error_message(exc, "cannot move outputs into")) from None
            self._committed = True
            self._created.clear()
        return [self.folder / n for n in written]

    def discard(self) -> None:
        """Remove the staging folder (and folders this set created) unless the set was committed."""
        if self._committed:
            return
        self._committed = True
        with signals_deferred():  # a second Ctrl-C must not leave the cleanup half done
            staging = getattr(self, "staging", None)
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
            for d in reversed(self._created):
                with contextlib.suppress(OSError):
                    d.rmdir()
            self._created.clear()


@contextlib.contextmanager
def output_set(folder: str | os.PathLike[str], names: Iterable[str]) -> Iterator[OutputSet]:
    """Stage a run's files (`out.path(name)`) and move them into `folder` together when the block
    succeeds; on an error or an interruption nothing in `folder` changes and no staging is left."""
    out = OutputSet(folder, names)
    try:
        yield out
        out.commit()
    finally:
        out.discard()


__all__ = [
    "OutputSet", "Terminated", "atomic_path", "atomic_write_text", "check_output_dir", "check_output_file",
    "os_error_message", "output_set", "raise_on_signals", "signals_deferred",
]
