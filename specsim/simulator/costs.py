"""Execution-time predictor: step time (seconds) of one engine iteration from its composition.

Model (documented in docs/formats.md): the profile's decode table T(B, K), interpolated linearly
in B and K (and extrapolated linearly beyond the largest measured B), at the table's reference
context; plus a linear context term; plus the marginal cost of prefill tokens mixed into the step;
plus the drafter's cost. Piecewise-linear interpolation was chosen over a fitted closed form
because measured costs have kinks (kernel and batch-padding thresholds) that a smooth fit blurs,
and because it reproduces every measured grid point exactly.
"""

from __future__ import annotations

import numpy as np

from specsim.errors import SpecsimError
from specsim.formats.profile import CostTable, Profile

_MIN_FRACTION = 0.25  # a context shorter than the reference never makes a step cheaper than this


def _dense_bk(table: CostTable, b_max: int, k_max: int) -> np.ndarray:
    """Table resampled to every integer B in 0..b_max and K in 0..k_max (ms); row 0 is unused."""
    bs = np.asarray(table.batch_sizes, dtype=np.float64)
    ks = np.asarray(table.ks, dtype=np.float64)
    grid = np.asarray(table.step_ms, dtype=np.float64)
    # interpolate along K first (clamped at the ends), for each measured B
    k_all = np.arange(k_max + 1, dtype=np.float64)
    by_k = np.stack([np.interp(k_all, ks, grid[i]) for i in range(len(bs))])  # [nb, k_max+1]
    b_all = np.arange(b_max + 1, dtype=np.float64)
    out = np.empty((b_max + 1, k_max + 1))
    for j in range(k_max + 1):
        col = by_k[:, j]
        vals = np.interp(b_all, bs, col)
        if len(bs) >= 2:  # linear extrapolation past the largest measured batch
            slope = (col[-1] - col[-2]) / (bs[-1] - bs[-2])
            beyond = b_all > bs[-1]
            vals[beyond] = col[-1] + max(slope, 0.0) * (b_all[beyond] - bs[-1])
        out[:, j] = vals
    return out


class StepCostModel:
    """Step times in seconds for (decoding batch B, K, prefill tokens, context tokens, drafter)."""

    def __init__(self, profile: Profile, drafter: str | None, b_max: int = 1024) -> None:
        dec = profile.target.decode
        self.k_max = profile.k_max
        if drafter is not None and drafter not in profile.drafters:
            known = ", ".join(sorted(profile.drafters)) or "none"
            raise SpecsimError(f"profile has no drafter {drafter!r} (it measured: {known})")
        self.b_max = b_max
        self._decode = _dense_bk(dec, b_max, self.k_max) / 1e3
        spec = profile.drafters.get(drafter) if drafter else None
        if spec is not None and spec.cost is not None:
            self._draft = _dense_bk(spec.cost, b_max, self.k_max) / 1e3
            self._draft[:, 0] = 0.0
        else:
            self._draft = np.zeros_like(self._decode)
        self._decode_plus_draft = (self._decode + self._draft).tolist()
        self.ref_ctx = float(dec.reference_context)
        self.ctx_s_per_token = dec.context_ms_per_token / 1e3
        pre = profile.target.prefill
        self._pre_tokens = np.asarray(pre.tokens, dtype=np.float64)
        self._pre_s = np.asarray(pre.step_ms, dtype=np.float64) / 1e3
        if len(self._pre_tokens) >= 2:
            self._pre_slope = (self._pre_s[-1] - self._pre_s[-2]) / (self._pre_tokens[-1] - self._pre_tokens[-2])
            first_slope = (self._pre_s[1] - self._pre_s[0]) / (self._pre_tokens[1] - self._pre_tokens[0])
            self._pre_intercept = max(0.0, self._pre_s[0] - first_slope * self._pre_tokens[0])
        else:
            self._pre_slope = self._pre_s[0] / self._pre_tokens[0]
            self._pre_intercept = 0.0

    def prefill_s(self, tokens: int) -> float:
        """Time of a prefill-only step that processes `tokens` prompt tokens."""
        if tokens <= 0:
            return 0.0
        t = self._pre_tokens
        if tokens <= t[-1]:
            if tokens < t[0]:  # below the grid: straight line to the intercept
                return float(self._pre_intercept + (self._pre_s[0] - self._pre_intercept) * tokens / t[0])
            return float(np.interp(tokens, t, self._pre_s))
        return float(self._pre_s[-1] + max(self._pre_slope, 0.0) * (tokens - t[-1]))

    def decode_s(self, batch: int, k: float) -> float:
        """Decode/verify time for `batch` sequences at speculation length `k` (may be fractional)."""
        if batch <= 0:
            return 0.0
        rows = self._decode_plus_draft
        if batch > self.b_max:
            return self._extrapolate(batch, k)
        ki = int(k)
        if ki == k or ki >= self.k_max:
            return rows[batch][min(ki, self.k_max)]
        frac = k - ki
        row = rows[batch]
        return row[ki] * (1.0 - frac) + row[ki + 1] * frac

    def _extrapolate(self, batch: int, k: float) -> float:
        m = self._decode + self._draft
        ki = min(int(round(k)), self.k_max)
        slope = max(m[self.b_max, ki] - m[self.b_max - 1, ki], 0.0)
        return float(m[self.b_max, ki] + slope * (batch - self.b_max))

    def step_s(self, batch: int, k: float, prefill_tokens: int, context_tokens: float) -> float:
        """Time of one engine step with `batch` decoding sequences and `prefill_tokens` mixed in."""
        if batch <= 0:
            return self.prefill_s(prefill_tokens)
        base = self.decode_s(batch, k)
        t = base + self.ctx_s_per_token * (context_tokens - batch * self.ref_ctx)
        t = max(t, _MIN_FRACTION * base)
        if prefill_tokens > 0:
            t += max(0.0, self.prefill_s(prefill_tokens) - self._pre_intercept)
        return t
