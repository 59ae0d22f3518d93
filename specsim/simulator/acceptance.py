"""Replays acceptance traces: how many draft tokens each request accepts in a verification step.

All traces of one drafter live in one flat array, so a step's lookup for every decoding request
is a single vectorised gather. Greedy traces are tiled once to the longest output in the traffic,
which makes the gather index simply `trace_start + position` (no modulo in the hot loop).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from specsim.errors import SpecsimError
from specsim.formats.profile import AcceptanceTrace

_MAX_TILED = 32_000_000  # entries (int8) we are willing to hold for the tiled greedy table


class AcceptanceReplay:
    """Assigns a trace to each request and answers `accepted(...)` per step."""

    def __init__(self, traces: list[AcceptanceTrace], seed: int = 0) -> None:
        if not traces:
            raise SpecsimError("the profile has no acceptance traces for the policy's drafter")
        modes = {t.mode for t in traces}
        if len(modes) > 1:
            raise SpecsimError("a drafter's acceptance traces mix greedy and sampled modes")
        self.sampled = modes == {"sampled"}
        self.values = [np.asarray(t.p if self.sampled else t.r, dtype=np.float64) for t in traces]
        self.lengths = np.array([len(v) for v in self.values], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
        self.flat = np.concatenate(self.values)
        if not self.sampled:
            self.flat = self.flat.astype(np.int64)
        self.k_cap = min(t.k_max for t in traces)
        # drafters that sometimes propose fewer than K tokens (n-gram without a match) record it
        self.has_drafted = not self.sampled and any(t.drafted is not None for t in traces)
        self.drafted_values = [
            np.asarray(t.drafted if t.drafted is not None else [t.k_max] * len(t.r), dtype=np.int64)
            for t in traces
        ] if self.has_drafted else []
        self.flat_drafted = np.concatenate(self.drafted_values) if self.has_drafted else None
        self._by_category: dict[str | None, list[int]] = defaultdict(list)
        self._by_prompt: dict[str, int] = {}
        for i, t in enumerate(traces):
            self._by_category[t.category].append(i)
            self._by_prompt.setdefault(t.prompt_id, i)
        self.prompt_matches = 0
        """Requests of the last `assign` that got their own prompt's trace."""
        self._rng = np.random.default_rng(seed)
        self.tiled: np.ndarray | None = None
        self.tiled_drafted: np.ndarray | None = None
        self._tile_len = 0

    def _tile(self, max_len: int) -> None:
        """Greedy only: repeat every trace to `max_len` positions in one int8 table."""
        if self.sampled or self.k_cap > 127 or len(self.values) * max_len > _MAX_TILED:
            return
        reps = -(-max_len // self.lengths)

        def tile(values: list[np.ndarray]) -> np.ndarray:
            rows = [np.tile(v.astype(np.int8), int(n))[:max_len] for v, n in zip(values, reps, strict=True)]
            return np.concatenate(rows)

        self.tiled = tile(self.values)
        if self.has_drafted:
            self.tiled_drafted = tile(self.drafted_values)
        self._tile_len = max_len

    def assign(self, categories: tuple[str | None, ...], max_len: int = 0,
               prompt_ids: tuple[str | None, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Per request (trace start, trace length): the trace of its prompt if the request names one
        the profile recorded, else a seeded draw among its category's traces, else among all.

        With `max_len` (the longest output + K) greedy traces are tiled and the start indexes the
        tiled table; positions then never wrap.
        """
        if max_len and self.tiled is None:
            self._tile(max_len)
        pick = np.empty(len(categories), dtype=np.int64)
        groups: dict[str | None, list[int]] = defaultdict(list)
        self.prompt_matches = 0
        for i, cat in enumerate(categories):
            own = self._by_prompt.get(prompt_ids[i]) if prompt_ids is not None and prompt_ids[i] else None
            if own is not None:
                pick[i] = own
                self.prompt_matches += 1
            else:
                groups[cat].append(i)
        all_idx = np.arange(len(self.lengths))
        for cat in sorted(groups, key=lambda c: (c is None, c or "")):  # fixed order: seeded draws
            rows = np.asarray(groups[cat], dtype=np.int64)
            pool = self._by_category.get(cat)
            choices = np.asarray(pool) if pool else all_idx
            pick[rows] = self._rng.choice(choices, size=len(rows))
        if self.tiled is not None:
            return pick * self._tile_len, np.full(len(pick), self._tile_len, dtype=np.int64)
        return self.offsets[pick], self.lengths[pick]

    def drafted(self, start: np.ndarray, length: np.ndarray, pos: np.ndarray, k: int | np.ndarray) -> np.ndarray:
        """Draft tokens actually proposed per request at position pos when asking for k (<= k)."""
        if self.tiled_drafted is not None:
            return np.minimum(self.tiled_drafted[start + pos], k)
        return np.minimum(self.flat_drafted[start + pos % length], k)

    def accepted(self, start: np.ndarray, length: np.ndarray, pos: np.ndarray, k: int | np.ndarray) -> np.ndarray:
        """Accepted draft tokens per request for a verification step starting at output position pos."""
        if self.tiled is not None:
            return np.minimum(self.tiled[start + pos], k)
        if not self.sampled:
            return np.minimum(self.flat[start + pos % length], k)
        karr = np.broadcast_to(np.asarray(k, dtype=np.int64), pos.shape)
        kmax = int(karr.max()) if len(karr) else 0
        if kmax == 0:
            return np.zeros(len(pos), dtype=np.int64)
        j = np.arange(kmax)
        p = self.flat[start[:, None] + (pos[:, None] + j[None, :]) % length[:, None]]
        ok = (self._rng.random(p.shape) < p) & (j[None, :] < karr[:, None])
        return np.cumprod(ok, axis=1).sum(axis=1)
