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


def test_trees_and_overlapped_drafting() -> None:
    prof = analytic_profile(target="llama-8b", drafter_model="llama-1b", gpu="h100", k_max=4, eagle=True,
                            ngram=False, families=("tree", "overlapped"))
    tree = prof.drafters["eagle-tree"]
    assert tree.family is not None and (tree.family.tree_size, tree.family.tree_depth) == (59, 6)
    assert prof.k_max == 59 and prof.target.decode.ks[-1] == 59  # the target's table covers the whole tree
    r = np.concatenate([t.r for t in prof.traces_for("eagle-tree")])
    assert r.max() <= 6  # a tree accepts at most its depth
    traffic = poisson_traffic(150, 1.0, 256, 128, seed=4)
    ref = DrafterRef.from_profile(prof, "eagle-tree")
    res = {k: simulate(prof, traffic, Policy.static(DrafterRef.from_profile(prof, d), k), SimConfig(seed=2)).summary
           for d, k in (("eagle-tree", 59), ("eagle", 4))}
    assert res[59]["mean_acceptance_length"] > res[4]["mean_acceptance_length"] + 1.0
    with pytest.raises(SpecsimError, match="is a tree with traces for 59 tokens: a policy may draft K=59"):
        simulate(prof, traffic, Policy.static(ref, 8))
    # overlapped: hit x max(verify, draft) + miss x (verify + draft), never more than drafting in series
    ssd = DrafterRef.from_profile(prof, "ssd")
    serial = prof.model_copy(deep=True)
    serial.drafters["ssd"].family = None
    t_over = simulate(prof, traffic, Policy.static(ssd, 4), SimConfig(seed=2)).summary["tpot_mean"]
    t_serial = simulate(serial, traffic, Policy.static(ssd, 4), SimConfig(seed=2)).summary["tpot_mean"]
    assert t_over < 0.9 * t_serial
    from specsim.simulator.costs import StepCostModel

    over, plain = StepCostModel(prof, "ssd", b_max=8), StepCostModel(serial, "ssd", b_max=8)
    tgt = StepCostModel(prof, None, b_max=8)
    for b in (1, 4, 8):
        v, d = tgt.decode_s(b, 4), plain.decode_s(b, 4) - tgt.decode_s(b, 4)
        assert over.decode_s(b, 4) == pytest.approx(0.7 * max(v, d) + 0.3 * (v + d), rel=1e-9)
    measured = prof.model_copy(deep=True)  # a profile timed by a composition model cannot fold the overlap in
    from specsim.formats.profile import CompositionCost

    measured.target.composition = CompositionCost(base_ms=5.0, token_knots=[1, 2], token_ms=[0.0, 0.1])
    with pytest.raises(SpecsimError, match="costs from cost tables only"):
        simulate(measured, traffic, Policy.static(ssd, 4))
    small = analytic_profile(target="llama-8b", drafter_model="llama-1b", gpu="h100", k_max=4, ngram=False,
                             families=("tree", "heads", "overlapped"), trees=((12, 4),), heads=3,
                             hit_rate=0.0)
    assert small.drafters["eagle-tree"].family.tree_size == 12 and small.k_max == 12
    assert max(max(t.r) for t in small.traces_for("eagle-tree")) <= 4
    assert small.drafters["medusa"].family.heads == 3 and small.drafters["medusa"].k_max == 3
    never = StepCostModel(small, "ssd", b_max=8)  # hit rate 0: drafting always in series
    serial_small = small.model_copy(deep=True)
    serial_small.drafters["ssd"].family = None
    assert never.decode_s(4, 4) == pytest.approx(StepCostModel(serial_small, "ssd", b_max=8).decode_s(4, 4))
    with pytest.raises(SpecsimError, match="a tree needs 1 <= depth <= size"):
        analytic_profile(target="llama-8b", drafter_model=None, families=("tree",), trees=((4, 6),))
    with pytest.raises(SpecsimError, match="unknown drafter family 'spiral'"):
        analytic_profile(target="llama-8b", drafter_model=None, families=("spiral",))
    with pytest.raises(SpecsimError, match="an overlapped drafter is a draft model"):
        analytic_profile(target="llama-8b", drafter_model=None, families=("overlapped",))
    assert set(FAMILY_DRAFTERS) == {"heads", "parallel", "block", "tree", "overlapped"}


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


