"""The search space: parameter encoding of K schedules, thresholds and monotonicity."""

from __future__ import annotations

import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specsim.errors import SpecsimError
from specsim.formats.policy import Policy
from specsim.profiler.analytic import analytic_profile
from specsim.tuner.space import TOP, SearchSpace, describe, log_grid, normalise_schedule

PROFILE = analytic_profile()


def space(**kw) -> SearchSpace:
    return SearchSpace.for_profile(PROFILE, max_batch=256, **kw)


def test_log_grid() -> None:
    assert log_grid(1, 256) == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert log_grid(1, 100) == [1, 2, 4, 8, 16, 32, 64, 100]
    g = log_grid(1, 16, 1.5)
    assert g[0] == 1 and g[-1] == 16 and g == sorted(set(g))
    with pytest.raises(SpecsimError):
        log_grid(1, 16, 1.0)


def test_monotone_schedule_takes_cumulative_minimum() -> None:
    sp = space(max_segments=2)
    p = {"drafter": "draft_model", "k0": 4, "segments": 2, "k1": 6, "b1_idx": 3, "off_above_idx": 9}
    assert sp.schedule(p) == [(1, TOP, 4)]  # K=6 above 8 is clipped to 4 and merged
    sp2 = space(max_segments=2, monotone=False)
    assert sp2.schedule(p) == [(1, 8, 4), (9, TOP, 6)]


def test_threshold_turns_speculation_off_above_a_batch_size() -> None:
    sp = space(max_segments=2)
    p = {"drafter": "draft_model", "k0": 3, "segments": 2, "k1": 1, "b1_idx": 4, "off_above_idx": 6}
    pol = sp.policy(p, PROFILE)
    assert pol.k_schedule == [(1, 16, 3), (17, 64, 1)]
    assert [pol.k_for(b) for b in (1, 16, 17, 64, 65, 256)] == [3, 3, 1, 1, 0, 0]
    assert pol.drafter is not None and pol.drafter.name == "draft_model" and pol.drafter.model == "llama-1b"
    assert "off above" in describe(pol)


def test_k0_zero_is_speculation_off() -> None:
    pol = space().policy({"drafter": "ngram", "k0": 0}, PROFILE)
    assert pol.drafter is None and pol.k_schedule == []


def test_normalise_drops_zero_ranges_and_merges() -> None:
    assert normalise_schedule([(1, 4, 2), (5, 8, 2), (9, 16, 0), (17, 32, 1)]) == [(1, 8, 2), (17, 32, 1)]


def test_profile_without_drafters_is_refused() -> None:
    bare = analytic_profile(drafter_model=None, ngram=False)
    with pytest.raises(SpecsimError, match="no drafters"):
        SearchSpace.for_profile(bare)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_sampled_point_is_a_valid_monotone_policy(data: st.DataObject) -> None:
    sp = space(max_segments=3, max_hysteresis=4, floor=True, max_num_seqs=[64, 256])
    drafter = data.draw(st.sampled_from(sp.drafters))
    segs = data.draw(st.integers(1, 3))
    params: dict = {"drafter": drafter, "k0": data.draw(st.integers(0, sp.k_max)), "segments": segs}
    for i in range(1, segs):
        params[f"k{i}"] = data.draw(st.integers(0, sp.k_max))
        params[f"b{i}_idx"] = data.draw(st.integers(0, len(sp.grid) - 1))
    params["off_above_idx"] = data.draw(st.integers(0, len(sp.grid)))
    params["hysteresis"] = data.draw(st.integers(0, 4))
    params["max_num_seqs"] = data.draw(st.sampled_from([64, 256]))
    pol = sp.policy(params, PROFILE)
    Policy.model_validate(pol.model_dump(by_alias=True))  # round-trips through the contract
    ks = [pol.k_for(b) for b in range(1, 300)]
    assert all(a >= b for a, b in zip(ks, ks[1:], strict=False))
    assert max(ks) <= sp.k_max
    assert pol.engine.max_num_seqs == params["max_num_seqs"]


def test_suggest_with_a_fixed_trial() -> None:
    sp = space(max_segments=2)
    params = {"drafter": "draft_model", "k0": 2, "segments": 1, "off_above_idx": 5}
    got = sp.suggest(optuna.trial.FixedTrial(params))
    assert got == params
    assert sp.policy(got, PROFILE).k_schedule == [(1, 32, 2)]
