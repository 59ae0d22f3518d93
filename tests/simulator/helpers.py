"""Small builders for simulator tests."""

from __future__ import annotations

import numpy as np

from specsim.formats.policy import DrafterRef, Policy
from specsim.formats.traffic import Traffic

DRAFT = DrafterRef(name="draft", method="draft_model", model="draft")


def spaced_traffic(n: int, output: int, gap: float = 1e6, inp: int = 32) -> Traffic:
    """Requests so far apart that each runs alone (batch size 1)."""
    return Traffic.from_arrays(np.arange(n) * gap, [inp] * n, [output] * n)


def poisson_traffic(n: int, rate: float, inp: int, out: int | tuple[int, int], seed: int = 0, cat: str | None = None):
    rng = np.random.default_rng(seed)
    ts = np.cumsum(rng.exponential(1.0 / rate, n))
    ts -= ts[0]
    outs = [out] * n if isinstance(out, int) else rng.integers(out[0], out[1], n)
    return Traffic.from_arrays(ts, [inp] * n, outs, [cat] * n)


def static(k: int, drafter: DrafterRef | None = DRAFT) -> Policy:
    return Policy.static(drafter, k)
