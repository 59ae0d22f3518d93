"""PNG plots (matplotlib, Agg backend): load sweeps and Optuna study reports."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from specsim.errors import SpecsimError  # noqa: E402
from specsim.io import atomic_path, check_output_folder, output_set  # noqa: E402
from specsim.tuner.names import OFF, TUNED  # noqa: E402
from specsim.tuner.space import TOP  # noqa: E402

if TYPE_CHECKING:
    from specsim.formats.policy import Policy


class SweepResult(Protocol):
    """What the load-sweep plots read (`specsim.tuner.sweep.SweepResult` has it; named here so that
    plots does not import the sweep, which imports plots to draw itself)."""

    rates: list[float]
    policies: dict[str, Policy]
    rows: dict[str, list[dict[str, float]]]
    k_by_batch: dict[str, dict[int, float]]
    slo: dict[str, float]
    attainment: float
    max_num_seqs: int
    findings: dict[str, Any]

    def speedup(self, name: str) -> list[float]: ...


PALETTE = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")
OFF_COLOR = "tab:gray"


def colors(names: list[str]) -> dict[str, str]:
    """One colour per series, the same in every figure of a run: the tuned policy black, speculation off
    grey, the others from PALETTE in the order the policies are listed."""
    out: dict[str, str] = {}
    rest = iter(PALETTE * (1 + len(names) // len(PALETTE)))
    for n in names:
        out[n] = "black" if n == TUNED else OFF_COLOR if n == OFF else next(rest)
    return out


def _style(name: str, palette: dict[str, str]) -> dict[str, object]:
    """The tuned policy drawn thick and on top, so baselines it coincides with stay readable."""
    base: dict[str, object] = {"color": palette.get(name, "black")}
    return {**base, "lw": 2.4, "zorder": 5} if name == TUNED else {**base, "lw": 1.3, "alpha": 0.9}


def _readable_log(axis: Any) -> None:
    """Ticks at 1, 2 and 5 per decade written as plain numbers (0.5, 1, 2, 5, 10), not as powers of ten."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _legend_below(fig: plt.Figure, handles: list[Any], labels: list[str]) -> None:
    """One legend for the figure, under its panels, so that it never covers data."""
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, -0.02))


