"""At batch size 1 with constant acceptance alpha and cost ratio c, the tuned K is Leviathan's optimum."""

from __future__ import annotations

import pytest

from specsim.profiler.analytic import best_static_k, constant_profile
from specsim.simulator import SimConfig
from specsim.tuner.objectives import Objective
from specsim.tuner.space import SearchSpace
from specsim.tuner.study import StudySettings
from specsim.tuner.tune import tune
from tests.simulator.helpers import spaced_traffic


@pytest.mark.parametrize(("alpha", "c"), [(0.3, 0.2), (0.6, 0.2), (0.6, 0.1), (0.9, 0.05)])
def test_tuned_k_is_the_analytic_optimum_at_batch_1(alpha: float, c: float) -> None:
    expected = best_static_k(alpha, c, 8)
    prof = constant_profile(step_ms=10.0, draft_ratio=c, alpha=alpha, traces=32, trace_length=4096, seed=3)
    traffic = spaced_traffic(n=8, output=3001)  # requests far apart: every step has batch size 1
    space = SearchSpace.for_profile(prof, max_segments=1, threshold=False)  # K in 0..8, one drafter
    result = tune(
        prof, traffic, Objective.parse("mean-tpot"), space, SimConfig(),
        StudySettings(n_trials=20, progress=False, seed=0), prefix_fraction=None, baselines=False,
    )
    trial_k = result.space.policy(result.best.params, prof).max_k
    assert trial_k == expected, f"study's best trial has K={trial_k}, analytic optimum {expected}"
    assert result.policy.max_k == expected
    # the simulation really ran at batch size 1 (prefill-only steps count as batch 0)
    assert 0.99 <= result.policy.provenance.predicted["mean_batch_size"] <= 1.0
    # and distinct K values were actually compared: the search did not just stop at its first guess
    ks = {result.space.policy(t.params, prof).max_k for t in result.study.trials}
    assert len(ks) >= 4
