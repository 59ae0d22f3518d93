"""File output: atomic single files, whole output sets, and cleanup when a run is interrupted.

- `atomic_path` / `atomic_write_text`: one file, written beside its target and renamed over it.
- `output_set`: the files of one run (e.g. summary.json + requests.csv + run.png) staged in a hidden
  folder and moved into the output folder together, so a reader finds either the previous run's
  complete set or the new run's, never a mix (docs/formats.md, "Output sets").
- `raise_on_signals`: SIGTERM and SIGHUP raise `Terminated` (SIGINT already raises
  KeyboardInterrupt), so the `finally` blocks above remove their temporary files on a kill.
- `check_output_file` / `check_output_dir`: refuse an unusable `--out` before any work is done, an
  empty one, or one that is also an input (`refuse_input_as_output`).

An output folder records the files specsim wrote into it in `.specsim-outputs.json` (name -> size and
modification time). A folder holding anything else is refused unless the user passes `--force`, and
a file is only ever removed when that record says specsim wrote it and it is unchanged since.
"""

from __future__ import annotations

import argparse
import contextlib
import json
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
MANIFEST = ".specsim-outputs.json"
"""In an output folder: the files specsim wrote there, with the size and mtime it left them with."""
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


def output_path(text: str) -> Path:
    """argparse type of every output path: refuses an empty one (Path("") would mean the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("the output path is empty")
    return Path(text)


def add_force_arg(p: argparse.ArgumentParser) -> None:
    """`--force`: write into an output folder that holds files specsim did not write."""
    p.add_argument("--force", action="store_true",
                   help="write into an --out folder that holds files specsim did not write (they are left alone)")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def refuse_input_as_output(out: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str] | None],
                           what: str = "output") -> None:
    """Refuse an output file that is (or links to) one of the command's inputs: writing it would destroy
    the input."""
    o = Path(out)
    for i in inputs:
        if i is None or not str(i):
            continue
        if _same_file(o, Path(i)) or os.path.realpath(o) == os.path.realpath(i):
            raise SpecsimError(f"{what} {o} is also an input of this command; write to another path")


def check_output_file(path: str | os.PathLike[str], what: str = "output") -> Path:
    """Refuse, before any work, a file output that is a folder, lies under a file, or cannot be written."""
    p = Path(path)
    if not str(path) or not str(path).strip():
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
    if not str(path) or not str(path).strip():
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


MAX_TORN_BYTES = 64 << 20
"""Longest cut-short record `set_aside_torn_tail` sets aside (records of specsim's logs are a few KiB)."""


def set_aside_torn_tail(path: str | os.PathLike[str]) -> tuple[int, Path | None]:
    """In an append-only log of lines, a last line without its newline is a record cut short by a crash
    during a write. Move those bytes to `PATH.torn-N` (kept for inspection, never deleted) and truncate
    the log after its last complete line, so the next append starts a line of its own; return (bytes
    moved, where). The caller holds the log's write lock: a writer mid-append also looks torn."""
    p = Path(path)
    try:
        with open(p, "rb+") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return 0, None
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return 0, None
            start = max(0, size - (1 << 20))
            cut = -1
            while cut < 0:
                f.seek(start)
                block = f.read(min(size - start, 1 << 20))
                i = block.rfind(b"\n")
                if i >= 0:
                    cut = start + i + 1
                elif start == 0:
                    cut = 0
                elif size - start >= MAX_TORN_BYTES:
                    raise SpecsimError(f"{p} does not end in a record: no line end in its last "
                                       f"{MAX_TORN_BYTES >> 20} MiB")
                else:
                    start = max(0, start - (1 << 20))
            f.seek(cut)
            tail = f.read()
            n = 1
            while (side := p.with_name(f"{p.name}.torn-{n}")).exists():
                n += 1
            side.write_bytes(tail)
            f.truncate(cut)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise SpecsimError(os_error_message(exc, "cannot repair")) from None
    return len(tail), side


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


def _stamp(p: Path) -> list[int] | None:
    """(size, mtime_ns) of a regular file, else None."""
    try:
        st = p.lstat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns] if p.is_file() and not p.is_symlink() else None


def read_manifest(folder: Path) -> dict[str, list[int]]:
    """The files specsim recorded writing into `folder` (empty when there is no usable record)."""
    try:
        doc = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        files = doc.get("files", {}) if isinstance(doc, dict) else {}
        return {str(k): [int(x) for x in v] for k, v in files.items() if isinstance(v, list) and len(v) == 2}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}


