"""Importer for the Azure LLM inference trace CSVs (`TIMESTAMP,ContextTokens,GeneratedTokens`), 2023 and 2024.

Timestamps are wall-clock strings: `2023-11-16 18:17:03.9799600` in the 2023 one-hour traces (7
fractional digits, 100 ns ticks, no time zone), `2024-05-10 00:00:00.009930+00:00` in the 2024
week-long traces (up to 6 digits, a UTC offset; a row may lack the fraction). They are parsed in
vectorised calls to numpy `datetime64[ns]`, which is exact for up to 9 fractional digits; a UTC
offset is subtracted (times without one are taken as UTC), and times are made relative to the
first request in integer nanoseconds before the single conversion to float seconds. The file is
read as a stream in chunks of CHUNK_ROWS rows, so a week-long trace (millions of rows, gigabytes)
never sits in memory as text: parsing 500,000 rows peaks near 280 MB of memory.

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
from specsim.formats._common import iter_text_lines
from specsim.formats.traffic import MAX_REQUEST_TOKENS, Traffic

COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
_TS_RE = re.compile(r"^(\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?)(Z|[+-]\d{2}:?\d{2})?$")
_INT_RE = re.compile(r"^[+-]?\d+$")
YEARS = (1678, 2261)
"""Years a timestamp may have: numpy's nanosecond clock wraps silently outside 1677-09-21..2262-04-11."""
CHUNK_ROWS = 1 << 18
"""Rows parsed per vectorised chunk."""


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
    m = _TS_RE.match(ts)
    if not m:
        return f"bad TIMESTAMP {ts!r} (expected 'YYYY-MM-DD HH:MM:SS.fffffff', optionally with a UTC offset)"
    if not YEARS[0] <= int(ts[:4]) <= YEARS[1]:
        return f"TIMESTAMP {ts!r} lies outside the years {YEARS[0]}-{YEARS[1]} specsim reads"
    try:
        np.datetime64(m.group(1).replace(" ", "T"), "ns")
        _offset_minutes(m.group(2))
    except ValueError:
        return f"bad TIMESTAMP {ts!r} (not a valid date/time)"
    for name, c in (("ContextTokens", cols[1]), ("GeneratedTokens", cols[2])):
        v = fields[c].strip()
        if not _INT_RE.match(v):
            return f"{name} must be an integer, got {v!r}"
        if int(v) < 0:
            return f"{name} must be >= 0, got {v}"
        if int(v) > MAX_REQUEST_TOKENS:
            return f"{name} {v} is above the {MAX_REQUEST_TOKENS:,} tokens specsim accepts"
    return None


def _offset_minutes(off: str | None) -> int:
    """Minutes east of UTC of a `Z`, `+HH:MM` or `-HHMM` suffix (None: UTC)."""
    if not off or off == "Z":
        return 0
    hh, mm = int(off[1:3]), int(off[-2:])
    if hh > 23 or mm > 59:
        raise ValueError(off)
    return (1 if off[0] == "+" else -1) * (hh * 60 + mm)


def _locate_error(chunk: list[tuple[int, str]], ncols: int, cols: tuple[int, int, int], path: Path) -> SpecsimError:
    """Scan rows one by one (slow path, only after the fast path failed) to name the bad line."""
    for lineno, line in chunk:
        why = _bad_row(line.split(","), ncols, cols)
        if why is not None:
            return SpecsimError(f"azure trace {path} line {lineno}: {why}")
    return SpecsimError(f"azure trace {path}: could not parse the rows")


def _parse_chunk(chunk: list[tuple[int, str]], ncols: int, cols: tuple[int, int, int], path: Path
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """UTC nanoseconds, input and output counts of one chunk of rows, and its timestamp strings."""
    rows = [ln.split(",") for _, ln in chunk]
    if any(len(r) != ncols for r in rows):
        raise _locate_error(chunk, ncols, cols, path)
    ts_str = [r[cols[0]].strip() for r in rows]
    try:
        if all(s.endswith("+00:00") for s in ts_str):  # the 2024 traces: one offset, stripped in bulk
            base, offsets = [s[:-6] for s in ts_str], None
        else:
            base, offsets = ts_str, None
        matches = [_TS_RE.match(s) for s in base]
        if not all(matches) or any(not YEARS[0] <= int(s[:4]) <= YEARS[1] for s in base):
            raise ValueError
        if any(m.group(2) for m in matches):  # other offsets: per row
            offsets = np.array([_offset_minutes(m.group(2)) for m in matches], dtype=np.int64)
            base = [m.group(1) for m in matches]
        ns = np.array(base, dtype="datetime64[ns]").astype(np.int64)
        if offsets is not None:
            ns -= offsets * 60_000_000_000
        inp = np.array([r[cols[1]] for r in rows]).astype(np.int64)
        out = np.array([r[cols[2]] for r in rows]).astype(np.int64)
    except (ValueError, OverflowError):
        raise _locate_error(chunk, ncols, cols, path) from None
    if inp.min() < 0 or out.min() < 0 or max(inp.max(), out.max()) > MAX_REQUEST_TOKENS:
        raise _locate_error(chunk, ncols, cols, path)
    return ns, inp, out, ts_str


def import_azure(
    path: str | Path,
    category: str | None = "",
    limit: int | None = None,
) -> Traffic:
    """Read an Azure LLM inference CSV (2023 or 2024) into a Traffic relative to its first request.

    `category=""` (the default) derives the category from the file name; None leaves it unset.
    `limit` keeps the first N data rows of the file (and reads no further).
    """
    p = Path(path)
    if limit is not None and limit < 1:
        raise SpecsimError(f"--limit must be >= 1, got {limit}")
    lines = iter_text_lines(p, "azure trace")
    try:
        first = next(lines, None)
        if first is None:
            raise SpecsimError(f"azure trace {p} is empty")
        cols = _header_index(first[1], p)
        ncols = len(first[1].split(","))
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        first_ts: list[str] = []
        chunk: list[tuple[int, str]] = []
        n = 0
        for lineno, line in lines:
            if not line.strip():  # blank lines carry no request; a trailing newline is common
                continue
            chunk.append((lineno, line))
            n += 1
            if len(chunk) >= CHUNK_ROWS or n == limit:
                ns, inp, out, ts = _parse_chunk(chunk, ncols, cols, p)
                parts.append((ns, inp, out))
                first_ts = first_ts or ts
                chunk = []
            if n == limit:
                break
        if chunk:
            ns, inp, out, ts = _parse_chunk(chunk, ncols, cols, p)
            parts.append((ns, inp, out))
            first_ts = first_ts or ts
    finally:
        lines.close()
    if not n:
        raise SpecsimError(f"azure trace {p} holds no requests")
    ns = np.concatenate([x[0] for x in parts])
    inp = np.concatenate([x[1] for x in parts])
    out = np.concatenate([x[2] for x in parts])
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
    first_row = int(order[0])
    start = first_ts[first_row] if first_row < len(first_ts) else None
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
