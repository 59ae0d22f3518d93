"""Shared loading helpers for the contracts: JSON reading and one-line validation errors.

Every file specsim reads goes through `open_input`: it must be a regular file (a FIFO, a device such
as /dev/zero, a socket, a folder or a symlink loop is refused before a byte is read, so nothing can
block or stream forever), and no more than the input kind's byte limit (`MAX_INPUT_BYTES`) is read.
"""

from __future__ import annotations

import io
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from specsim.errors import SpecsimError


def parse_json(text: str, where: str, line: int | None = None) -> Any:
    """Parse JSON text; syntax errors, absurd nesting or huge literals become a one-line SpecsimError.

    `line`: the text is that one line of a JSONL file; errors then name the file line and the column.
    """
    at = f"{where} line {line}" if line is not None else where
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        pos = f"column {exc.colno}" if line is not None else f"line {exc.lineno} column {exc.colno}"
        raise SpecsimError(f"{at} is not valid JSON ({pos}: {exc.msg})") from None
    except RecursionError:
        raise SpecsimError(f"{at} is not usable JSON: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer literal longer than Python's digit limit
        raise SpecsimError(f"{at} is not usable JSON: {exc}") from None


GiB = 1 << 30
MAX_INPUT_BYTES: dict[str, int] = {
    "policy": 16 << 20,
    "profile": 2 * GiB,
    "traffic": 4 * GiB,
    "prompt": 1 * GiB,
    "requests file": 4 * GiB,
    "run summary": 64 << 20,
    "steps file": 4 * GiB,
    "vllm bench result": 4 * GiB,
    "sharegpt file": 8 * GiB,
    "journal storage": 16 * GiB,
    "checkpoint": 1 * GiB,
}
"""The most bytes specsim reads from one input of each kind (whole-file JSON is parsed in memory);
streamed traces (Azure, BurstGPT, Mooncake) may be up to DEFAULT_MAX_BYTES."""
DEFAULT_MAX_BYTES = 64 * GiB
MAX_LINE_BYTES = 64 << 20
"""The longest line a streamed input may hold (a trace's line is a few hundred bytes)."""
_KINDS = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a directory"}


def _size_text(n: int) -> str:
    return f"{n / GiB:.1f} GiB" if n >= GiB else f"{n / (1 << 20):.1f} MiB"


def open_input(path: str | Path, what: str, max_bytes: int | None = None) -> IO[bytes]:
    """Open a file specsim reads, in binary: refuse (one-line SpecsimError) anything but a regular file
    and a file larger than the kind's limit, without blocking on a FIFO or reading a device."""
    p = Path(path)
    limit = max_bytes if max_bytes is not None else MAX_INPUT_BYTES.get(what, DEFAULT_MAX_BYTES)
    try:
        # NOTE: O_NONBLOCK so that opening a FIFO returns at once instead of waiting for a writer
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise SpecsimError(f"{what} file not found: {p}") from None
    except IsADirectoryError:
        raise SpecsimError(f"{what} {p} is a directory, not a file") from None
    except OSError as exc:
        raise SpecsimError(f"cannot read {what} {p}: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        kind = stat.S_IFMT(st.st_mode)
        if kind != stat.S_IFREG:
            if kind == stat.S_IFDIR:
                raise SpecsimError(f"{what} {p} is a directory, not a file")
            raise SpecsimError(f"{what} {p} is {_KINDS.get(kind, 'not a regular file')}, not a regular file")
        if st.st_size > limit:
            raise SpecsimError(f"{what} {p} is {_size_text(st.st_size)}, more than the {_size_text(limit)} specsim "
                               f"reads from one {what}")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        raw = io.FileIO(fd, "r", closefd=True)
    except BaseException:
        os.close(fd)
        raise
    return _Bounded(raw, limit, what, p)


class _Bounded(io.BufferedReader):
    """A reader that stops with a one-line error once more than `limit` bytes were read (a file that
    grows while it is read)."""

    def __init__(self, raw: io.FileIO, limit: int, what: str, path: Path) -> None:
        super().__init__(raw)
        self._limit, self._what, self._path, self._seen = limit, what, path, 0

    def _count(self, data: bytes) -> bytes:
        self._seen += len(data)
        if self._seen > self._limit:
            raise SpecsimError(f"{self._what} {self._path} grew past the {_size_text(self._limit)} specsim reads "
                               f"from one {self._what} while it was read")
        return data

    def read(self, size: int | None = -1) -> bytes:
        return self._count(super().read(size))

    def read1(self, size: int = -1) -> bytes:
        return self._count(super().read1(size))

    def readline(self, size: int | None = -1) -> bytes:
        return self._count(super().readline(size))


def read_bytes(path: str | Path, what: str, max_bytes: int | None = None) -> bytes:
    """A whole input file's bytes (see `open_input`)."""
    with open_input(path, what, max_bytes) as f:
        return f.read()


def read_text(path: str | Path, what: str, max_bytes: int | None = None) -> str:
    """A UTF-8 text file's content (a leading byte-order mark is dropped); a missing file, a folder, a
    FIFO or device, a file over the kind's size limit, unreadable bytes or a refused read become a
    one-line SpecsimError."""
    p = Path(path)
    try:
        data = read_bytes(p, what, max_bytes)
    except OSError as exc:
        raise SpecsimError(f"cannot read {what} {p}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecsimError(f"{what} {p} is not UTF-8 text: {exc.reason} at byte {exc.start}") from None


def text_lines(text: str) -> list[str]:
    """Lines split at newlines only, as editors number them (str.splitlines also splits at form feeds,
    U+2028 and other separators that may sit inside a JSON string)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def read_json(path: str | Path, what: str) -> Any:
    """Parse a JSON file, turning every I/O or syntax problem into a one-line SpecsimError."""
    return parse_json(read_text(path, what), f"{what} {Path(path)}")


def validation_message(exc: ValidationError, what: str, where: str) -> str:
    """Summarise a pydantic ValidationError as one line naming the first bad field."""
    errs = exc.errors()
    first = errs[0]
    loc = ".".join(str(x) for x in first.get("loc", ())) or "(top level)"
    msg = first.get("msg", "invalid")
    more = f" (+{len(errs) - 1} more)" if len(errs) > 1 else ""
    return f"invalid {what} {where}: {loc}: {msg}{more}"


def check_version(data: Any, what: str, where: str, schema: str, supported: tuple[int, ...]) -> None:
    """Reject a document whose schema name or version this build does not understand."""
    if not isinstance(data, dict):
        raise SpecsimError(f"invalid {what} {where}: expected a JSON object")
    name = data.get("schema")
    if name is not None and name != schema:
        raise SpecsimError(f"invalid {what} {where}: schema is {name!r}, expected {schema!r}")
    version = data.get("version")
    if version is None:
        raise SpecsimError(f"invalid {what} {where}: missing 'version' (supported: {list(supported)})")
    if type(version) is not int or version not in supported:  # noqa: E721 - 1.0 and true are not versions
        raise SpecsimError(
            f"unsupported {what} schema version {version!r} in {where} (this specsim reads {list(supported)})"
        )


M = TypeVar("M", bound=BaseModel)


def load_document(path: str | Path, model: type[M], what: str, schema: str, versions: tuple[int, ...]) -> M:
    """Read, version-check and validate a JSON contract; every defect is a one-line SpecsimError."""
    data = read_json(path, what)
    check_version(data, what, str(path), schema, versions)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise SpecsimError(validation_message(exc, what, str(path))) from None


def iter_text_lines(path: str | Path, what: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its newline) of a UTF-8 text file read as a stream (a leading
    byte-order mark is dropped), for files too large to hold as one string; a missing file, a folder,
    unreadable bytes or a refused read become a one-line SpecsimError."""
    p = Path(path)
    lineno = 0
    try:
        with open_input(p, what) as raw, io.TextIOWrapper(raw, encoding="utf-8-sig", newline=None) as f:
            while True:
                line = f.readline(MAX_LINE_BYTES + 1)
                if not line:
                    break
                lineno += 1
                if len(line) > MAX_LINE_BYTES:
                    raise SpecsimError(f"{what} {p} line {lineno} is longer than {_size_text(MAX_LINE_BYTES)}: "
                                       "not a trace line")
                yield lineno, line.rstrip("\n")
    except UnicodeDecodeError as exc:
        raise SpecsimError(f"{what} {p} is not UTF-8 text: {exc.reason} near line {lineno + 1}") from None
    except OSError as exc:
        raise SpecsimError(f"cannot read {what} {p}: {exc.strerror or exc}") from None


class _Strict(BaseModel):
    """Base of every contract model: unknown keys are refused, fields also load by their alias."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