def _save(fig: plt.Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_latency_vs_load(res: SweepResult, path: Path) -> Path:
    """p99 TPOT, p99 TTFT, goodput and SLO attainment against offered load, one line per policy."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 8.6))
    palette = colors(list(res.rows))
    panels = (
        ("tpot_p99", "p99 TPOT (ms)", 1e3, True),
        ("ttft_p99", "p99 TTFT (s)", 1.0, True),
        ("goodput", "goodput (req/s in SLO at offered load)", 1.0, False),
        ("slo_attainment", "SLO attainment", 1.0, False),
    )
    for ax, (key, label, scale, logy) in zip(axes.flat, panels, strict=True):
        for name, rows in res.rows.items():
            ax.plot(res.rates, [r.get(key, math.nan) * scale for r in rows], marker="o", label=name,
                    **_style(name, palette))
        ax.set_xscale("log")
        _readable_log(ax.xaxis)
        if logy:
            ax.set_yscale("log")
            _readable_log(ax.yaxis)
        ax.set_xlabel("offered load (req/s)")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    if "tpot" in res.slo:
        axes[0, 0].axhline(res.slo["tpot"] * 1e3, color="dimgrey", ls="--", lw=1, label="SLO limit (dashed)")
    if "ttft" in res.slo:
        axes[0, 1].axhline(res.slo["ttft"], color="dimgrey", ls="--", lw=1, label="SLO limit (dashed)")
    axes[1, 1].axhline(res.attainment, color="dimgrey", ls="--", lw=1, label="SLO limit (dashed)")
    axes[1, 0].plot(res.rates, res.rates, color="dimgrey", ls=":", lw=1, label="offered load (dotted)")
    handles, labels = [], []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    _legend_below(fig, handles, labels)
    fig.suptitle("latency and goodput vs offered load")
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    return _save(fig, path)


def plot_speedup_vs_load(res: SweepResult, path: Path) -> Path:
    """Speculation's TPOT speedup over no speculation against load, crossing 1.0 where it stops paying."""
    fig, ax = plt.subplots(figsize=(8, 5.6))
    palette = colors(list(res.policies))
    for name in res.policies:
        if name == OFF:
            continue
        ax.plot(res.rates, res.speedup(name), marker="o", label=name, **_style(name, palette))
        stop = res.findings.get(name, {}).get("speculation_stops_paying_qps")
        if stop is not None:
            ax.axvline(stop, ls=":", lw=1, color=palette[name],
                       label=f"{name}: stops paying at {stop:.3g} req/s (dotted)")
    ax.axhline(1.0, color="dimgrey", lw=1, label="no gain (speedup 1)")
    ax.set_xscale("log")
    _readable_log(ax.xaxis)
    ax.set_xlabel("offered load (req/s)")
    ax.set_ylabel("speedup (mean TPOT off / mean TPOT policy)")
    ax.grid(True, which="both", alpha=0.3)
    _legend_below(fig, *ax.get_legend_handles_labels())
    ax.set_title("where speculation stops paying (speedup crosses 1.0)")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return _save(fig, path)


def plot_k_vs_batch(res: SweepResult, path: Path) -> Path:
    """Each policy's K schedule over batch size (lines) and the K observed per batch size (dots)."""
    fig, ax = plt.subplots(figsize=(8, 5.6))
    palette = colors(list(res.policies))
    top = max(res.max_num_seqs, 2)
    bs = list(range(1, top + 1))
    for name, pol in res.policies.items():
        if name == OFF:
            continue
        ks = [pol.k_for(b) for b in bs]
        ax.step(bs, ks, where="post", label=f"{name} schedule", **_style(name, palette))
        obs = res.k_by_batch.get(name, {})
        if obs:
            xs = sorted(obs)
            ax.scatter(xs, [obs[b] for b in xs], s=8, alpha=0.5, color=palette[name],
                       label=f"{name}: mean K observed")
    ax.set_xscale("log")
    _readable_log(ax.xaxis)
    ax.set_xlabel("batch size (K basis)")
    ax.set_ylabel("K (0 = speculation off)")
    ax.set_xlim(1, min(top, TOP))
    kmax = max([p.max_k for p in res.policies.values()] + [1])
    ax.set_ylim(-0.3, kmax + 0.5)
    ax.grid(True, which="both", alpha=0.3)
    _legend_below(fig, *ax.get_legend_handles_labels())
    ax.set_title("K chosen vs batch size (dots: mean K observed in the sweep)")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return _save(fig, path)


REPORT_FILES = ("optimization_history.png", "param_importances.png", "pareto_front.png")
"""Every file `specsim report --out` writes: one report's set."""


def study_report(storage_url: str, study_name: str, out: Path, force: bool = False) -> list[Path]:
    """Optuna's optimisation history and parameter importances as PNGs (matplotlib backend)."""
    import warnings

    import optuna
    import optuna.visualization.matplotlib as ovm

    from specsim.tuner.storage import open_storage

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="optuna")
    check_output_folder(out, force)
    storage = open_storage(storage_url, create=False)
    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
        raise SpecsimError(f"study {study_name!r} not found in {storage_url} (it holds: {', '.join(names) or 'none'})"
                           ) from None
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        raise SpecsimError(f"study {study_name!r} has no complete trial to plot")
    multi = len(study.directions) > 1
    target = (lambda t: t.values[0]) if multi else None
    names = [m for m in (study.user_attrs.get("specsim_task") or {}).get("objective", {}).get("metrics", [])]
    tname = names[0] if names else "objective"
    with output_set(out, REPORT_FILES, force=force) as files:
        ax = ovm.plot_optimization_history(study, target=target, target_name=tname)
        _save(ax.figure, files.path("optimization_history.png"))
        if len({tuple(sorted(t.params.items())) for t in complete}) >= 2:
            try:
                # importance evaluators rank low target values as good: negate maximised objectives
                sign = -1.0 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1.0
                ax = ovm.plot_param_importances(study, target=lambda t: sign * t.values[0],
                                                target_name=f"-{tname}" if sign < 0 else tname)
                _save(ax.figure, files.path("param_importances.png"))
            except (RuntimeError, ValueError, ZeroDivisionError) as exc:  # e.g. a single distinct param
                print(f"parameter importance skipped: {exc}")
        if multi:
            ax = ovm.plot_pareto_front(study, target_names=names or None)
            _save(ax.figure, files.path("pareto_front.png"))
    return [files.final(n) for n in REPORT_FILES if files.final(n).exists()]
