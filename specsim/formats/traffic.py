"""The traffic-trace contract: JSONL, one request a line (Mooncake/Bailian style), seconds since start.

An optional first line `{"schema": "specsim.traffic", "version": 1, ...}` carries the version and
free-form metadata; files without it are read as version 1 so third-party traces load unchanged.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from specsim.errors import SpecsimError
from specsim.formats._common import check_version, parse_json, read_text, text_lines
from specsim.io import atomic_path

SCHEMA = "specsim.traffic"
VERSIONS = (1,)
_REQUIRED = ("timestamp", "input_length", "output_length")

TIME_UNITS = {"s": 1.0, "ms": 1e-3}
"""Units a trace's numeric timestamps may be given in (`--time-unit`), as seconds per unit."""
MS_SUSPECT_SPAN_S = 3600.0
MS_SUSPECT_RATE = 0.01
"""Timestamps read as seconds that span at least an hour (MS_SUSPECT_SPAN_S) at a mean rate below
one request per 100 s (MS_SUSPECT_RATE req/s) look like milliseconds: read as milliseconds they are
a trace of 3.6 s or more at under 10 req/s, an ordinary serving trace, while as seconds they would
be fewer than 36 requests an hour. Such a trace is refused unless its unit is given (`--time-unit`).
A millisecond trace above 10 req/s reads as seconds at over 0.01 req/s, as real sparse traces do
(BurstGPT: 0.13 req/s over 121 days), and cannot be told apart: give its unit."""


def looks_like_ms(timestamps: np.ndarray) -> bool:
    """True when timestamps read as seconds span at least an hour at under 0.01 req/s (MS_SUSPECT_*)."""
    ts = np.asarray(timestamps, dtype=np.float64)
    if len(ts) < 2:
        return False
    span = float(ts.max() - ts.min())
    return span >= MS_SUSPECT_SPAN_S and (len(ts) - 1) / span < MS_SUSPECT_RATE


S_SUSPECT_RATE = 1000.0
"""Timestamps read as milliseconds (a format whose unit is ms, such as Mooncake's) at a mean rate above
this many req/s look like seconds, whole or fractional: a seconds trace at 1 to 10 req/s read as
milliseconds runs at 1,000 to 10,000 req/s."""
S_SUSPECT_RATE_FRACTIONAL = 100.0
"""The same for timestamps with fractions (milliseconds in these formats are whole numbers): a
seconds trace at 0.1 req/s or more read as milliseconds runs above this rate."""


def looks_like_s(timestamps_ms: np.ndarray) -> bool:
    """True when timestamps read as milliseconds run above S_SUSPECT_RATE req/s, or above
    S_SUSPECT_RATE_FRACTIONAL with fractional values: too fast for one trace's mean, so ambiguous."""
    ts = np.asarray(timestamps_ms, dtype=np.float64)
    if len(ts) < 3:
        return False
    span = float(ts.max() - ts.min()) / 1e3
    if span == 0:
        return True
    fractional = bool(np.any(ts != np.floor(ts)))
    rate = (len(ts) - 1) / span
    return rate > S_SUSPECT_RATE or (fractional and rate > S_SUSPECT_RATE_FRACTIONAL)


def to_seconds(timestamps: Any, time_unit: str | None, where: str, default: str = "s") -> np.ndarray:
    """Numeric timestamps in seconds: the one place every trace loader and importer converts units.

    `time_unit` "s" or "ms" is what the user said and is trusted. None means the format's `default`
    unit, checked: seconds that look like milliseconds (`looks_like_ms`), or milliseconds that look
    like seconds (`looks_like_s`), are refused with a one-line error naming the fix, never rescaled
    silently. `where` names the trace in that error."""
    ts = np.asarray(timestamps, dtype=np.float64)
    if time_unit is not None and time_unit not in TIME_UNITS:
        raise SpecsimError(f"unknown time unit {time_unit!r} (use s or ms)")
    if time_unit is None and default == "ms":
        if looks_like_s(ts):
            span = float(ts.max() - ts.min()) / 1e3
            kind = "fractional values" if np.any(ts != np.floor(ts)) else "whole numbers"
            raise SpecsimError(
                f"{where}: timestamps look like seconds read as milliseconds ({len(ts):,} requests in "
                f"{span:,.3f} s, {kind}); pass --time-unit s (or --time-unit ms if they really are ms)"
            )
        return ts / 1000.0  # division: 2518 ms is exactly float("2.518")
    if time_unit is None and looks_like_ms(ts):
        span = float(ts.max() - ts.min())
        rate = (len(ts) - 1) / span
        long = f"{span / 86400:,.1f} days" if span >= 2 * 86400 else f"{span / 3600:,.1f} hours"
        raise SpecsimError(
            f"{where}: timestamps look like milliseconds read as seconds ({len(ts):,} requests over {span:,.0f} s "
            f"= {long}, {rate:.4f} req/s); pass --time-unit ms (or --time-unit s if they really are seconds)"
        )
    return ts / 1000.0 if time_unit == "ms" else ts


