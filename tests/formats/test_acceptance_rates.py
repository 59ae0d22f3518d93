"""Acceptance as users know it: per-position rates (optionally per K) in, per-position acceptance replayed out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from specsim.cli import main
from specsim.errors import SpecsimError
from specsim.formats.acceptance_rates import (
    acceptance_source_text,
    apply_rates,
    conditional,
    measured_rates,
    parse_rates,
)
from specsim.formats.policy import DrafterRef, Policy
from specsim.formats.profile import load_profile
from specsim.formats.traffic import Traffic
from specsim.profiler.analytic import analytic_profile
from specsim.simulator import simulate


@pytest.mark.parametrize("texts,why", [
    (["0.8,0.9"], "cannot rise"), (["1.2"], r"\[0, 1\]"), (["nan"], r"\[0, 1\]"), ([""], "1..64"),
    (["k2=0.8"], "2 positions, 1 rates"), (["k0=0.5"], "kK="), (["x=0.5"], "kK="), (["0.5", "k2=0.5,0.4"], "not both"),
    (["k2=0.5,0.4", "k2=0.6,0.5"], "twice"), (["a,b"], "numbers"),
])
def test_rates_no_engine_reports_are_refused(texts: list[str], why: str) -> None:
    with pytest.raises(SpecsimError, match=why):
        parse_rates(texts)


def test_conditional_rates_follow_the_per_position_counters() -> None:
    assert conditional([0.8, 0.6, 0.3]) == pytest.approx([0.8, 0.75, 0.5])
    assert conditional([0.5, 0.0, 0.0]) == [0.5, 0.0, 0.0]


def _traffic(n: int = 24) -> Traffic:
    return Traffic.from_arrays(np.arange(n) * 10.0, [100] * n, [300] * n)


def test_rates_per_k_are_replayed_per_position_at_each_k() -> None:
    """The traces reproduce the rates as vLLM would count them, and a simulated step drafting K tokens accepts
    1 + sum(rates of K) on average: K = 2 and K = 4 from their own rates, K = 3 from K = 2's (the largest K
    given no bigger than it), K = 1 from the smallest set."""
    prof, changed = apply_rates(analytic_profile(k_max=4), parse_rates(["k2=0.8,0.6", "k4=0.75,0.5,0.3,0.2"]))
    assert changed == ["draft_model"] and prof.drafters["draft_model"].acceptance_source == "rates"
    for k, rates in ((2, [0.8, 0.6]), (4, [0.75, 0.5, 0.3, 0.2])):
        got = measured_rates([t for t in prof.traces_for("draft_model") if t.at_k == k], k)
        assert got == pytest.approx(rates, abs=0.01)
    ref = DrafterRef.from_profile(prof, "draft_model")
    want = {1: 1.8, 2: 2.4, 3: 2.4, 4: 2.75}
    for k, mal in want.items():
        s = simulate(prof, _traffic(), Policy.static(ref, k)).summary
        assert s["mean_acceptance_length"] == pytest.approx(mal, abs=0.03), (k, s["mean_acceptance_length"])


def test_rates_for_every_k_cap_the_drafters_k() -> None:
    prof, _ = apply_rates(analytic_profile(k_max=6), parse_rates(["0.9,0.7,0.5"]))
    d = prof.drafters["draft_model"]
    assert d.k_max == 3 and d.acceptance_rates == {"all": [0.9, 0.7, 0.5]}
    s = simulate(prof, _traffic(), Policy.static(DrafterRef.from_profile(prof, "draft_model"), 3)).summary
    assert s["mean_acceptance_length"] == pytest.approx(3.1, abs=0.03)
    assert acceptance_source_text(prof, "draft_model") == "per-position rates given (every K: 0.9, 0.7, 0.5)"
    assert acceptance_source_text(prof, "ngram").startswith("synthetic")


def test_profile_analytic_takes_rates_and_says_where_acceptance_came_from(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "p.json"
    rc = main(["profile-analytic", "--target", "llama-8b", "--k-max", "4", "--acceptance-rates", "k2=0.77,0.55",
               "--acceptance-rates", "k4=0.7,0.5,0.3,0.2", "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0 and "acceptance of 'draft_model': per-position rates given (K2: 0.77, 0.55; K4:" in text
    prof = load_profile(out)
    assert {t.at_k for t in prof.traces_for("draft_model")} == {2, 4}
    # a profile of an older version carrying per-K traces is not what it says
    doc = json.loads(out.read_text())
    doc["version"] = 2
    for d in doc["drafters"].values():
        d.pop("acceptance_source", None)
        d.pop("acceptance_rates", None)
    out.write_text(json.dumps(doc))
    with pytest.raises(SpecsimError, match="at_k is a version 3 field"):
        load_profile(out)


def test_simulate_names_the_acceptance_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from specsim.formats.profile import save_profile
    from specsim.formats.traffic import save_traffic

    prof, _ = apply_rates(analytic_profile(k_max=4), parse_rates(["0.8,0.6"]))
    save_profile(prof, tmp_path / "p.json")
    save_traffic(_traffic(), tmp_path / "t.jsonl")
    rc = main(["simulate", "--profile", str(tmp_path / "p.json"), "--traffic", str(tmp_path / "t.jsonl"),
               "--policy", "static:2@draft_model", "--no-plot", "--out", str(tmp_path / "o")])
    assert rc == 0
    assert "acceptance of 'draft_model': per-position rates given (every K: 0.8, 0.6)" in capsys.readouterr().out
