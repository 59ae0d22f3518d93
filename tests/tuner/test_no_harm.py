"""A tuner that does no harm: a tuned policy is emitted over the best baseline only when its predicted
gain exceeds the profile's validated error (metadata.fit['fidelity']['margin'], written by the fidelity
study's --record-margin) or --margin; otherwise the baseline is emitted and one line says so."""

from __future__ import annotations

from specsim.profiler.analytic import constant_profile
from specsim.simulator.config import SimConfig
from specsim.tuner.objectives import Objective
from specsim.tuner.space import SearchSpace
from specsim.tuner.study import StudySettings
from specsim.tuner.tune import tune, validated_margin
from tests.tuner.helpers import poisson


def _run(margin: float | None, recorded: float | None):  # noqa: ANN202
    prof = constant_profile(10, 0.05, 0.7, k_max=4)
    if recorded is not None:
        meta = prof.metadata.model_copy(update={"fit": {**prof.metadata.fit, "fidelity": {"margin": recorded}}})
        prof = prof.model_copy(update={"metadata": meta})
    space = SearchSpace.for_profile(prof, max_batch=32, max_segments=2)
    return tune(prof, poisson(80, 4.0, seed=3), Objective.parse("mean-tpot"), space, SimConfig(max_num_seqs=32),
                StudySettings(n_trials=25, seed=1, progress=False), margin=margin, prefix_fraction=None), prof


def test_the_recorded_fidelity_error_is_the_margin() -> None:
    res, prof = _run(None, 5.0)  # a 500% error: nothing tuned can be trusted over the baseline
    assert validated_margin(prof) == 5.0 and res.margin == 5.0
    assert res.chosen != "tuned" and res.held_back is not None
    assert "within the simulator's validated error 500.0%" in res.held_back and res.chosen in res.baselines
    assert res.policy.provenance.runners_up  # the held-back tuned policy is kept as a runner-up


def test_without_a_margin_the_best_prediction_wins_and_an_explicit_margin_overrides() -> None:
    free, _ = _run(0.0, 5.0)  # --margin 0 overrides the profile's record
    assert free.margin == 0.0 and free.held_back is None
    gain = max(g for g in free.gains.values() if g is not None)
    assert gain > 0