def add_time_unit_arg(parser: Any, flag: str = "--time-unit") -> None:
    """The `--time-unit s|ms` option of every command that reads a trace's numeric timestamps."""
    parser.add_argument(
        flag, choices=tuple(TIME_UNITS), default=None, dest="time_unit",
        help="unit of the trace's timestamps (default: seconds, refusing a trace that looks like "
             "milliseconds; give s to accept it as seconds)")


MAX_REQUEST_TOKENS = 1 << 30
"""Most tokens in one request's prompt or output (1,073,741,824): a hundred times the longest context of any
model served today, and small enough that no sum of lengths overflows a 64-bit count."""


@dataclass(frozen=True)
class Traffic:
    """A request trace held as column arrays (fast to slice, scale and replay)."""

    timestamps: np.ndarray
    """Arrival time of each request in seconds, non-decreasing (float64)."""
    input_lengths: np.ndarray
    """Prompt length in tokens, >= 1 (int64)."""
    output_lengths: np.ndarray
    """Number of output tokens to generate, >= 1 (int64)."""
    categories: tuple[str | None, ...]
    """Optional workload category per request (matched against acceptance traces)."""
    request_ids: tuple[str, ...]
    """Stable identifier per request."""
    metadata: dict[str, Any] = field(default_factory=dict)
    """Free-form provenance (source file, generator parameters)."""
    prompt_ids: tuple[str | None, ...] | None = None
    """Optional prompt per request: the profile's acceptance trace with this `prompt_id` is replayed
    for it (exact per-request acceptance), and a load generator sends that prompt's text."""
    conversation_ids: tuple[str | None, ...] | None = None
    """Optional conversation per request: each turn's prompt repeats the conversation so far (the
    earlier prompts and answers), which prefix caching reuses."""
    turns: tuple[int | None, ...] | None = None
    """Optional turn index of each request in its conversation (0-based)."""
    hash_ids: tuple[tuple[int, ...] | None, ...] | None = None
    """Optional chained hashes of each prompt's blocks of `metadata["hash_block_size"]` tokens
    (Mooncake / Bailian traces): equal prefixes have equal leading hashes."""

    def __post_init__(self) -> None:
        n = len(self.timestamps)
        if not (len(self.input_lengths) == len(self.output_lengths) == len(self.categories) == n):
            raise SpecsimError("traffic columns have different lengths")
        if len(self.request_ids) != n:
            raise SpecsimError("traffic request_ids length differs from the trace")
        for name in ("prompt_ids", "conversation_ids", "turns", "hash_ids"):
            col = getattr(self, name)
            if col is not None and len(col) != n:
                raise SpecsimError(f"traffic {name} length differs from the trace")

    def __len__(self) -> int:
        return len(self.timestamps)

    @classmethod
    def from_arrays(
        cls,
        timestamps: Any,
        input_lengths: Any,
        output_lengths: Any,
        categories: Any = None,
        request_ids: Any = None,
        metadata: dict[str, Any] | None = None,
        prompt_ids: Any = None,
        conversation_ids: Any = None,
        turns: Any = None,
        hash_ids: Any = None,
    ) -> Traffic:
        """Build and validate a trace from array-likes; request ids default to their index."""
        try:
            ts = np.asarray(timestamps, dtype=np.float64)
            inp = np.asarray(input_lengths, dtype=np.int64)
            out = np.asarray(output_lengths, dtype=np.int64)
        except (OverflowError, ValueError, TypeError):
            raise SpecsimError(f"traffic lengths must be integers in 1..{MAX_REQUEST_TOKENS} "
                               f"(timestamps finite numbers)") from None
        n = len(ts)
        cats = tuple(categories) if categories is not None else (None,) * n
        ids = tuple(str(x) for x in (request_ids if request_ids is not None else range(n)))
        pids = tuple(None if x is None else str(x) for x in prompt_ids) if prompt_ids is not None else None
        if pids is not None and all(x is None for x in pids):
            pids = None
        convs = None
        if conversation_ids is not None and any(c is not None for c in conversation_ids):
            convs = tuple(None if c is None else str(c) for c in conversation_ids)
        trn = None
        if turns is not None and any(t is not None for t in turns):
            trn = tuple(None if t is None else int(t) for t in turns)
        hsh = None
        if hash_ids is not None and any(h for h in hash_ids):
            hsh = tuple(None if not h else tuple(int(x) for x in h) for h in hash_ids)
        tr = cls(ts, inp, out, cats, ids, dict(metadata or {}), pids, convs, trn, hsh)
        tr.validate()
        return tr

    def validate(self) -> None:
        """Raise SpecsimError if any value breaks the contract."""
        ts = self.timestamps
        if len(ts) and not np.all(np.isfinite(ts)):
            raise SpecsimError("traffic has a non-finite timestamp")
        if len(ts) and ts.min() < 0:
            raise SpecsimError("traffic has a negative timestamp")
        if len(ts) > 1:
            back = np.nonzero(np.diff(ts) < 0)[0]
            if len(back):
                raise SpecsimError(f"traffic timestamps go backwards at request {int(back[0]) + 1}")
        for name, arr in (("input_length", self.input_lengths), ("output_length", self.output_lengths)):
            if len(arr) and arr.min() < 1:
                i = int(np.argmin(arr))
                raise SpecsimError(f"traffic request {i}: {name} must be >= 1, got {int(arr[i])}")
            if len(arr) and arr.max() > MAX_REQUEST_TOKENS:
                i = int(np.argmax(arr))
                raise SpecsimError(f"traffic request {i}: {name} {int(arr[i])} is above the {MAX_REQUEST_TOKENS:,} "
                                   "tokens specsim accepts (MAX_REQUEST_TOKENS)")

    @property
    def duration(self) -> float:
        """Seconds between the first and last arrival."""
        return float(self.timestamps[-1] - self.timestamps[0]) if len(self) > 1 else 0.0

    @property
    def rate(self) -> float:
        """Mean arrival rate in requests per second (0 for fewer than two requests)."""
        return (len(self) - 1) / self.duration if self.duration > 0 else 0.0

    def head(self, n: int) -> Traffic:
        """The first `n` requests."""
        return self.select(np.arange(min(n, len(self))))

    def select(self, idx: np.ndarray) -> Traffic:
        """The requests at the given (sorted) indices."""

        def pick(col: tuple[Any, ...] | None) -> tuple[Any, ...] | None:
            return tuple(col[i] for i in idx) if col is not None else None

        return Traffic(
            self.timestamps[idx],
            self.input_lengths[idx],
            self.output_lengths[idx],
            tuple(self.categories[i] for i in idx),
            tuple(self.request_ids[i] for i in idx),
            dict(self.metadata),
            pick(self.prompt_ids), pick(self.conversation_ids), pick(self.turns), pick(self.hash_ids),
        )

    def rate_scaled(self, scale: float) -> Traffic:
        """Compress (scale > 1) or stretch time so the arrival rate is multiplied by `scale`."""
        if not (scale > 0 and math.isfinite(scale)):
            raise SpecsimError(f"rate scale must be a positive number, got {scale}")
        t0 = self.timestamps[0] if len(self) else 0.0
        with np.errstate(over="ignore"):
            ts = t0 + (self.timestamps - t0) / scale
        if len(ts) and not np.isfinite(ts[-1]):
            raise SpecsimError(f"rate scale {scale:g} stretches the trace's arrival times past what a float holds")
        meta = dict(self.metadata, rate_scale=scale * float(self.metadata.get("rate_scale", 1.0)))
        return Traffic(ts, self.input_lengths, self.output_lengths, self.categories, self.request_ids, meta,
                       self.prompt_ids, self.conversation_ids, self.turns, self.hash_ids)

    def digest(self) -> str:
        """Content hash of the requests (for policy provenance)."""
        h = hashlib.sha256()
        for arr in (self.timestamps, self.input_lengths, self.output_lengths):
            h.update(np.ascontiguousarray(arr).tobytes())
        h.update("\x1f".join(c or "" for c in self.categories).encode())
        if self.prompt_ids is not None:  # traces without prompt ids keep their old digest
            h.update(b"\x1eprompt_ids\x1e" + "\x1f".join(x or "" for x in self.prompt_ids).encode())
        if self.conversation_ids is not None:
            h.update(b"\x1econversations\x1e" + "\x1f".join(x or "" for x in self.conversation_ids).encode())
            h.update("\x1f".join("" if t is None else str(t) for t in self.turns or ()).encode())
        if self.hash_ids is not None:
            h.update(b"\x1ehash_ids\x1e" + "\x1f".join(",".join(map(str, x or ())) for x in self.hash_ids).encode())
        return h.hexdigest()