def test_the_tuner_searches_where_each_family_drafts() -> None:
    """Heads are searched up to their count, a tree only on or off by batch size, an overlapped drafter
    against the same model drafting in series."""
    from specsim import api

    prof = analytic_profile(target="llama-8b", drafter_model="llama-1b", gpu="h100", k_max=4, ngram=False,
                            families=("heads", "tree", "overlapped"))
    traffic = poisson_traffic(120, 2.0, 256, 64, seed=6)
    res = api.tune(prof, traffic, "mean-tpot", trials=12, cfg=SimConfig(max_num_seqs=64, seed=0))
    names = {b.policy.drafter.name for b in res.baselines.values() if b.policy.drafter is not None}
    assert {"medusa", "eagle-tree", "ssd", "draft_model"} <= names
    tree_static = [b for b in res.baselines.values()
                   if b.policy.drafter is not None and b.policy.drafter.name == "eagle-tree"]
    assert {b.policy.max_k for b in tree_static} == {59}
    for t in res.study.get_trials(deepcopy=False):  # every tree trial drafted the whole tree or nothing
        pol = res.space.policy(t.params, prof)
        if pol.drafter is not None and pol.drafter.name == "eagle-tree":
            assert {k for _, _, k in pol.k_schedule} <= {59}
    pol = res.space.policy({"drafter": "eagle-tree", "k0": 2, "segments": 1, "off_above_idx": 3}, prof)
    assert {k for _, _, k in pol.k_schedule} == {59}


def test_a_tree_size_per_batch_size() -> None:
    prof = analytic_profile(target="llama-8b", drafter_model=None, gpu="h100", k_max=4, ngram=False, eagle=True,
                            families=("tree",), trees=((8, 3), (24, 4), (59, 6)))
    fam = prof.drafters["eagle-tree"].family
    assert fam is not None and fam.sizes == [8, 24, 59] and prof.drafters["eagle-tree"].static_ks(4) == [8, 24, 59]
    ref = DrafterRef.from_profile(prof, "eagle-tree")
    traffic = poisson_traffic(100, 0.5, 256, 96, seed=8)
    acc = {z: simulate(prof, traffic, Policy.static(ref, z), SimConfig(seed=3)).summary["mean_acceptance_length"]
           for z in (8, 24, 59)}
    assert 1.0 < acc[8] < acc[24] < acc[59] <= 7.0  # bigger, deeper trees accept more
    assert acc[8] <= 4.0  # at most depth 3 plus the bonus token
    mixed = Policy(drafter=ref, k_schedule=[(1, 2, 59), (3, 256, 8)])  # the big tree only while the batch is small
    res = simulate(prof, poisson_traffic(200, 20.0, 256, 96, seed=9), mixed, SimConfig(seed=3)).summary
    assert res["completed"] == 200 and res["mean_acceptance_length"] > 1.0
    with pytest.raises(SpecsimError, match="traces for 8 or 24 or 59 tokens"):
        simulate(prof, traffic, Policy.static(ref, 12))
    # the tuner's K picks a size by rank
    from specsim.tuner.space import SearchSpace

    space = SearchSpace.for_profile(prof, max_batch=64, k_max=3)
    picks = {k: space.policy({"drafter": "eagle-tree", "k0": k, "segments": 1, "off_above_idx": 6}, prof).max_k
             for k in (1, 2, 3)}
    assert picks == {1: 8, 2: 24, 3: 59}
