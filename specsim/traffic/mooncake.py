"""Importer for Mooncake- and Bailian-style JSONL traces with prefix block hashes.

One JSON object a line: `timestamp`, `input_length`, `output_length` and `hash_ids`, the chained
hashes of the prompt's blocks of `hash_block_size` tokens (512 in Mooncake's FAST'25 traces): two
requests share a leading hash exactly where their prompts share a prefix. They are kept in the
traffic contract (`hash_ids`, `metadata.hash_block_size`), where the simulator's prefix cache reads
them.

- `timestamp` is milliseconds in Mooncake's traces, the default here; `--time-unit s` reads seconds
  (Bailian-style traces). Through `specsim.formats.traffic.to_seconds`: with the default, fractional
  timestamps above 1,000 req/s are refused as seconds read as milliseconds. Times are made relative to
  the first request; lines out of time order are stably sorted and counted (`reordered`).
- `output_length` 0 (or `input_length` 0) is clamped to 1 and counted (`clamped_output`, `clamped_input`).
- Category: `--category`, else the line's `category` or `type` field (Bailian: text, image, ...), else
  none. Request ids: the line's `request_id` or `chat_id`, else `mooncake-<line index>`.
- Other fields (`chat_id`, `parent_chat_id`, `turn`) are not used: the hashes already say which blocks
  are shared.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from specsim.errors import SpecsimError
from specsim.formats._common import iter_text_lines, parse_json
from specsim.formats.traffic import MAX_REQUEST_TOKENS, Traffic, to_seconds

DEFAULT_HASH_BLOCK_SIZE = 512
"""Tokens per hash block in Mooncake's traces."""


def _count(obj: dict[str, Any], key: str, where: str) -> int:
    if key not in obj:
        raise SpecsimError(f"{where}: missing '{key}'")
    v = obj[key]
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or v < 0 or v > MAX_REQUEST_TOKENS:
        raise SpecsimError(f"{where}: '{key}' must be an integer in 0..{MAX_REQUEST_TOKENS}, got {v!r}")
    return v


def import_mooncake(
    path: str | Path,
    category: str | None = "",
    limit: int | None = None,
    time_unit: str | None = None,
    hash_block_size: int | None = None,
) -> Traffic:
    """Read a Mooncake/Bailian JSONL trace into a Traffic relative to its first request.

    `category=""` (the default) takes each line's `category` or `type`; None leaves it unset. `limit`
    keeps the first N requests. `time_unit` None reads milliseconds (checked); `hash_block_size` None
    is Mooncake's 512."""
    p = Path(path)
    if limit is not None and limit < 1:
        raise SpecsimError(f"--limit must be >= 1, got {limit}")
    hbs = DEFAULT_HASH_BLOCK_SIZE if hash_block_size is None else hash_block_size
    if not 1 <= hbs <= 1 << 24:
        raise SpecsimError(f"--hash-block-size must lie in 1..{1 << 24} tokens, got {hbs}")
    ts: list[float] = []
    inp: list[int] = []
    out: list[int] = []
    cats: list[str | None] = []
    ids: list[str] = []
    hashes: list[tuple[int, ...] | None] = []
    clamped_in = clamped_out = 0
    lines = iter_text_lines(p, "mooncake trace")
    try:
        for lineno, line in lines:
            if not line.strip():
                continue
            where = f"mooncake trace {p} line {lineno}"
            obj = parse_json(line, f"mooncake trace {p}", line=lineno)
            if not isinstance(obj, dict):
                raise SpecsimError(f"{where}: expected a JSON object")
            if not ts and "schema" in obj:
                raise SpecsimError(f"{where}: this is a specsim traffic trace already; use it as it is")
            t = obj.get("timestamp")
            if "timestamp" not in obj:
                raise SpecsimError(f"{where}: missing 'timestamp'")
            try:
                ft = float(t) if isinstance(t, (int, float)) and not isinstance(t, bool) else math.nan
            except OverflowError:
                ft = math.inf
            if not (math.isfinite(ft) and ft >= 0):
                raise SpecsimError(f"{where}: 'timestamp' must be a finite number >= 0, got {t!r}")
            i, o = _count(obj, "input_length", where), _count(obj, "output_length", where)
            clamped_in += i == 0
            clamped_out += o == 0
            h = obj.get("hash_ids")
            if h is not None and (not isinstance(h, list) or any(
                    not isinstance(x, int) or isinstance(x, bool) or abs(x) >= 2**63 for x in h)):
                raise SpecsimError(f"{where}: 'hash_ids' must be a list of 64-bit integers")
            cat = obj.get("category", obj.get("type")) if category == "" else category
            if cat is not None and not isinstance(cat, str):
                cat = str(cat)
            rid = obj.get("request_id", obj.get("chat_id"))
            ts.append(ft)
            inp.append(max(i, 1))
            out.append(max(o, 1))
            cats.append(cat)
            ids.append(str(rid) if isinstance(rid, (str, int)) and not isinstance(rid, bool)
                       else f"mooncake-{len(ids)}")
            hashes.append(tuple(h) if h else None)
            if len(ts) == limit:
                break
    finally:
        lines.close()
    if not ts:
        raise SpecsimError(f"mooncake trace {p} holds no requests")
    if len(set(ids)) != len(ids):  # ids must tell requests apart
        ids = [f"mooncake-{k}" for k in range(len(ids))]
    raw = np.asarray(ts)
    order = np.argsort(raw, kind="stable")
    reordered = int(np.count_nonzero(order != np.arange(len(raw))))
    raw = raw[order]
    rel = to_seconds(raw - raw[0], time_unit, f"mooncake trace {p}", default="ms")  # exact: ms are integers
    start = float(to_seconds(raw[:1], time_unit or "ms", "")[0])
    pick = order.tolist()
    with_hashes = sum(1 for h in hashes if h)
    meta: dict[str, Any] = {
        "source": "mooncake",
        "source_file": p.name,
        "rows": len(ts),
        "time_unit": time_unit or "ms",
        "start_offset_s": start,
        "clamped_input": clamped_in,
        "clamped_output": clamped_out,
        "reordered": reordered,
        "requests_with_hash_ids": with_hashes,
    }
    if with_hashes:
        meta["hash_block_size"] = hbs
    if limit is not None:
        meta["limit"] = limit
    return Traffic.from_arrays(rel, np.asarray(inp)[order], np.asarray(out)[order],
                               [cats[k] for k in pick], [ids[k] for k in pick], meta,
                               hash_ids=[hashes[k] for k in pick])