def load_traffic(path: str | Path, time_unit: str | None = None) -> Traffic:
    """Read and validate a JSONL traffic trace; every defect is a one-line SpecsimError.

    `time_unit` ("s", "ms" or None) is the unit of a third-party trace's timestamps (`to_seconds`;
    None: seconds, refused if they look like milliseconds). A trace with a specsim header line was
    written by specsim in seconds: it is never rescaled or refused, and "ms" is an error.

    Example (also `specsim.load_traffic`; traces come from `specsim traffic import` or `traffic synth`):
        >>> traffic = load_traffic("T.jsonl")
        >>> len(traffic), traffic.rate
    """
    if time_unit is not None and time_unit not in TIME_UNITS:
        raise SpecsimError(f"unknown time unit {time_unit!r} (use s or ms)")
    p = Path(path)
    text = read_text(p, "traffic")
    ts: list[float] = []
    inp: list[int] = []
    out: list[int] = []
    cats: list[str | None] = []
    ids: list[str] = []
    pids: list[str | None] = []
    convs: list[str | None] = []
    turns: list[int | None] = []
    hashes: list[tuple[int, ...] | None] = []
    meta: dict[str, Any] = {}
    first = True
    headed = False
    for lineno, line in enumerate(text_lines(text), start=1):
        if not line.strip():
            continue
        obj = parse_json(line, f"traffic {p}", line=lineno)
        if not isinstance(obj, dict):
            raise SpecsimError(f"traffic {p} line {lineno}: expected a JSON object")
        if first and "schema" in obj:
            check_version(obj, "traffic", f"{p} line {lineno}", SCHEMA, VERSIONS)
            meta = {k: v for k, v in obj.items() if k not in ("schema", "version")}
            first = False
            headed = True
            continue
        first = False
        ts.append(_number(obj, "timestamp", p, lineno))
        inp.append(_count(obj, "input_length", p, lineno))
        out.append(_count(obj, "output_length", p, lineno))
        cat = obj.get("category")
        if cat is not None and not isinstance(cat, str):
            raise SpecsimError(f"traffic {p} line {lineno}: category must be a string")
        cats.append(cat)
        pid = obj.get("prompt_id")
        if pid is not None and not isinstance(pid, str):
            raise SpecsimError(f"traffic {p} line {lineno}: prompt_id must be a string")
        pids.append(pid)
        conv = obj.get("conversation_id")
        if conv is not None and (not isinstance(conv, (str, int)) or isinstance(conv, bool)):
            raise SpecsimError(f"traffic {p} line {lineno}: conversation_id must be a string or integer")
        convs.append(None if conv is None else str(conv))
        turn = obj.get("turn")
        if turn is not None and (not isinstance(turn, int) or isinstance(turn, bool) or turn < 0):
            raise SpecsimError(f"traffic {p} line {lineno}: turn must be an integer >= 0")
        turns.append(turn)
        hid = obj.get("hash_ids")
        if hid is not None and (not isinstance(hid, list) or any(
                not isinstance(x, int) or isinstance(x, bool) for x in hid)):
            raise SpecsimError(f"traffic {p} line {lineno}: hash_ids must be a list of integers")
        hashes.append(tuple(hid) if hid else None)
        rid = obj.get("request_id", len(ids))
        if not isinstance(rid, (str, int)) or isinstance(rid, bool):
            raise SpecsimError(f"traffic {p} line {lineno}: request_id must be a string or integer")
        ids.append(str(rid))
        if len(ts) > 1 and ts[-1] < ts[-2]:
            raise SpecsimError(
                f"traffic {p} line {lineno}: timestamp {ts[-1]} goes backwards (previous {ts[-2]})"
            )
    if not ts:
        raise SpecsimError(f"traffic {p} holds no requests")
    if headed:
        if time_unit == "ms":
            raise SpecsimError(f"traffic {p} is a specsim trace, whose timestamps are seconds by contract; "
                               f"drop --time-unit ms")
    else:
        ts = to_seconds(ts, time_unit, f"traffic {p}").tolist()
        if time_unit == "ms":
            meta["time_unit"] = "ms"
    meta.setdefault("source", str(p))
    if any(hashes) and not meta.get("hash_block_size"):
        meta["hash_block_size"] = 512  # Mooncake's
    return Traffic.from_arrays(ts, inp, out, cats, ids, meta, prompt_ids=pids, conversation_ids=convs, turns=turns,
                               hash_ids=hashes)


