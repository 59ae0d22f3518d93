"""Importer for the Azure LLM inference trace CSV (`TIMESTAMP,ContextTokens,GeneratedTokens`).

Timestamps are wall-clock strings such as `2023-11-16 18:17:03.9799600` (7 fractional digits,
100 ns ticks). They are parsed in one vectorised call to numpy `datetime64[ns]`, which is exact
for up to 9 fractional digits, and made relative to the first request in integer nanoseconds
before the single conversion to float seconds.

Rows with ContextTokens or GeneratedTokens equal to 0 break the traffic contract (lengths >= 1);
the importer clamps them to 1 and counts them in the metadata (`clamped_input`,
`clamped_output`) so nothing is dropped silently. Negative or non-integer counts, bad timestamps
and rows with the wrong number of fields are malformed: a SpecsimError names the line. Rows whose
timestamps go backwards are stably sorted into arrival order and counted (`reordered`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from specsim.errors import SpecsimError
from specsim.formats.traffic import Traffic

COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
_TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d{1,9})?$")
_INT_RE = re.compile(r"^[+-]?\d+$")


def category_from_name(path: str | Path) -> str:
    """Workload category implied by a trace file name: 'code', 'conv', else the last '_' part."""
    stem = Path(path).stem.lower()
    for known in ("code", "conv"):
        if known in stem:
            return known
    return stem.rsplit("_", 1)[-1] or stem


def _header_index(header: str, path: Path) -> tuple[int, int, int]:
    names = [h.strip().strip('"').lower() for h in header.split(",")]
    idx = []
    for col in COLUMNS:
        if col.lower() not in names:
            raise SpecsimError(
                f"azure trace {path} line 1: header lacks column {col!r} (expected {','.join(COLUMNS)})"
            )
        idx.append(names.index(col.lower()))
    return idx[0], idx[1], idx[2]


def _bad_row(fields: list[str], ncols: int, cols: tuple[int, int, int]) -> str | None:
    """Why one split row is malformed, or None if it is well formed."""
    if len(fields) != ncols:
        return f"expected {ncols} comma-separated fields, got {len(fields)}"
    ts = fields[cols[0]].strip()
    if not _TS_RE.match(ts):
        return f"bad TIMESTAMP {ts!r} (expected 'YYYY-MM-DD HH:MM:SS.fffffff')"
    try:
        np.datetime64(ts.replace(" ", "T"), "ns")
    except ValueError:
        return f"bad TIMESTAMP {ts!r} (not a valid date/time)"
    for name, c in (("ContextTokens", cols[1]), ("GeneratedTokens", cols[2])):
        v = fields[c].strip()
        if not _INT_RE.match(v) or len(v) > 18:
            return f"{name} must be an integer, got {v!r}"
        if int(v) < 0:
            return f"{name} must be >= 0, got {v}"
    return None


def _locate_error(rows: list[list[str]], ncols: int, cols: tuple[int, int, int], path: Path) -> SpecsimError:
    """Scan rows one by one (slow path, only after the fast path failed) to name the bad line."""
    for i, fields in enumerate(rows):
        why = _bad_row(fields, ncols, cols)
        if why is not None:
            return SpecsimError(f"azure trace {path} line {i + 2}: {why}")
    return SpecsimError(f"azure trace {path}: could not parse the rows")


def import_azure(
    path: str | Path,
    category: str | None = "",
    limit: int | None = None,
) -> Traffic:
    """Read an Azure LLM inference CSV into a Traffic relative to its first request.

    `category=""` (the default) derives the category from the file name; None leaves it unset.
    `limit` keeps the first N data rows of the file.
    """
    from specsim.formats._common import read_text

    p = Path(path)
    if limit is not None and limit < 1:
        raise SpecsimError(f"--limit must be >= 1, got {limit}")
    text = read_text(p, "azure trace")
    lines = text.splitlines()
    if not lines:
        raise SpecsimError(f"azure trace {p} is empty")
    cols = _header_index(lines[0], p)
    ncols = len(lines[0].split(","))
    body = lines[1:]
    # blank lines carry no request; a trailing newline is common
    if any(not ln.strip() for ln in body):
        body = [ln for ln in body if ln.strip()]
    if limit is not None:
        body = body[:limit]
    if not body:
        raise SpecsimError(f"azure trace {p} holds no requests")

    rows = [ln.split(",") for ln in body]
    if any(len(r) != ncols for r in rows):
        raise _locate_error(rows, ncols, cols, p)
    ts_str = [r[cols[0]].strip() for r in rows]
    try:
        if any(not _TS_RE.match(s) for s in ts_str):
            raise ValueError
        ns = np.array(ts_str, dtype="datetime64[ns]").astype(np.int64)
        inp = np.array([r[cols[1]] for r in rows]).astype(np.int64)
        out = np.array([r[cols[2]] for r in rows]).astype(np.int64)
    except (ValueError, OverflowError):
        raise _locate_error(rows, ncols, cols, p) from None
    if inp.min() < 0 or out.min() < 0:
        raise _locate_error(rows, ncols, cols, p)

    n = len(rows)
    order = np.argsort(ns, kind="stable")
    reordered = int(np.count_nonzero(order != np.arange(n)))
    if reordered:
        ns, inp, out = ns[order], inp[order], out[order]
    rel = (ns - ns[0]).astype(np.float64) / 1e9
    clamped_input = int(np.count_nonzero(inp == 0))
    clamped_output = int(np.count_nonzero(out == 0))
    inp = np.maximum(inp, 1)
    out = np.maximum(out, 1)

    cat = category_from_name(p) if category == "" else category
    prefix = f"{cat}-" if cat else ""
    ids = [f"{prefix}{i}" for i in (order.tolist() if reordered else range(n))]
    start = ts_str[int(order[0])]
    meta: dict[str, Any] = {
        "source": "azure",
        "source_file": p.name,
        "start_time": start,
        "category": cat,
        "rows": n,
        "clamped_input": clamped_input,
        "clamped_output": clamped_output,
        "reordered": reordered,
    }
    if limit is not None:
        meta["limit"] = limit
    return Traffic.from_arrays(rel, inp, out, [cat] * n, ids, meta)
