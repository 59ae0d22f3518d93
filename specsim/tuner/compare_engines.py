"""`specsim compare-engines`: tune each engine family's adaptive rule on the same profile and traffic,
at several loads, and say how much of the available gain each engine's knobs capture.

For every load (a rate scale of the traffic) and every family (vLLM's batch-size schedule, specsim's
rule with the queue and context axes, SGLang's adaptive steps, TensorRT-LLM's draft_len_schedule and
gate), the tuner searches within that family only. The family's result is its best trial, the same
rule the engine would run; the static-K and off baselines are computed once per load on the same
simulations. The available gain at a load is the best gain over speculation off that any family or
static K reached; each family's share is its gain over off divided by that.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from specsim.errors import SpecsimError
from specsim.formats.policy import Policy
from specsim.formats.profile import Profile
from specsim.formats.traffic import Traffic
from specsim.simulator.config import SimConfig
from specsim.tuner.baselines import OFF_NAME, best_baseline
from specsim.tuner.objectives import Objective
from specsim.tuner.space import FAMILIES, SearchSpace, describe
from specsim.tuner.study import StudySettings
from specsim.tuner.tune import tune

ENGINE_NAMES = {"vllm": "vLLM (batch-size schedule)", "specsim": "specsim (+ queue / context rule)",
                "sglang": "SGLang (adaptive steps)", "trtllm": "TensorRT-LLM (draft_len_schedule + gate)"}


@dataclass
class FamilyRow:
    """One family at one load."""

    scale: float
    family: str
    policy: Policy
    value: float
    """The family's best objective value (its best trial)."""
    gain_vs_off: float | None
    share: float | None = None
    """Gain over off as a share of the best gain any family or static K reached at this load."""
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "family": self.family, "policy": describe(self.policy),
                "policy_json": self.policy.model_dump(mode="json", by_alias=True, exclude={"provenance"}),
                "value": self.value, "gain_vs_off": self.gain_vs_off, "share_of_available_gain": self.share,
                "metrics": self.metrics}


@dataclass
class LoadResult:
    """Every family at one load, with the baselines."""

    scale: float
    rows: list[FamilyRow]
    off_value: float
    best_static: str
    best_static_value: float
    best_static_gain: float | None
    available_gain: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "off_value": self.off_value, "best_static": self.best_static,
                "best_static_value": self.best_static_value, "best_static_gain": self.best_static_gain,
                "available_gain": self.available_gain, "families": [r.to_dict() for r in self.rows]}


def compare_engines(
    profile: Profile,
    traffic: Traffic,
    objective: Objective,
    scales: list[float],
    cfg: SimConfig | None = None,
    families: tuple[str, ...] = FAMILIES,
    trials: int = 60,
    seed: int = 0,
    space_kw: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[LoadResult]:
    """Tune each family at each rate scale; see the module docstring."""
    if objective.multi:
        raise SpecsimError("compare-engines needs one objective, not pareto")
    bad = [f for f in families if f not in FAMILIES]
    if bad or not families:
        raise SpecsimError(f"unknown family {', '.join(bad) or '(none)'} (choose from {', '.join(FAMILIES)})")
    if not scales or any(not s > 0 for s in scales):
        raise SpecsimError("--scales needs positive rate scales, e.g. 0.5,1,2")
    cfg = cfg or SimConfig()
    out: list[LoadResult] = []
    for scale in scales:
        load = traffic.rate_scaled(scale) if scale != 1.0 else traffic
        rows: list[FamilyRow] = []
        base: dict[str, Any] = {}
        evaluator: Any = None
        for fam in families:
            if progress is not None:
                progress(f"load x{scale:g}: tuning family {fam} ({trials} trials)")
            space = SearchSpace.for_profile(profile, family=fam, **(space_kw or {}))
            res = tune(profile, load, objective, space, dataclasses.replace(cfg),
                       StudySettings(n_trials=trials, seed=seed, progress=False), baselines=not base,
                       runners_up=0, prefix_fraction=None)
            if not base:  # the baselines are simulated once per load, with the first family
                base, evaluator = res.baselines, res.evaluator
            best_policy = space.policy(res.best.params, profile)
            value = float(res.best.values[0])
            metrics = dict(res.best.user_attrs.get("metrics") or res.evaluator.summary(best_policy))
            rows.append(FamilyRow(scale, fam, best_policy, value, None, metrics=metrics))
        ev_obj = objective.primary
        off = base[OFF_NAME]
        top = best_baseline({k: v for k, v in base.items() if k != OFF_NAME} or base, evaluator)
        for r in rows:
            r.gain_vs_off = ev_obj.gain(r.value, off.values[0])
        static_gain = ev_obj.gain(top.values[0], off.values[0])
        gains = [g for g in [static_gain, *(r.gain_vs_off for r in rows)] if g is not None]
        avail = max(gains) if gains else None
        for r in rows:
            if avail is not None and avail > 0 and r.gain_vs_off is not None:
                r.share = r.gain_vs_off / avail
        out.append(LoadResult(scale, rows, float(off.values[0]), top.name, float(top.values[0]), static_gain, avail))
    return out


def table_rows(results: list[LoadResult]) -> list[list[str]]:
    """Rows for the console table and the Markdown report."""
    rows = []
    for lr in results:
        for r in lr.rows:
            rows.append([f"x{lr.scale:g}", ENGINE_NAMES[r.family], describe(r.policy), f"{r.value:.4g}",
                         _pct(r.gain_vs_off), _pct(r.share) if r.share is not None else "n/a"])
        rows.append([f"x{lr.scale:g}", "best static K (any engine)", lr.best_static, f"{lr.best_static_value:.4g}",
                     _pct(lr.best_static_gain), "-"])
        rows.append([f"x{lr.scale:g}", "speculation off", "-", f"{lr.off_value:.4g}", "0.0%", "-"])
    return rows


HEADER = ["load", "engine", "best rule found", "objective", "gain vs off", "share of available gain"]


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:+.1%}" if abs(x) < 10 else f"{x:+.0%}"


def markdown(results: list[LoadResult], objective: Objective, title: str) -> str:
    """The comparison as a Markdown report."""
    lines = [f"# {title}", "", f"Objective: {objective.describe()}. Each engine family tuned on its own "
             "rule; the available gain is the best gain over speculation off any family or static K reached.",
             "", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in table_rows(results)]
    return "\n".join(lines) + "\n"


def plot(results: list[LoadResult], objective: Objective, path: Any) -> None:
    """Grouped bars: each family's gain over speculation off at each load, the static best as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fams = [r.family for r in results[0].rows]
    x = np.arange(len(results))
    w = 0.8 / max(1, len(fams))
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(results), 4.2))
    for i, fam in enumerate(fams):
        vals = [100 * (next(r for r in lr.rows if r.family == fam).gain_vs_off or 0.0) for lr in results]
        ax.bar(x - 0.4 + w * (i + 0.5), vals, w, label=ENGINE_NAMES[fam])
    ax.plot(x, [100 * (lr.best_static_gain or 0.0) for lr in results], "k_", markersize=28, mew=2,
            label="best static K")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(x, [f"load x{lr.scale:g}" for lr in results])
    ax.set_ylabel(f"gain over speculation off (%)\n{objective.primary.name}")
    ax.set_title("How much each engine's adaptive knobs capture")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
