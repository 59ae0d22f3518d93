"""Importer for BurstGPT CSV traces (`Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type`).

BurstGPT (Wang et al., 2024) logs Azure OpenAI GPT requests of a university campus: `Timestamp` is
seconds since the trace's start (integers in release v1.x), `Model` is `ChatGPT` or `GPT-4`, `Log Type`
is `Conversation log` or `API log`. Later files add `Session ID` and `Elapsed time`; only the columns
above are read (`Total tokens` is not used).

- A row with `Response tokens` 0 is a failed request (almost all of them also have `Request tokens`
  0): it is dropped and counted (`dropped_failed`). A kept row with `Request tokens` 0 is clamped to 1
  and counted (`clamped_input`).
- `Timestamp` goes through `specsim.formats.traffic.to_seconds` (seconds by default, `--time-unit`),
  then is made relative to the first kept request; rows out of time order are stably sorted and
  counted (`reordered`).
- Category: `Conversation log` -> `conv`, `API log` -> `api` (any other log type: its first word,
  lower-cased), unless `--category` sets one for every request.
- `model` keeps only the rows of that model (case-insensitive).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np

from specsim.errors import SpecsimError
from specsim.formats._common import iter_text_lines
from specsim.formats.traffic import MAX_REQUEST_TOKENS, Traffic, to_seconds

COLUMNS = ("Timestamp", "Model", "Request tokens", "Response tokens", "Log Type")
LOG_CATEGORIES = {"conversation log": "conv", "api log": "api"}


def log_category(log_type: str) -> str | None:
    """The category a BurstGPT `Log Type` gives: conv, api, else its first word lower-cased."""
    key = log_type.strip().lower()
    return LOG_CATEGORIES.get(key) or (key.split()[0] if key else None)


def _int(v: str) -> int:
    v = v.strip()
    if v.endswith(".0"):  # a float column written by pandas
        v = v[:-2]
    if not v.lstrip("-").isdigit() or len(v) > 18:
        raise ValueError(v)
    return int(v)


def import_burstgpt(
    path: str | Path,
    category: str | None = "",
    limit: int | None = None,
    model: str | None = None,
    time_unit: str | None = None,
) -> Traffic:
    """Read a BurstGPT CSV into a Traffic relative to its first kept request.

    `category=""` (the default) takes the category from `Log Type`; None leaves it unset. `limit`
    keeps the first N kept requests (and reads no further); `model` keeps one model's rows."""
    p = Path(path)
    if limit is not None and limit < 1:
        raise SpecsimError(f"--limit must be >= 1, got {limit}")
    lines = iter_text_lines(p, "burstgpt trace")
    reader = csv.reader(line for _, line in lines)
    try:
        header = next(reader, None)
        if header is None:
            raise SpecsimError(f"burstgpt trace {p} is empty")
        names = [h.strip().lower() for h in header]
        idx = []
        for col in COLUMNS:
            if col.lower() not in names:
                raise SpecsimError(f"burstgpt trace {p} line 1: header lacks column {col!r} "
                                   f"(expected {','.join(COLUMNS)}, ...)")
            idx.append(names.index(col.lower()))
        c_ts, c_model, c_req, c_resp, c_log = idx
        need = max(idx) + 1
        want = model.strip().lower() if model else None
        ts: list[float] = []
        inp: list[int] = []
        out: list[int] = []
        cats: list[str | None] = []
        rows: list[int] = []
        models: dict[str, int] = {}
        dropped = other_model = clamped = 0
        row = -1
        for fields in reader:
            if not fields or not any(f.strip() for f in fields):
                continue
            row += 1
            where = f"burstgpt trace {p} line {reader.line_num}"
            if len(fields) < need:
                raise SpecsimError(f"{where}: expected at least {need} comma-separated fields, got {len(fields)}")
            name = fields[c_model].strip()
            if want is not None and name.lower() != want:
                other_model += 1
                continue
            try:
                t = float(fields[c_ts])
            except ValueError:
                raise SpecsimError(f"{where}: Timestamp must be a number, got {fields[c_ts].strip()!r}") from None
            if not (math.isfinite(t) and t >= 0):
                raise SpecsimError(f"{where}: Timestamp must be a finite number >= 0, got {fields[c_ts].strip()!r}")
            counts = []
            for label, c in (("Request tokens", c_req), ("Response tokens", c_resp)):
                try:
                    v = _int(fields[c])
                except ValueError:
                    raise SpecsimError(f"{where}: {label} must be an integer, got {fields[c].strip()!r}") from None
                if v < 0:
                    raise SpecsimError(f"{where}: {label} must be >= 0, got {v}")
                if v > MAX_REQUEST_TOKENS:
                    raise SpecsimError(f"{where}: {label} {v} is above the {MAX_REQUEST_TOKENS:,} tokens specsim "
                                       "accepts")
                counts.append(v)
            if counts[1] == 0:  # a failed request: nothing was generated
                dropped += 1
                continue
            if counts[0] == 0:
                clamped += 1
            ts.append(t)
            inp.append(max(counts[0], 1))
            out.append(counts[1])
            cats.append(log_category(fields[c_log]) if category == "" else category)
            rows.append(row)
            models[name] = models.get(name, 0) + 1
            if len(ts) == limit:
                break
    finally:
        lines.close()
    if not ts:
        what = f" of model {model!r}" if want is not None else ""
        raise SpecsimError(f"burstgpt trace {p} holds no successful requests{what} "
                           f"({dropped} failed rows with Response tokens 0 dropped)")
    raw = np.asarray(ts)
    order = np.argsort(raw, kind="stable")
    reordered = int(np.count_nonzero(order != np.arange(len(raw))))
    raw = raw[order]
    rel = to_seconds(raw - raw[0], time_unit, f"burstgpt trace {p}")
    start = float(to_seconds(raw[:1], time_unit or "s", "")[0])
    pick = order.tolist()
    meta: dict[str, Any] = {
        "source": "burstgpt",
        "source_file": p.name,
        "rows": len(ts),
        "dropped_failed": dropped,
        "clamped_input": clamped,
        "reordered": reordered,
        "models": dict(sorted(models.items())),
        "start_offset_s": start,
    }
    if want is not None:
        meta["model"] = model
        meta["other_model_rows"] = other_model
    if time_unit is not None:
        meta["time_unit"] = time_unit
    if limit is not None:
        meta["limit"] = limit
    return Traffic.from_arrays(rel, np.asarray(inp)[order], np.asarray(out)[order],
                               [cats[i] for i in pick], [f"burstgpt-{rows[i]}" for i in pick], meta)
