"""The execution-time predictor and the K controller."""

from __future__ import annotations

import pytest

from specsim.formats.policy import DrafterRef, KController, Policy
from specsim.formats.profile import (
    CostTable,
    DecodeCost,
    DrafterSpec,
    PrefillCurve,
    Profile,
    ProfileMetadata,
    TargetCost,
)
from specsim.simulator.costs import StepCostModel


def _profile() -> Profile:
    return Profile(
        metadata=ProfileMetadata(source="analytic", hardware="test", target_model="t"),
        k_max=2,
        target=TargetCost(
            decode=DecodeCost(
                batch_sizes=[1, 4, 8], ks=[0, 2], step_ms=[[10, 14], [12, 20], [16, 30]],
                reference_context=100, context_ms_per_token=0.01,
            ),
            prefill=PrefillCurve(tokens=[100, 200], step_ms=[20, 30]),
        ),
        drafters={"d": DrafterSpec(method="draft_model", k_max=2, cost=CostTable(
            batch_sizes=[1, 8], ks=[0, 1, 2], step_ms=[[0, 1, 2], [0, 3, 6]]))},
    )


def test_grid_points_are_reproduced_exactly() -> None:
    m = StepCostModel(_profile(), None, b_max=16)
    assert m.decode_s(1, 0) == pytest.approx(0.010)
    assert m.decode_s(4, 2) == pytest.approx(0.020)
    assert m.decode_s(8, 2) == pytest.approx(0.030)


def test_linear_interpolation_in_b_and_k_and_extrapolation() -> None:
    m = StepCostModel(_profile(), None, b_max=16)
    assert m.decode_s(2, 0) == pytest.approx((10 + (12 - 10) / 3) / 1e3)
    assert m.decode_s(1, 1) == pytest.approx(0.012)  # halfway between K=0 and K=2
    assert m.decode_s(4, 1.5) == pytest.approx(0.018)  # fractional K (mixed per-request K)
    assert m.decode_s(12, 0) == pytest.approx(0.016 + 4 * 1e-3)  # beyond the grid: last slope
    assert m.decode_s(40, 0) == pytest.approx(0.016 + 32 * 1e-3)  # beyond the dense table too


def test_drafter_cost_is_added_and_zero_at_k0() -> None:
    m = StepCostModel(_profile(), "d", b_max=16)
    assert m.decode_s(1, 2) == pytest.approx(0.014 + 0.002)
    assert m.decode_s(8, 0) == pytest.approx(0.016)


def test_context_and_prefill_terms() -> None:
    m = StepCostModel(_profile(), None, b_max=16)
    assert m.step_s(1, 0, 0, 100) == pytest.approx(0.010)
    assert m.step_s(1, 0, 0, 1100) == pytest.approx(0.010 + 1000 * 0.01e-3)
    assert m.step_s(0, 0, 150, 0) == pytest.approx(0.025)  # prefill-only step
    # mixed step: decode cost plus prefill cost above its intercept (10 ms here)
    assert m.step_s(1, 0, 200, 100) == pytest.approx(0.010 + 0.030 - 0.010)
    assert m.step_s(1, 0, 0, 0) >= 0.25 * 0.010  # short contexts never make a step nearly free


def test_k_controller_with_and_without_hysteresis() -> None:
    d = DrafterRef(name="d", method="ngram")
    plain = KController(Policy(drafter=d, k_schedule=[(1, 4, 4), (5, 8, 2)]))
    assert [plain.k(b) for b in (1, 4, 5, 8, 9)] == [4, 4, 2, 2, 0]
    hyst = KController(Policy(drafter=d, k_schedule=[(1, 4, 4), (5, 8, 2)], hysteresis=2))
    seq = [hyst.k(b) for b in (3, 5, 6, 7, 5, 4, 3, 2, 6, 7)]
    # stays at K=4 until the batch leaves [1, 4+2], then K=2 until it leaves [5-2, 8+2]
    assert seq == [4, 4, 4, 2, 2, 2, 2, 4, 4, 2]


def test_prefill_pairs_at_their_own_rate_in_the_simulator() -> None:
    """The compiled step cost and the profiler's model agree, with and without a prefill-pair rate,
    and a request whose prompt is mostly cached reaches its first token sooner under a cheaper rate."""
    from pathlib import Path

    import numpy as np

    from specsim.formats.profile import load_profile
    from specsim.formats.traffic import Traffic
    from specsim.profiler.stepfit import KPAIRS, N_FEATURES, PREFILL_KPAIRS, REQUESTS, TOKENS, FittedModel
    from specsim.simulator import SimConfig, simulate

    path = Path(__file__).resolve().parents[2] / "profiles" / "smollm2-135m-cpu.json"
    if not path.is_file():
        pytest.skip("the committed CPU profile is absent")
    base = load_profile(path).model_copy(deep=True)
    comp = base.target.composition
    assert comp is not None
    comp.per_prefill_kpair_ms = None  # one rate for every attention pair, as profiles before the split
    cheap = base.model_copy(deep=True)
    assert cheap.target.composition is not None
    cheap.target.composition.per_prefill_kpair_ms = comp.per_kpair_ms / 4
    for prof in (base, cheap):
        model = FittedModel.from_composition(prof.target.composition)
        for t in (16, 512, 2000):
            f = np.zeros(N_FEATURES)
            f[TOKENS], f[REQUESTS], f[KPAIRS] = t, 1, t * (t + 1) / 2000
            f[PREFILL_KPAIRS] = f[KPAIRS]
            assert StepCostModel(prof, None).prefill_s(t) * 1e3 == pytest.approx(model.predict(f, None), rel=1e-9)
    # two turns of one conversation: the second prompt holds the first and its answer (cached)
    tr = Traffic.from_arrays([0.0, 60.0], [1200, 1400], [8, 8], conversation_ids=["c", "c"], turns=[0, 1])
    ttft = {}
    for name, prof in (("one rate", base), ("cheap prefill pairs", cheap)):
        res = simulate(prof, tr, Policy(), SimConfig(max_num_seqs=8, max_num_batched_tokens=2048))
        assert res.summary["prefix_cached_tokens"] > 1000
        ttft[name] = res.requests["ttft"]
    assert ttft["cheap prefill pairs"][1] < ttft["one rate"][1] * 0.8
