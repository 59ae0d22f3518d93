"""Tuning across a range of loads: one trace that replays a traffic shape at several offered loads."""

from __future__ import annotations

import math

import numpy as np

from specsim.errors import SpecsimError
from specsim.formats.traffic import Traffic


def multi_load(shape: Traffic, rates: list[float], gap_s: float = 120.0) -> Traffic:
    """The shape rate-scaled to each rate (req/s), back to back with `gap_s` idle seconds between.

    Tuning on this trace optimises the sum over load levels (each level has the same requests),
    so a schedule that speculates at small batch sizes and stops at large ones can win at every level.
    """
    if len(shape) < 2 or shape.rate <= 0:
        raise SpecsimError("the traffic shape needs at least two requests at distinct times")
    if not rates or any(not (r > 0 and math.isfinite(r)) for r in rates):
        raise SpecsimError(f"loads must be positive numbers, got {rates}")
    if gap_s < 0:
        raise SpecsimError("gap between load levels must be >= 0")
    ts, inp, out, cats, ids = [], [], [], [], []
    pids: list[str | None] = []
    t0 = 0.0
    for j, r in enumerate(rates):
        s = shape.rate_scaled(r / shape.rate)
        rel = s.timestamps - s.timestamps[0]
        ts.append(rel + t0)
        inp.append(s.input_lengths)
        out.append(s.output_lengths)
        cats.extend(s.categories)
        pids.extend(s.prompt_ids or (None,) * len(s))
        ids.extend(f"L{j}-{rid}" for rid in s.request_ids)
        t0 = float(ts[-1][-1]) + gap_s
    meta = dict(shape.metadata, loads=list(rates), load_gap_s=gap_s)
    return Traffic.from_arrays(np.concatenate(ts), np.concatenate(inp), np.concatenate(out), cats, ids, meta,
                               prompt_ids=pids)
