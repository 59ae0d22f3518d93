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

import specsim.simulator.kernel as kernel
from specsim.errors import SpecsimError
from specsim.formats.profile import CostTable, Profile


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
    """Step times in seconds for (decoding batch B, K, prefill tokens, context tokens, drafter).

    The arithmetic lives in `kernel.step_seconds` (compiled, used by the engine's hot loop); this
    class builds its tables from a profile and offers the same formulas to Python callers.
    """

    def __init__(self, profile: Profile, drafter: str | None, b_max: int = 1024) -> None:
        dec = profile.target.decode
        self.k_max = profile.k_max
        if drafter is not None and drafter not in profile.drafters:
            known = ", ".join(sorted(profile.drafters)) or "none"
            raise SpecsimError(f"profile has no drafter {drafter!r} (it measured: {known})")
        b_max = max(int(b_max), 2)
        self.b_max = b_max
        self.b_measured = int(max(dec.batch_sizes))
        """Largest batch size the profile measured; larger ones are extrapolated."""
        decode = _dense_bk(dec, b_max, self.k_max) / 1e3
        spec = profile.drafters.get(drafter) if drafter else None
        if spec is not None and spec.cost is not None:
            draft = _dense_bk(spec.cost, b_max, self.k_max) / 1e3
            draft[:, 0] = 0.0
        else:
            draft = np.zeros_like(decode)
        hit = spec.family.hit_rate if spec is not None and spec.family is not None \
            and spec.family.kind == "overlapped" else None
        if hit is not None:
            # NOTE: the drafter runs beside the target (its own devices): a round pre-drafted while the
            # target verified costs the longer of the two; a miss drafts after verifying (SSD/Saguaro).
            # Folded into the table at the reference context: extra context lengthens verification only.
            both = decode + draft
            draft = hit * np.maximum(decode, draft) + (1.0 - hit) * both - decode
            draft[:, 0] = 0.0
        pre = profile.target.prefill
        pre_tokens = np.asarray(pre.tokens, dtype=np.float64)
        pre_s = np.asarray(pre.step_ms, dtype=np.float64) / 1e3
        if len(pre_tokens) >= 2:
            pre_slope = (pre_s[-1] - pre_s[-2]) / (pre_tokens[-1] - pre_tokens[-2])
            first_slope = (pre_s[1] - pre_s[0]) / (pre_tokens[1] - pre_tokens[0])
            intercept = max(0.0, pre_s[0] - first_slope * pre_tokens[0])
        else:
            pre_slope = pre_s[0] / pre_tokens[0]
            intercept = 0.0
        cf = np.zeros(kernel.C_SIZE)
        cf[kernel.C_REFCTX] = float(dec.reference_context)
        cf[kernel.C_CTXSLOPE] = dec.context_ms_per_token / 1e3
        cf[kernel.C_PREINTERCEPT] = intercept
        cf[kernel.C_PRESLOPE] = max(pre_slope, 0.0)
        cf[kernel.C_BMAX] = b_max
        cf[kernel.C_BMEASURED] = self.b_measured
        comp = profile.target.composition
        self.composition = comp is not None
        """True when the profile's composition model (version 2) times the steps."""
        if comp is not None:
            cf[kernel.C_MODE] = 1.0
            cf[kernel.C_BASE] = comp.base_ms / 1e3
            cf[kernel.C_PERREQ] = comp.per_request_ms / 1e3
            cf[kernel.C_PERKPAIR] = comp.per_kpair_ms / 1e3
            # NOTE: profiles made before prefill pairs had a rate of their own cost them as decode pairs
            pre_pair = comp.per_prefill_kpair_ms
            cf[kernel.C_PERPREKPAIR] = (comp.per_kpair_ms if pre_pair is None else pre_pair) / 1e3
            cf[kernel.C_PERDRAFT] = comp.per_draft_token_ms / 1e3
            dc = spec.composition if spec is not None else None
            if dc is not None:
                for idx, v in ((kernel.C_D_STEP, dc.per_step_ms), (kernel.C_D_ROW, dc.per_row_ms),
                               (kernel.C_D_TOK, dc.per_token_ms), (kernel.C_D_FWD, dc.per_forward_ms),
                               (kernel.C_D_FWDROW, dc.per_forward_row_ms)):
                    cf[idx] = v / 1e3
            inf = float("inf")
            cf[kernel.C_MTOKENS] = comp.measured.get("tokens", inf)
            cf[kernel.C_MREQS] = comp.measured.get("requests", inf)
            cf[kernel.C_MCTX] = comp.measured.get("context", inf)
            pre_tokens = np.asarray(comp.token_knots, dtype=np.float64)
            pre_s = np.asarray(comp.token_ms, dtype=np.float64) / 1e3
        self.arrays = kernel.Cost(np.ascontiguousarray(decode + draft), cf, pre_tokens, pre_s)
        """The tables in the form the compiled engine reads."""

    def prefill_s(self, tokens: int) -> float:
        """Time of a prefill-only step that processes `tokens` prompt tokens."""
        if self.composition:
            kpairs = tokens * (tokens + 1) / 2e3
            return float(kernel.composition_seconds(self.arrays, float(tokens), 1, kpairs, kpairs, 0, 0, 0))
        return float(kernel.prefill_seconds(self.arrays, float(tokens)))

    def decode_s(self, batch: int, k: float) -> float:
        """Decode/verify time for `batch` sequences at speculation length `k` (may be fractional),
        each with the profile's reference context."""
        if batch <= 0:
            return 0.0
        if self.composition:
            q = 1.0 + k
            ctx = float(self.arrays.cf[kernel.C_REFCTX])
            kpairs = batch * q * (ctx + (q + 1) / 2) / 1e3
            return float(kernel.composition_seconds(self.arrays, batch * q, int(batch), kpairs, 0.0,
                                                    int(round(batch * k)), int(batch) if k > 0 else 0,
                                                    int(np.ceil(k))))
        return float(kernel.decode_seconds(self.arrays, int(batch), float(k)))

    def step_s(self, batch: int, k: float, prefill_tokens: int, context_tokens: float) -> float:
        """Time of one engine step with `batch` decoding sequences and `prefill_tokens` mixed in."""
        spec_tokens = int(round(k * batch))
        return float(kernel.step_seconds(self.arrays, int(batch), spec_tokens, int(prefill_tokens),
                                         float(context_tokens)))
