"""The composition cost model: a step's period from what is in it, fitted to recorded steps.

Model (formats.profile.CompositionCost and DrafterComposition):

    period = base + F(T) + n N + a A / 1000 + a_p A_p / 1000 + s S + drafter(R, S, K)

T tokens in the step (prefill chunks, decode tokens, draft tokens), N requests, A attention pairs
(each row's new tokens times its context before the step plus half of them), S draft tokens
verified, R rows with drafts, K the longest draft; A_p are the attention pairs of prefill rows
(rows computing more than one token besides drafts), and A the rest (decode rows). F is piecewise
linear and non-decreasing in T.

Why this form: a transformer step is dominated by its matmuls, whose time depends on the tokens in
the step (flat while the weights' bandwidth dominates, then linear: F captures either regime from
measurements, with no assumption on where the knee lies); attention grows with context times query
tokens, at two rates: a decode row reads its whole context's KV for one query (memory-bound), a
prefill row's many queries share each read (compute-bound), so a prefill over a cached prefix costs
far less per pair than decode (measured: experiments/prefix_caching/cached_prefill); sampling and
bookkeeping grow with requests. Prefill chunks, decode rows and draft tokens
are then costed by the same terms, so a mixed step costs what its parts cost together, not the sum
of a decode table and a prefill curve that each carry a full step's fixed cost (the old model's
double counting). It is linear in its parameters, so one non-negative least-squares solve fits it
(weighted by 1/period: relative errors), and every parameter has a physical reading.

Pure numpy/scipy: used by `specsim profile` and tested on recorded steps without vLLM.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

DEFAULT_KNOTS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
N_FEATURES = 8
TOKENS, REQUESTS, KPAIRS, DRAFTS, DRAFT_ROWS, KMAX, MAXCTX, PREFILL_KPAIRS = range(N_FEATURES)


def features(rows: Iterable[Sequence[int]]) -> np.ndarray:
    """[tokens, requests, kilo attention pairs, drafts, rows with drafts, longest draft, longest context,
    kilo attention pairs of prefill rows] of one step from recorder rows [new, computed_before, drafts,
    prompt_tokens]. A prefill row computes more than one token besides its drafts (a prompt chunk,
    cached context or not). Same arithmetic as the simulator's kernel.step_time."""
    f = np.zeros(N_FEATURES)
    for row in rows:
        new, before, drafts = int(row[0]), int(row[1]), int(row[2])
        f[TOKENS] += new
        f[REQUESTS] += 1
        pairs = new * (before + (new + 1) * 0.5) / 1000.0
        f[KPAIRS] += pairs
        if new > 1 + drafts:
            f[PREFILL_KPAIRS] += pairs
        if drafts > 0:
            f[DRAFTS] += drafts
            f[DRAFT_ROWS] += 1
            f[KMAX] = max(f[KMAX], drafts)
        f[MAXCTX] = max(f[MAXCTX], before + new)
    return f


@dataclass
class Sample:
    """One recorded step."""

    feats: np.ndarray
    period_ms: float
    drafter: str | None
    """Which drafter proposed this step's drafts (None: the target alone)."""
    role: str
    label: str
    heldout: bool = False
    start: int = 0
    """Engine start the step came from (start-to-start spread)."""


