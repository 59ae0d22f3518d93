"""The line every simulation on an analytic profile prints: its costs are estimates, and how good."""

from __future__ import annotations

from specsim.formats.profile import Profile


def estimated_costs_notice(profile: Profile) -> str | None:
    """'costs are estimated (...)' with the model's held-out error, for analytic profiles; None for measured ones.

    Reads metadata.fit as `specsim profile-analytic` writes it: cost_model, validation_mean_abs_rel_error,
    validation_max_abs_rel_error and table (where the validation table lives).
    """
    meta = profile.metadata
    if meta.source != "analytic":
        return None
    fit = meta.fit or {}
    model = f"analytic profile, {fit['cost_model']}" if fit.get("cost_model") else "analytic profile"
    mean, worst = fit.get("validation_mean_abs_rel_error"), fit.get("validation_max_abs_rel_error")
    try:
        err = f"held-out error {float(mean):.0%} mean, {float(worst):.0%} max"  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return f"costs are estimated ({model}; no validation error recorded)"
    where = fit.get("table")
    return f"costs are estimated ({model}; {err}{': ' + str(where) if where else ''})"


def acceptance_notice(profile: Profile, names: list[str]) -> list[str]:
    """'acceptance of NAME: ...' for each drafter a printed figure depends on: where it came from."""
    from specsim.formats.acceptance_rates import acceptance_source_text

    return [f"acceptance of {n!r}: {acceptance_source_text(profile, n)}" for n in names if n in profile.drafters]
