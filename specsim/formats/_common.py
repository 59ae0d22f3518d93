"""Shared loading helpers for the contracts: JSON reading and one-line validation errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

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


def read_text(path: str | Path, what: str) -> str:
    """A UTF-8 text file's content (a leading byte-order mark is dropped); a missing file, a folder,
    unreadable bytes or a refused read become a one-line SpecsimError."""
    p = Path(path)
    if p.is_dir():
        raise SpecsimError(f"{what} {p} is a directory, not a file")
    if not p.exists():
        raise SpecsimError(f"{what} file not found: {p}")
    try:
        return p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecsimError(f"{what} {p} is not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    except OSError as exc:
        raise SpecsimError(f"cannot read {what} {p}: {exc.strerror or exc}") from None


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
    if isinstance(version, bool) or version not in supported:
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
    if p.is_dir():
        raise SpecsimError(f"{what} {p} is a directory, not a file")
    if not p.exists():
        raise SpecsimError(f"{what} file not found: {p}")
    lineno = 0
    try:
        with open(p, encoding="utf-8-sig", newline=None) as f:
            for lineno, line in enumerate(f, start=1):  # noqa: B007 - read after the loop on an error
                yield lineno, line.rstrip("\n")
    except UnicodeDecodeError as exc:
        raise SpecsimError(f"{what} {p} is not UTF-8 text: {exc.reason} near line {lineno + 1}") from None
    except OSError as exc:
        raise SpecsimError(f"cannot read {what} {p}: {exc.strerror or exc}") from None


class _Strict(BaseModel):
    """Base of every contract model: unknown keys are refused, fields also load by their alias."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