@dataclass
class FittedModel:
    """The fitted parameters (ms)."""

    knots: list[int]
    token_ms: list[float]
    base_ms: float
    per_request_ms: float
    per_kpair_ms: float
    per_draft_token_ms: float
    drafters: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per drafter: per_step_ms, per_row_ms, per_token_ms, per_forward_ms, per_forward_row_ms."""
    per_prefill_kpair_ms: float | None = None
    """ms per thousand attention pairs of prefill rows; None: per_kpair_ms for every pair (a fit on
    steps recorded before prefill pairs were, or a profile made before)."""

    @classmethod
    def from_composition(cls, comp: Any, drafters: dict[str, Any] | None = None) -> FittedModel:
        """The model a profile's `target.composition` (and drafters' compositions) describes."""
        return cls(knots=list(comp.token_knots), token_ms=list(comp.token_ms), base_ms=comp.base_ms,
                   per_request_ms=comp.per_request_ms, per_kpair_ms=comp.per_kpair_ms,
                   per_draft_token_ms=comp.per_draft_token_ms, per_prefill_kpair_ms=comp.per_prefill_kpair_ms,
                   drafters={n: d.composition.model_dump() for n, d in (drafters or {}).items()
                             if d.composition is not None})

    def attention_ms(self, feats: np.ndarray) -> float:
        """The attention-pair terms of a step (prefill pairs at their own rate when fitted)."""
        pre = float(feats[PREFILL_KPAIRS]) if len(feats) > PREFILL_KPAIRS else math.nan
        if self.per_prefill_kpair_ms is None or not math.isfinite(pre):
            return self.per_kpair_ms * float(feats[KPAIRS])
        return self.per_kpair_ms * (float(feats[KPAIRS]) - pre) + self.per_prefill_kpair_ms * pre

    def predict(self, feats: np.ndarray, drafter: str | None) -> float:
        """Period (ms) of a step with these features."""
        t = feats[TOKENS]
        knots = np.asarray(self.knots, dtype=float)
        vals = np.asarray(self.token_ms)
        if t <= knots[-1]:
            f = float(np.interp(t, knots, vals))
        else:
            f = float(vals[-1] + (vals[-1] - vals[-2]) / (knots[-1] - knots[-2]) * (t - knots[-1]))
        ms = (self.base_ms + f + self.per_request_ms * feats[REQUESTS] + self.attention_ms(feats)
              + self.per_draft_token_ms * feats[DRAFTS])
        d = self.drafters.get(drafter or "") if drafter else None
        if d and feats[DRAFT_ROWS] > 0:
            r, s, k = feats[DRAFT_ROWS], feats[DRAFTS], feats[KMAX]
            ms += (d["per_step_ms"] + d["per_row_ms"] * r + d["per_token_ms"] * s + d["per_forward_ms"] * k
                   + d["per_forward_row_ms"] * k * r)
        return ms


DRAFTER_TERMS = ("per_step_ms", "per_row_ms", "per_token_ms", "per_forward_ms", "per_forward_row_ms")


def _token_columns(t: np.ndarray, knots: Sequence[int]) -> np.ndarray:
    """Columns whose non-negative weights are F's slopes on each segment (last one extends)."""
    k = np.asarray(knots, dtype=float)
    cols = []
    for j in range(len(k) - 1):
        if j < len(k) - 2:
            cols.append(np.clip(t - k[j], 0.0, k[j + 1] - k[j]))
        else:
            cols.append(np.maximum(t - k[j], 0.0))
    return np.stack(cols, axis=1)


def split_attention(samples: Sequence[Sample]) -> bool:
    """Whether every sample carries its prefill pairs and some prefill rows attend over a context
    computed before them (a later chunk, or a cached prefix): only then are the two rates identifiable
    apart from F's curvature, and the fit gives prefill pairs a rate of their own."""
    if not samples or any(len(s.feats) <= PREFILL_KPAIRS or not math.isfinite(s.feats[PREFILL_KPAIRS])
                          for s in samples):
        return False
    return any(s.feats[PREFILL_KPAIRS] * 2000.0 > s.feats[TOKENS] * (s.feats[TOKENS] + 1) * 1.5 for s in samples)


def _design(samples: Sequence[Sample], knots: Sequence[int], drafters: Sequence[str],
            split: bool = False) -> np.ndarray:
    x = np.stack([s.feats[:N_FEATURES] if len(s.feats) >= N_FEATURES
                  else np.concatenate([s.feats, np.zeros(N_FEATURES - len(s.feats))]) for s in samples])
    pairs = [x[:, KPAIRS] - x[:, PREFILL_KPAIRS], x[:, PREFILL_KPAIRS]] if split else [x[:, KPAIRS]]
    cols = [np.ones(len(samples)), *_token_columns(x[:, TOKENS], knots).T, x[:, REQUESTS], *pairs,
            x[:, DRAFTS]]
    for name in drafters:
        mine = np.array([s.drafter == name for s in samples], dtype=float) * (x[:, DRAFT_ROWS] > 0)
        r, s_, k = x[:, DRAFT_ROWS], x[:, DRAFTS], x[:, KMAX]
        cols += [mine, mine * r, mine * s_, mine * k, mine * k * r]
    return np.stack(cols, axis=1)


