"""Summaries of a profile: mean acceptance length per drafter and category, the cost table, a PNG."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from specsim.formats.profile import Profile
from specsim.profiler.replay import mean_acceptance_length


def acceptance_summary(profile: Profile) -> dict[str, dict[str, list[float]]]:
    """drafter -> category -> mean acceptance length (tokens per step) for K = 1..k_max."""
    acc: dict[str, dict[str, list[list[float]]]] = defaultdict(lambda: defaultdict(list))
    for t in profile.acceptance:
        if t.mode == "greedy" and t.r:
            row = [mean_acceptance_length(t.r, t.drafted, k) for k in range(1, t.k_max + 1)]
        elif t.mode == "sampled" and t.p:
            row = [expected_tokens_per_step(t.p, k) for k in range(1, t.k_max + 1)]
        else:
            continue
        acc[t.drafter][t.category or "-"].append(row)
        acc[t.drafter]["ALL"].append(row)
    out: dict[str, dict[str, list[float]]] = {}
    for drafter, cats in acc.items():
        out[drafter] = {}
        for cat, rows in sorted(cats.items(), key=lambda kv: (kv[0] == "ALL", kv[0])):
            n = min(len(r) for r in rows)
            out[drafter][cat] = [round(sum(r[i] for r in rows) / len(rows), 3) for i in range(n)]
    return out


def expected_tokens_per_step(p: list[float], k: int) -> float:
    """Sampled trace: mean over start positions of 1 + sum_j prod_{i<j} p[pos+i] (j = 1..K)."""
    n = len(p)
    if n < 2:
        return 1.0
    total = 0.0
    for pos in range(1, n):
        run, acc = 1.0, 0.0
        for i in range(k):
            run *= p[pos + i] if pos + i < n else 0.0
            acc += run
        total += 1.0 + acc
    return total / (n - 1)


def print_summary(profile: Profile, console: Any | None = None) -> None:
    """Rich tables: the decode cost table, the prefill curve and the acceptance summary."""
    from rich.table import Table

    from specsim.terminal import console as make_console

    con = console or make_console()
    dec = profile.target.decode
    t = Table(title=f"target step ms (median) at context {dec.reference_context}, "
                    f"+{dec.context_ms_per_token:.4f} ms per extra context token x seq")
    t.add_column("B", justify="right")
    for k in dec.ks:
        t.add_column(f"K={k}", justify="right")
    for i, b in enumerate(dec.batch_sizes):
        t.add_row(str(b), *(f"{v:.1f}" for v in dec.step_ms[i]))
    con.print(t)
    pre = profile.target.prefill
    con.print("prefill ms: " + ", ".join(f"{n} tok {ms:.0f}" for n, ms in zip(pre.tokens, pre.step_ms, strict=True)))
    fit = profile.metadata.fit
    if fit.get("mean_abs_rel_error") is not None:
        con.print(f"cost model held-out error: mean {fit['mean_abs_rel_error']:.1%}, "
                  f"max {fit['max_abs_rel_error']:.1%} over {fit['heldout_points']} points")
    for name, spec in profile.drafters.items():
        if spec.cost is not None:
            vals = [v for row in spec.cost.step_ms for v in row]
            con.print(f"drafter {name}: extra {min(vals):.2f}..{max(vals):.2f} ms per step")
    summary = acceptance_summary(profile)
    for drafter, cats in summary.items():
        k_max = max(len(v) for v in cats.values())
        at = Table(title=f"{drafter}: mean acceptance length (tokens per step, expected if sampled) by K")
        at.add_column("category")
        at.add_column("n", justify="right")
        for k in range(1, k_max + 1):
            at.add_column(f"K={k}", justify="right")
        counts: dict[str, int] = defaultdict(int)
        for tr in profile.traces_for(drafter):
            counts[tr.category or "-"] += 1
            counts["ALL"] += 1
        for cat, vals in cats.items():
            at.add_row(cat, str(counts[cat]), *(f"{v:.2f}" for v in vals))
        con.print(at)
    for drafter, check in profile.metadata.acceptance_check.items():
        if not isinstance(check, dict):
            con.print(f"cross-check: {check}")
            continue
        con.print(f"cross-check {drafter} (K={check['k']}, {check['prompts']} prompts): "
                  f"identical outputs {check['identical_outputs']}/{check['prompts']}, "
                  f"max counter gap {check['max_relative_gap']:.2%}, step agreement {check['step_agreement']:.1%}")


def plot_costs(profile: Profile, path: str | Path) -> Path:
    """PNG of step time vs batch size, one line per K."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from specsim.io import atomic_path

    dec = profile.target.decode
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for j, k in enumerate(dec.ks):
        ys = [row[j] for row in dec.step_ms]
        err = [row[j] for row in dec.spread_ms] if dec.spread_ms else None
        ax.errorbar(dec.batch_sizes, ys, yerr=[e / 2 for e in err] if err else None, marker="o",
                    capsize=2, label=f"K={k}")
    ax.set_xlabel("batch size B (decoding sequences)")
    ax.set_ylabel("step time (ms)")
    md = profile.metadata
    ax.set_title(f"{md.target_model.split(' ')[0]} on {md.device} ({md.dtype}), context {dec.reference_context}",
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(path)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return out