def _ours(folder: Path, name: str, manifest: dict[str, list[int]]) -> bool:
    """True when specsim wrote `name` in `folder` and nobody changed it since."""
    return name in manifest and _stamp(folder / name) == manifest[name]


def foreign_entries(folder: Path) -> list[str]:
    """Entries of an output folder that specsim did not write (staging folders, its record, the files it
    recorded unchanged and sub-folders holding a record of their own are its own)."""
    manifest = read_manifest(folder)
    out = []
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    for e in entries:
        n = e.name
        if n == MANIFEST or STAGING_PREFIX in n or (n.startswith(".") and n.endswith(".tmp")):
            continue
        if _ours(folder, n, manifest) or (e.is_dir() and not e.is_symlink() and (e / MANIFEST).is_file()):
            continue
        out.append(n)
    return out


def check_output_folder(path: str | os.PathLike[str], force: bool, what: str = "output folder") -> Path:
    """`check_output_dir`, and refuse (unless `force`) a folder holding files specsim did not write."""
    p = check_output_dir(path, what)
    if p.is_dir() and not force:
        foreign = foreign_entries(p)
        if foreign:
            shown = ", ".join(foreign[:4]) + (f" and {len(foreign) - 4} more" if len(foreign) > 4 else "")
            raise SpecsimError(f"{what} {p} holds files specsim did not write ({shown}): choose a new or empty "
                               "folder, or pass --force to write beside them")
    return p


class OutputSet:
    """The files one run writes into one folder, staged and then moved into place together.

    `names` lists every file the command can write into the folder. With `own_folder` (a command's
    `--out` folder) the folder must be new, empty or hold only what specsim wrote there (else refused
    unless `force`); at commit, a file of `names` this run did not write is removed when specsim wrote
    it (it belongs to an earlier run's set) and left alone otherwise, and the folder's record
    (MANIFEST) is updated. Without `own_folder` (files beside others, e.g. a profile and its plot)
    nothing is ever removed and no record is kept.
    """

    def __init__(self, folder: str | os.PathLike[str], names: Iterable[str], force: bool = False,
                 own_folder: bool = True) -> None:
        self.folder = Path(folder)
        self.names = tuple(names)
        self.own = own_folder
        self._created: list[Path] = []
        self._committed = False
        if own_folder:
            check_output_folder(self.folder, force)
        else:
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

    def _write_manifest(self, where: Path, manifest: dict[str, list[int]]) -> None:
        doc = {"schema": "specsim.outputs", "version": 1, "files": dict(sorted(manifest.items()))}
        tmp = where / f".{MANIFEST}.{secrets.token_hex(4)}.tmp"
        tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, where / MANIFEST)

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
                    if self.own:  # the stamps survive the rename of the folder
                        self._write_manifest(self.staging, {n: _stamp(self.staging / n) or [0, 0] for n in written})
                    os.rename(self.staging, self.folder)
                else:
                    self.folder.mkdir(parents=True, exist_ok=True)
                    manifest = read_manifest(self.folder) if self.own else {}
                    for n in self.names:
                        src, dst = self.staging / n, self.folder / n
                        if src.exists():
                            os.replace(src, dst)
                            manifest[n] = _stamp(dst) or [0, 0]
                        elif self.own and _ours(self.folder, n, manifest):
                            dst.unlink()  # specsim's own file of an earlier run's set
                            manifest.pop(n, None)
                    if self.own:
                        manifest = {n: v for n, v in manifest.items() if _ours(self.folder, n, manifest)}
                        self._write_manifest(self.folder, manifest)
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
def output_set(folder: str | os.PathLike[str], names: Iterable[str], force: bool = False,
               own_folder: bool = True, inputs: Iterable[str | os.PathLike[str] | None] = ()) -> Iterator[OutputSet]:
    """Stage a run's files (`out.path(name)`) and move them into `folder` together when the block
    succeeds; on an error or an interruption nothing in `folder` changes and no staging is left.
    See `OutputSet` for `force` and `own_folder`; none of the files may be one of `inputs`."""
    names = tuple(names)
    inputs = tuple(inputs)
    for n in names:
        refuse_input_as_output(Path(folder) / n, inputs)
    out = OutputSet(folder, names, force, own_folder)
    try:
        yield out
        out.commit()
    finally:
        out.discard()


__all__ = [
    "MANIFEST", "OutputSet", "Terminated", "add_force_arg", "atomic_path", "atomic_write_text", "check_output_dir",
    "check_output_folder", "set_aside_torn_tail",
    "check_output_file", "foreign_entries", "os_error_message", "output_path", "output_set", "raise_on_signals",
    "refuse_input_as_output", "signals_deferred",
]