def fit(samples: Sequence[Sample], knots: Sequence[int] = DEFAULT_KNOTS) -> FittedModel:
    """Non-negative least squares on relative error over the samples not held out."""
    from scipy.optimize import nnls

    train = [s for s in samples if not s.heldout and s.period_ms > 0]
    if len(train) < 8:
        raise ValueError(f"only {len(train)} steps to fit the cost model on")
    top = max(s.feats[TOKENS] for s in train)
    knots = [int(k) for k in knots if k < top] + [int(next((k for k in knots if k >= top), top))]
    if len(knots) < 2:
        knots = [1, max(2, int(top))]
    drafters = sorted({s.drafter for s in train if s.drafter})
    split = split_attention(train)
    a = _design(train, knots, drafters, split)
    y = np.array([s.period_ms for s in train])
    w = 1.0 / y
    coef, _ = nnls(a * w[:, None], y * w, maxiter=50 * a.shape[1])
    m = len(knots) - 1
    slopes = coef[1:1 + m]
    token_ms = [0.0]
    for j in range(m):
        token_ms.append(token_ms[-1] + float(slopes[j]) * (knots[j + 1] - knots[j]))
    off = 1 + m
    model = FittedModel(knots=list(knots), token_ms=token_ms, base_ms=float(coef[0]),
                        per_request_ms=float(coef[off]), per_kpair_ms=float(coef[off + 1]),
                        per_draft_token_ms=float(coef[off + 2 + split]),
                        per_prefill_kpair_ms=float(coef[off + 2]) if split else None)
    off += 3 + split
    for name in drafters:
        model.drafters[name] = {t: float(v) for t, v in zip(DRAFTER_TERMS, coef[off:off + 5], strict=True)}
        off += 5
    return model


def errors(model: FittedModel, samples: Sequence[Sample]) -> dict[str, dict[str, float]]:
    """Relative error by role, on held-out and on fitted steps separately.

    Per step (|predicted / measured - 1|, mean and 90th percentile) and per workload (sum of the
    predicted periods against the measured sum: what a request's latency integrates over)."""
    out: dict[str, dict[str, float]] = {}
    groups: dict[tuple[str, bool], list[Sample]] = {}
    for s in samples:
        groups.setdefault((s.role, s.heldout), []).append(s)
    for (role, held), ss in sorted(groups.items()):
        pred = np.array([model.predict(s.feats, s.drafter) for s in ss])
        meas = np.array([s.period_ms for s in ss])
        rel = np.abs(pred / meas - 1.0)
        by_label: dict[str, list[int]] = {}
        for i, s in enumerate(ss):
            by_label.setdefault(s.label, []).append(i)
        sums = [abs(pred[ix].sum() / meas[ix].sum() - 1.0) for ix in by_label.values()]
        out[f"{role}/{'heldout' if held else 'fit'}"] = {
            "steps": len(ss), "workloads": len(by_label),
            "step_mean_abs_rel_error": round(float(rel.mean()), 4),
            "step_p90_abs_rel_error": round(float(np.percentile(rel, 90)), 4),
            "workload_mean_abs_rel_error": round(float(np.mean(sums)), 4),
            "workload_max_abs_rel_error": round(float(np.max(sums)), 4),
        }
    return out


MIN_SPREAD_STEPS = 5
"""An engine start counts towards the start spread when it recorded at least this many probe steps."""


def start_medians(model: FittedModel, samples: Sequence[Sample]) -> dict[int, float]:
    """Per engine start with enough probe steps: the median ratio of measured to predicted period."""
    by_start: dict[int, list[float]] = {}
    for s in samples:
        by_start.setdefault(s.start, []).append(s.period_ms / model.predict(s.feats, s.drafter))
    return {k: float(np.median(v)) for k, v in sorted(by_start.items()) if len(v) >= MIN_SPREAD_STEPS}


def start_spread(model: FittedModel, samples: Sequence[Sample]) -> float | None:
    """Half the range of the per-start median ratio measured / predicted, over their mean."""
    return spread_of_medians(list(start_medians(model, samples).values()))


def spread_of_medians(medians: Sequence[float]) -> float | None:
    """Half the range of per-start medians over their mean; None with fewer than two starts.

    Shared by the profiler (its own engine starts) and the fidelity study (live servers' recorded
    steps), so that both report the band the same way."""
    med = [float(m) for m in medians]
    if len(med) < 2:
        return None
    return round((max(med) - min(med)) / 2 / float(np.mean(med)), 4)
