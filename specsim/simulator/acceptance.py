"""Replays acceptance traces: how many draft tokens each request accepts in a verification step.

All traces of one drafter are concatenated into one flat array, so a step's lookup for every
decoding request is a single vectorised gather: r = flat[offset + pos % length].
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from specsim.errors import SpecsimError
from specsim.formats.profile import AcceptanceTrace


class AcceptanceReplay:
    """Assigns a trace to each request and answers `accepted(requests, positions, k)` per step."""

    def __init__(self, traces: list[AcceptanceTrace], seed: int = 0) -> None:
        if not traces:
            raise SpecsimError("the profile has no acceptance traces for the policy's drafter")
        modes = {t.mode for t in traces}
        if len(modes) > 1:
            raise SpecsimError("a drafter's acceptance traces mix greedy and sampled modes")
        self.sampled = modes == {"sampled"}
        values = [np.asarray(t.p if self.sampled else t.r, dtype=np.float64) for t in traces]
        lengths = np.array([len(v) for v in values], dtype=np.int64)
        self.flat = np.concatenate(values) if not self.sampled else np.concatenate(values)
        if not self.sampled:
            self.flat = self.flat.astype(np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        self.lengths = lengths
        self.k_cap = min(t.k_max for t in traces)
        self._by_category: dict[str | None, list[int]] = defaultdict(list)
        for i, t in enumerate(traces):
            self._by_category[t.category].append(i)
        self._rng = np.random.default_rng(seed)

    def assign(self, categories: tuple[str | None, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Trace (offset, length) per request: a trace of the same category if any, else any trace."""
        groups: dict[str | None, list[int]] = defaultdict(list)
        for i, cat in enumerate(categories):
            groups[cat].append(i)
        pick = np.empty(len(categories), dtype=np.int64)
        all_idx = np.arange(len(self.lengths))
        for cat in sorted(groups, key=lambda c: (c is None, c or "")):  # fixed order: seeded draws
            rows = np.asarray(groups[cat], dtype=np.int64)
            pool = self._by_category.get(cat)
            choices = np.asarray(pool) if pool else all_idx
            pick[rows] = self._rng.choice(choices, size=len(rows))
        return self.offsets[pick], self.lengths[pick]

    def accepted(self, offsets: np.ndarray, lengths: np.ndarray, pos: np.ndarray, k: np.ndarray) -> np.ndarray:
        """Accepted draft tokens per request for a verification step starting at output position pos."""
        if not self.sampled:
            r = self.flat[offsets + pos % lengths]
            return np.minimum(r, k)
        kmax = int(k.max()) if len(k) else 0
        if kmax == 0:
            return np.zeros(len(pos), dtype=np.int64)
        j = np.arange(kmax)
        p = self.flat[offsets[:, None] + (pos[:, None] + j[None, :]) % lengths[:, None]]
        ok = (self._rng.random(p.shape) < p) & (j[None, :] < k[:, None])
        return np.cumprod(ok, axis=1).sum(axis=1)
