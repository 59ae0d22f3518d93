"""Fit the analytic step model's efficiency terms to published measurements, and validate on held-out ones.

The data (`calibration_data.json`) are public figures: decode speed at batch 1, time per output token
against concurrency, static-batch latency and throughput, first-token latency, speculative speedups
with their published acceptance lengths, and drafter/target time ratios. Each point says how the
step model predicts it (`metric`) and whether it is used for the fit or held back (`split`).

The fit minimises the squared log error of the fit points (each source weighted 1/sqrt(its points),
so a source with many rows does not dominate) over the `Calibration` fields with scipy's bounded
least squares, from a few fixed starting points. The fitted constants are committed in
`calibration_fit.json`, so building a profile never refits; `experiments/analytic_calibration/run.py`
refits and rewrites that file and the table in docs/analytic-calibration.md.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from specsim.errors import SpecsimError
from specsim.profiler.hardware import lookup_gpu, lookup_model
from specsim.profiler.stepmodel import FIT_PATH, Calibration, Deployment, StepModel

DATA_PATH = Path(__file__).with_name("calibration_data.json")
DOC_PATH = "docs/analytic-calibration.md"
ENGINES = ("vllm", "sglang", "trtllm", "gpt-fast")

# (field, lower, upper, start) of every fitted scalar; step_us is one entry per engine.
PARAMS: tuple[tuple[str, float, float, float], ...] = (
    ("bw_eff", 0.4, 0.92, 0.8),
    ("layer_us", 0.0, 60.0, 10.0),
    ("flop_eff", 0.2, 1.0, 0.6),
    ("tokens_half", 0.0, 512.0, 32.0),
    ("overlap_p", 1.0, 12.0, 3.0),
    ("attn_eff", 0.2, 0.92, 0.7),
    ("seq_us", 0.0, 200.0, 10.0),
    ("spec_us", 0.0, 5000.0, 500.0),
    ("draft_fwd_us", 0.0, 5000.0, 500.0),
    ("head_fwd_us", 0.0, 3000.0, 200.0),
    ("allreduce_us", 0.0, 100.0, 10.0),
    ("lowp_flop_scale", 0.3, 1.0, 0.8),
    ("moe_layer_us", 0.0, 500.0, 20.0),
)
STEP_BOUNDS = (0.0, 20000.0, 1500.0)


@dataclass(frozen=True)
class Point:
    """One published figure and everything needed to predict it."""

    id: str
    source: str
    url: str
    figure: str
    engine: str
    gpu: str
    model: str
    batch: int
    metric: str
    value: float
    tp: int = 1
    dtype: str = "bf16"
    kv_dtype: str = "bf16"
    input_len: int = 128
    output_len: int = 256
    batch_ref: int | None = None
    drafter: dict[str, Any] = field(default_factory=dict)
    split: str = "fit"
    note: str = ""


def load_points(path: Path = DATA_PATH) -> list[Point]:
    try:
        doc = json.loads(Path(path).read_text())
        pts = [Point(**p) for p in doc["points"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SpecsimError(f"cannot read calibration data {path}: {e}") from None
    for p in pts:
        if p.split not in ("fit", "holdout"):
            raise SpecsimError(f"calibration point {p.id}: split must be fit or holdout")
    return pts


def data_digest(path: Path = DATA_PATH) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _model(p: Point, cal: Calibration | None) -> StepModel:
    dep = Deployment(lookup_model(p.model), lookup_gpu(p.gpu), p.tp, p.dtype, p.kv_dtype)
    return StepModel(dep, cal, engine=p.engine)


def _spec_ratio(sm: StepModel, p: Point, batch: int, ctx: float) -> float:
    """Plain over speculative step time at `batch` (speedup per unit acceptance length)."""
    d = p.drafter
    k = int(d["k"])
    draft = lookup_model(d["model"]) if d.get("model") else None
    spec = sm.decode_s(batch, k, ctx) + sm.drafter_s(d["kind"], batch, k, ctx, draft)
    return sm.decode_s(batch, 0, ctx) / spec


def predict(p: Point, cal: Calibration | None) -> float:
    """The step model's value of a point's metric (`cal=None`: the uncalibrated roofline)."""
    sm = _model(p, cal)
    i, o, b = p.input_len, p.output_len, p.batch
    ctx = i + o / 2
    m = p.metric
    if m == "tok_s_user":
        return o / (sm.prefill_s(i) + o * sm.decode_s(1, 0, ctx))
    if m == "tpot_ms":
        others = (b - 1) * i / o  # prompt tokens of the other clients' next requests, per step
        return 1e3 * sm.decode_s(b, 0, ctx, others, i)
    if m in ("e2e_s", "throughput_tok_s"):
        e2e = sm.prefill_batch_s(b, i) + o * sm.decode_s(b, 0, ctx)
        return e2e if m == "e2e_s" else b * o / e2e
    if m == "ttft_ms":
        return 1e3 * sm.prefill_s(i)
    if m == "spec_speedup":
        return p.drafter["acceptance_length"] * _spec_ratio(sm, p, b, ctx)
    if m == "spec_tpot_ms":
        d = p.drafter
        k = int(d["k"])
        draft = lookup_model(d["model"]) if d.get("model") else None
        step = sm.decode_s(b, k, ctx) + sm.drafter_s(d["kind"], b, k, ctx, draft)
        return 1e3 * step / d["acceptance_length"]
    if m == "spec_speedup_rel":
        return _spec_ratio(sm, p, b, ctx) / _spec_ratio(sm, p, p.batch_ref or 1, ctx)
    if m == "draft_target_ratio":
        d = p.drafter
        one = sm.draft_model_s(lookup_model(d["model"]), b, 1, ctx)
        return one / sm.decode_s(b, int(d["k"]), ctx)
    raise SpecsimError(f"calibration point {p.id}: unknown metric {m!r}")


def rel_error(p: Point, cal: Calibration | None) -> float:
    """Signed relative error of the prediction: predicted / published - 1."""
    return predict(p, cal) / p.value - 1.0


# ---- fitting -----------------------------------------------------------------------------------------
def _unpack(x: np.ndarray, engines: tuple[str, ...]) -> Calibration:
    kw: dict[str, Any] = {name: float(v) for (name, *_), v in zip(PARAMS, x, strict=False)}
    kw["step_us"] = {e: float(v) for e, v in zip(engines, x[len(PARAMS):], strict=True)}
    return Calibration(**kw)


def fit(points: list[Point], starts: int = 4) -> Calibration:
    """Least squares on log(predicted / published) over the fit split; the best of a few fixed starts."""
    from scipy.optimize import least_squares

    train = [p for p in points if p.split == "fit"]
    if not train:
        raise SpecsimError("no calibration points in the fit split")
    engines = tuple(e for e in ENGINES if any(p.engine == e for p in points))
    per_source: dict[str, int] = defaultdict(int)
    for p in train:
        per_source[p.source] += 1
    weights = np.array([1.0 / math.sqrt(per_source[p.source]) for p in train])
    lo = np.array([b[1] for b in PARAMS] + [STEP_BOUNDS[0]] * len(engines))
    hi = np.array([b[2] for b in PARAMS] + [STEP_BOUNDS[1]] * len(engines))
    x0 = np.array([b[3] for b in PARAMS] + [STEP_BOUNDS[2]] * len(engines))

    def residuals(x: np.ndarray) -> np.ndarray:
        cal = _unpack(x, engines)
        return weights * np.array([math.log(max(predict(p, cal), 1e-12) / p.value) for p in train])

    best = None
    for s in range(starts):
        start = lo + (hi - lo) * np.random.default_rng(s).uniform(0.1, 0.6, size=len(x0)) if s else x0
        res = least_squares(residuals, start, bounds=(lo, hi), x_scale=np.maximum(hi - lo, 1e-3) / 10,
                            method="trf", max_nfev=4000)
        if best is None or res.cost < best.cost:
            best = res
    return _rounded(_unpack(best.x, engines))


def _rounded(cal: Calibration) -> Calibration:
    """Constants to 4 significant digits: what gets committed, and what the table is computed from."""
    def r(v: float) -> float:
        return 0.0 if abs(v) < 1e-3 else float(f"{v:.4g}")  # a thousandth of a microsecond is zero

    d = cal.to_dict()
    return Calibration.from_dict({k: ({e: r(x) for e, x in v.items()} if isinstance(v, dict) else r(v))
                                  for k, v in d.items()})


# ---- validation ----------------------------------------------------------------------------------------
@dataclass
class Row:
    point: Point
    calibrated: float
    uncalibrated: float

    @property
    def err_cal(self) -> float:
        return self.calibrated / self.point.value - 1.0

    @property
    def err_unc(self) -> float:
        return self.uncalibrated / self.point.value - 1.0


def rows(points: list[Point], cal: Calibration) -> list[Row]:
    return [Row(p, predict(p, cal), predict(p, None)) for p in points]


def summary(rs: list[Row]) -> dict[str, Any]:
    """Mean and max absolute relative error, calibrated and uncalibrated."""
    if not rs:
        return {"points": 0}
    ec = [abs(r.err_cal) for r in rs]
    eu = [abs(r.err_unc) for r in rs]
    return {"points": len(rs), "calibrated_mean": round(float(np.mean(ec)), 4),
            "calibrated_max": round(float(np.max(ec)), 4), "uncalibrated_mean": round(float(np.mean(eu)), 4),
            "uncalibrated_max": round(float(np.max(eu)), 4)}


def fit_report(points: list[Point], cal: Calibration) -> dict[str, Any]:
    """What calibration_fit.json holds: the constants and the error summaries they give."""
    rs = rows(points, cal)
    return {
        "schema": "specsim.calibration-fit", "version": 1,
        "data": "specsim/profiler/calibration_data.json", "data_sha256": data_digest(),
        "table": DOC_PATH,
        "params": cal.to_dict(),
        "holdout": summary([r for r in rs if r.point.split == "holdout"]),
        "fit": summary([r for r in rs if r.point.split == "fit"]),
    }


def write_fit(report: dict[str, Any], path: Path = FIT_PATH) -> None:
    from specsim.io import atomic_write_text

    atomic_write_text(path, json.dumps(report, indent=1) + "\n")


def _pct(v: float) -> str:
    return f"{v * 100:+.0f}%"


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def render_tables(points: list[Point], cal: Calibration) -> str:
    """The generated part of docs/analytic-calibration.md: summary by source, then every held-out point."""
    rs = rows(points, cal)
    hold = [r for r in rs if r.point.split == "holdout"]
    fitted = [r for r in rs if r.point.split == "fit"]
    out = ["### Held-out error by source", "",
           "Mean and largest absolute relative error |predicted / published - 1| over each source's held-out "
           "points.", "",
           "| source | held-out points | uncalibrated mean | uncalibrated max | calibrated mean | calibrated max |",
           "|---|---|---|---|---|---|"]
    by_src: dict[str, list[Row]] = defaultdict(list)
    for r in hold:
        by_src[r.point.source].append(r)
    for src, rr in by_src.items():
        s = summary(rr)
        out.append(f"| [{src}]({rr[0].point.url}) | {s['points']} | {s['uncalibrated_mean']:.0%} | "
                   f"{s['uncalibrated_max']:.0%} | {s['calibrated_mean']:.0%} | {s['calibrated_max']:.0%} |")
    for label, part in (("**all held-out**", hold), ("fit points (for reference)", fitted)):
        s = summary(part)
        out.append(f"| {label} | {s['points']} | {s['uncalibrated_mean']:.0%} | {s['uncalibrated_max']:.0%} | "
                   f"{s['calibrated_mean']:.0%} | {s['calibrated_max']:.0%} |")
    out += ["", "### Held-out points", "",
            "| point | setting | metric | published | uncalibrated | calibrated |", "|---|---|---|---|---|---|"]
    for r in hold:
        p = r.point
        setting = f"{p.model} {p.dtype}, {p.tp} x {p.gpu.upper()}, {p.engine}, batch {p.batch}"
        if p.drafter:
            setting += f", {p.drafter['kind']} K={p.drafter['k']}"
        out.append(f"| {p.id} | {setting} | {p.metric} | {_fmt(p.value)} | {_fmt(r.uncalibrated)} "
                   f"({_pct(r.err_unc)}) | {_fmt(r.calibrated)} ({_pct(r.err_cal)}) |")
    out += ["", "### Sources and the figures used", ""]
    by_all: dict[str, list[Point]] = defaultdict(list)
    for p in points:
        by_all[p.source].append(p)
    for src, pts in by_all.items():
        urls = list(dict.fromkeys(p.url for p in pts))
        out.append(f"- **{src}** ({', '.join(urls)})")
        for p in pts:
            note = f" {p.note}" if p.note else ""
            out.append(f"  - `{p.id}` ({p.split}): {p.figure}.{note}")
    out += ["", "### Fitted constants", "", "| term | value |", "|---|---|"]
    for k, v in cal.to_dict().items():
        if isinstance(v, dict):
            v = ", ".join(f"{e} {x:.4g}" for e, x in v.items())
        else:
            v = f"{v:.4g}"
        out.append(f"| `{k}` | {v} |")
    return "\n".join(out) + "\n"


BEGIN, END = "<!-- BEGIN generated by experiments/analytic_calibration/run.py -->", "<!-- END generated -->"


def splice(doc: str, generated: str) -> str:
    """Replace the generated block of the calibration doc."""
    if BEGIN not in doc or END not in doc:
        raise SpecsimError(f"{DOC_PATH} lacks the generated-block markers")
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{generated}{END}{tail}"


def generated_block(doc: str) -> str:
    return doc.split(BEGIN, 1)[1].split(END, 1)[0].lstrip("\n")


__all__ = ["DATA_PATH", "Point", "fit", "fit_report", "load_points", "predict", "render_tables", "rows", "summary"]