def _number(obj: dict[str, Any], key: str, p: Path, lineno: int) -> float:
    if key not in obj:
        raise SpecsimError(f"traffic {p} line {lineno}: missing '{key}'")
    v = obj[key]
    try:
        fv = float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan
    except OverflowError:  # an int beyond float range
        fv = math.inf
    if not math.isfinite(fv) or fv < 0:
        raise SpecsimError(f"traffic {p} line {lineno}: '{key}' must be a finite number >= 0, got {v!r}")
    return fv


def _count(obj: dict[str, Any], key: str, p: Path, lineno: int) -> int:
    if key not in obj:
        raise SpecsimError(f"traffic {p} line {lineno}: missing '{key}'")
    v = obj[key]
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1 or v > MAX_REQUEST_TOKENS:
        raise SpecsimError(f"traffic {p} line {lineno}: '{key}' must be an integer in 1..{MAX_REQUEST_TOKENS} "
                           f"(MAX_REQUEST_TOKENS), got {v!r}")
    return v


def save_traffic(traffic: Traffic, path: str | Path) -> None:
    """Write a trace as JSONL with a version header line, atomically."""
    traffic.validate()
    header = {"schema": SCHEMA, "version": VERSIONS[-1], **traffic.metadata}
    lines = [json.dumps(header, default=str)]
    for i in range(len(traffic)):
        rec: dict[str, Any] = {
            "timestamp": round(float(traffic.timestamps[i]), 6),
            "input_length": int(traffic.input_lengths[i]),
            "output_length": int(traffic.output_lengths[i]),
            "request_id": traffic.request_ids[i],
        }
        if traffic.categories[i] is not None:
            rec["category"] = traffic.categories[i]
        if traffic.prompt_ids is not None and traffic.prompt_ids[i] is not None:
            rec["prompt_id"] = traffic.prompt_ids[i]
        if traffic.conversation_ids is not None and traffic.conversation_ids[i] is not None:
            rec["conversation_id"] = traffic.conversation_ids[i]
        if traffic.turns is not None and traffic.turns[i] is not None:
            rec["turn"] = traffic.turns[i]
        hashes = traffic.hash_ids[i] if traffic.hash_ids is not None else None
        if hashes:
            rec["hash_ids"] = list(hashes)
        lines.append(json.dumps(rec))
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
