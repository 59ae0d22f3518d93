"""Acceptance as users know it: per-position rates, optionally per K, turned into acceptance traces.

vLLM's `/metrics` count, per draft position j, the drafts whose j-th token was accepted
(`vllm:spec_decode_num_accepted_tokens_per_pos_total{position=j}`); divided by the drafts
(`..._num_drafts_total`) that is the rate a_j at which position j is accepted. Accepting position j
implies accepting every position before it, so a_0 >= a_1 >= ... and the conditional rate of position
j given the earlier ones is c_j = a_j / a_{j-1}. A drafter run at K = 2 and at K = 4 accepts
differently (its head was trained for some depth, and the engine's tree or chain differs), so rates
may be given per K.

`rate_traces` replays those conditional rates as greedy acceptance traces: for every output position
of every trace a run length drawn from them (seeded), so the simulator reads per-position acceptance,
not one alpha. Rates per K give one set of traces per K (`AcceptanceTrace.at_k`); a step drafting K
tokens reads the set of the largest K no bigger than its own (the smallest set below it).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from specsim.errors import SpecsimError

MAX_POSITIONS = 64
"""Most draft positions a rate list may name."""


def parse_rates(texts: list[str]) -> dict[int | None, list[float]]:
    """`0.8,0.6,0.4` (every K) or `k2=0.77,0.55` (K = 2: exactly 2 rates), one text per option given;
    rates are per-position acceptance as vLLM reports them (non-increasing, in [0, 1])."""
    out: dict[int | None, list[float]] = {}
    for text in texts:
        key: int | None = None
        body = text.strip()
        if "=" in body:
            head, _, body = body.partition("=")
            head = head.strip().lower()
            if not (head.startswith("k") and head[1:].isdigit() and 1 <= int(head[1:]) <= MAX_POSITIONS):
                raise SpecsimError(f"--acceptance-rates {text!r}: write kK=R1,R2,... with K in 1..{MAX_POSITIONS}")
            key = int(head[1:])
        try:
            rates = [float(x) for x in body.split(",") if x.strip()]
        except ValueError:
            raise SpecsimError(f"--acceptance-rates {text!r}: rates must be numbers, e.g. 0.8,0.6,0.4") from None
        check_rates(rates, f"--acceptance-rates {text!r}")
        if key is not None and len(rates) != key:
            raise SpecsimError(f"--acceptance-rates {text!r}: K = {key} drafts {key} positions, {len(rates)} rates "
                               "given")
        if key in out:
            raise SpecsimError(f"--acceptance-rates gives {'every K' if key is None else f'K = {key}'} twice")
        out[key] = rates
    if None in out and len(out) > 1:
        raise SpecsimError("--acceptance-rates: give rates for every K, or per K (k2=..., k4=...), not both")
    return out


def check_rates(rates: list[float], where: str) -> None:
    """Refuse rates that no engine can report: empty, outside [0, 1], increasing with the position."""
    if not rates or len(rates) > MAX_POSITIONS:
        raise SpecsimError(f"{where}: give 1..{MAX_POSITIONS} rates, one per draft position")
    if any(not (math.isfinite(r) and 0.0 <= r <= 1.0) for r in rates):
        raise SpecsimError(f"{where}: rates must lie in [0, 1]")
    if any(b > a + 1e-9 for a, b in zip(rates, rates[1:], strict=False)):
        raise SpecsimError(f"{where}: per-position rates cannot rise with the position (position j is accepted "
                           "only if every earlier one was): give them as vLLM's per-position counters report them")


def conditional(rates: list[float]) -> list[float]:
    """c_j = a_j / a_{j-1}: the chance position j is accepted once every earlier one was."""
    out, prev = [], 1.0
    for a in rates:
        out.append(a / prev if prev > 0 else 0.0)
        prev = a
    return out


def rate_traces(drafter: str, rates: dict[int | None, list[float]], k_max: int, categories: list[str | None],
                per_category: int = 16, length: int = 512, seed: int = 0) -> list[Any]:
    """Greedy traces whose run lengths follow the per-position rates (see module docstring); per-K rates
    give one set per K, all over the same prompts and positions."""
    from specsim.formats.profile import AcceptanceTrace

    out: list[AcceptanceTrace] = []
    for key in sorted(rates, key=lambda k: -1 if k is None else k):
        given = rates[key]
        k = min(len(given), k_max) if key is None else key
        cond = np.asarray(conditional(given[:k]))
        rng = np.random.default_rng(seed)  # the same draws for every K: sets differ only by their rates
        for cat in categories:
            for j in range(per_category):
                u = rng.random((length, k))
                ok = u < cond[None, :]
                runs = np.where(ok.all(axis=1), k, np.argmin(ok, axis=1))
                out.append(AcceptanceTrace(
                    prompt_id=f"{cat or 'any'}-{j}", category=cat, drafter=drafter, prompt_length=256,
                    output_length=length, k_max=k, mode="greedy", r=runs.astype(int).tolist(),
                    at_k=key, source="rates"))
    return out


def rates_text(rates: dict[int | None, list[float]]) -> str:
    """'0.8, 0.6, 0.4' or 'K=2: 0.77, 0.55; K=4: ...' for messages."""
    def one(v: list[float]) -> str:
        return ", ".join(f"{x:g}" for x in v)

    if None in rates:
        return one(rates[None])
    return "; ".join(f"K={k}: {one(v)}" for k, v in sorted((k, v) for k, v in rates.items() if k is not None))


def measured_rates(traces: list[Any], k: int) -> list[float]:
    """Per-position rates a_j (j < k) that greedy traces give at K = k: the fraction of positions whose run
    reaches j + 1 (what vLLM's per-position counters would count at that K)."""
    runs = np.concatenate([np.minimum(np.asarray(t.r, dtype=np.int64), k) for t in traces if t.r])
    return [float(np.mean(runs > j)) for j in range(k)]


RATE_METHODS = ("draft_model", "eagle", "eagle3", "mtp", "medusa", "dflash")
"""Drafters whose acceptance rates may stand in for traces (model-based; n-gram and suffix lookups are
replayed over the text instead)."""


def apply_rates(profile: Any, rates: dict[int | None, list[float]], names: list[str] | None = None,
                seed: int = 0) -> tuple[Any, list[str]]:
    """The profile with the acceptance of `names` (default: every model-based drafter that is no tree)
    replaced by traces of `rates`; returns (profile, the drafters changed). A drafter's k_max becomes the
    largest K the rates cover: beyond it nothing says what it accepts."""
    chosen = names if names is not None else [
        n for n, d in profile.drafters.items()
        if d.method in RATE_METHODS and d.family_kind not in ("tree", "overlapped")]
    if not chosen:
        raise SpecsimError("--acceptance-rates: the profile has no model-based drafter to give rates to "
                           f"(it has: {', '.join(profile.drafters) or 'none'})")
    for n in chosen:
        d = profile.drafters.get(n)
        if d is None:
            raise SpecsimError(f"--acceptance-rates: no drafter {n!r} in the profile")
        if d.family_kind in ("tree", "overlapped"):
            raise SpecsimError(f"--acceptance-rates: {n!r} is a {d.family_kind} drafter; rates describe a chain")
    cats = sorted({t.category for t in profile.acceptance if t.category is not None}) or [None]
    top = max(len(v) for v in rates.values())
    kept = [t for t in profile.acceptance if t.drafter not in chosen]
    drafters = dict(profile.drafters)
    for n in chosen:
        per_k = [k for k in rates if k is not None]
        k_cap = min(top, profile.k_max, drafters[n].k_max) if not per_k else min(max(per_k), profile.k_max)
        usable = {k: v for k, v in rates.items() if k is None or k <= profile.k_max}
        if not usable:
            raise SpecsimError(f"--acceptance-rates: every K given is above the profile's k_max {profile.k_max}")
        kept += rate_traces(n, usable, k_cap, cats, seed=seed)
        given = {("all" if k is None else f"k{k}"): list(v) for k, v in usable.items()}
        drafters[n] = drafters[n].model_copy(update={"acceptance_source": "rates", "acceptance_rates": given,
                                                     "k_max": k_cap})
    return profile.model_copy(update={"drafters": drafters, "acceptance": kept, "version": 3}), chosen


def acceptance_source_text(profile: Any, name: str) -> str:
    """How a drafter's acceptance was obtained, for every printed figure that depends on it."""
    d = profile.drafters.get(name)
    if d is None:
        return "unknown drafter"
    src = d.acceptance_source
    if src == "rates" and d.acceptance_rates:
        shown = "; ".join(f"{k.upper() if k != 'all' else 'every K'}: {', '.join(f'{x:g}' for x in v)}"
                          for k, v in d.acceptance_rates.items())
        return f"per-position rates given ({shown})"
    if src == "live":
        return "a live server's counters"
    if src == "synthetic" or (src is None and profile.metadata.source == "analytic"):
        return "synthetic (an assumed alpha, not measured)"
    sources = sorted({t.source or "measured" for t in profile.traces_for(name)})
    return f"traces measured through the engine ({', '.join(sources)})" if sources else "no traces"
