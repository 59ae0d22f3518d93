"""Drafter families (issue 18): what the simulator replays today and what it refuses, with one line."""

from __future__ import annotations

import numpy as np
import pytest

from specsim.errors import SpecsimError
from specsim.formats.policy import DrafterRef, Policy
from specsim.formats.profile import DrafterFamily, DrafterSpec, Profile
from specsim.profiler.analytic import FAMILY_DRAFTERS, analytic_profile
from specsim.simulator import SimConfig, simulate
from tests.simulator.helpers import poisson_traffic


@pytest.fixture(scope="module")
def profile() -> Profile:
    return analytic_profile(target="llama-8b", drafter_model=None, gpu="h100", k_max=4, eagle=True, ngram=False,
                            families=("heads", "parallel", "block"))


def _ref(profile: Profile, name: str) -> DrafterRef:
    return DrafterRef.from_profile(profile, name)


def test_chain_like_families_simulate_and_cost_as_they_draft(profile: Profile) -> None:
    traffic = poisson_traffic(200, 2.0, 256, 128, seed=3)
    tpot = {}
    for name in ("eagle", "medusa", "p-eagle", "block"):
        res = simulate(profile, traffic, Policy.static(_ref(profile, name), 4), SimConfig(seed=1))
        assert res.summary["completed"] == 200 and res.summary["mean_acceptance_length"] > 1.0
        tpot[name] = res.summary["tpot_mean"]
    # the same acceptance, cheaper drafting: one parallel pass beats K sequential head passes
    assert tpot["p-eagle"] < tpot["eagle"]
    assert tpot["p-eagle"] == pytest.approx(tpot["block"], rel=0.03)  # same cost shape and alpha (other draws)


def test_heads_cost_does_not_grow_with_k_and_their_acceptance_falls(profile: Profile) -> None:
    heads = profile.drafters["medusa"]
    assert heads.family is not None and heads.family.kind == "heads" and heads.family.heads == 4
    assert heads.cost is not None
    for row in heads.cost.step_ms:
        assert row[0] == 0.0 and len(set(np.round(row[1:], 9))) == 1
    par = profile.drafters["p-eagle"].cost
    chain = profile.drafters["eagle"].cost
    assert par is not None and chain is not None
    assert par.step_ms[0][4] < 0.5 * chain.step_ms[0][4]  # batch 1: one pass for 4 tokens, not four
    r_heads = np.concatenate([t.r for t in profile.traces_for("medusa")])
    r_par = np.concatenate([t.r for t in profile.traces_for("p-eagle")])
    assert r_heads.mean() < r_par.mean()  # same first-token alpha, decaying per head position


def test_families_the_simulator_cannot_replay_are_refused(profile: Profile) -> None:
    tree = profile.model_copy(deep=True)
    tree.drafters["eagle"] = DrafterSpec(method="eagle", k_max=4, cost=profile.drafters["eagle"].cost,
                                         family=DrafterFamily(kind="tree", tree_size=60, tree_depth=6))
    with pytest.raises(SpecsimError, match="'eagle' is a tree drafter, which the simulator does not replay yet"):
        simulate(tree, poisson_traffic(10, 1.0, 64, 16), Policy.static(_ref(tree, "eagle"), 2))
    with pytest.raises(SpecsimError, match="unknown drafter family 'tree'"):
        analytic_profile(target="llama-8b", drafter_model=None, families=("tree",))
    assert set(FAMILY_DRAFTERS) == {"heads", "parallel", "block"}


def test_family_contract() -> None:
    with pytest.raises(ValueError, match="a heads drafter needs heads"):
        DrafterFamily(kind="heads")
    with pytest.raises(ValueError, match="tree_depth cannot exceed tree_size"):
        DrafterFamily(kind="tree", tree_size=4, tree_depth=5)
    with pytest.raises(ValueError, match="k_max 5 exceeds the drafter's 4 heads"):
        DrafterSpec(method="medusa", k_max=5, family=DrafterFamily(kind="heads", heads=4))
    assert DrafterSpec(method="ngram", k_max=4).family_kind == "chain"


def test_decaying_acceptance_has_the_expected_mean_run() -> None:
    from specsim.profiler.analytic import synthetic_traces

    a = 0.6 * 0.8 ** np.arange(4)
    expected = sum(np.prod(a[:j + 1]) for j in range(4))  # E[run] = sum_j P(first j+1 accepted)
    traces = synthetic_traces("h", {"chat": 0.6}, 4, per_category=100, length=512, seed=5, decay=0.8)
    r = np.concatenate([t.r for t in traces])
    assert r.mean() == pytest.approx(expected, abs=0.01)
    assert r.max() == 4
    with pytest.raises(SpecsimError, match="decay must be in"):
        synthetic_traces("h", {"chat": 0.6}, 4, decay=0.0)
