"""Where speculation helps at low load and hurts at high load, the tuned schedule turns it off above a
batch size, and at every load of a sweep its goodput is at least that of the better baseline."""

from __future__ import annotations

from specsim.simulator import SimConfig
from specsim.tuner.loads import multi_load
from specsim.tuner.objectives import Objective
from specsim.tuner.space import SearchSpace
from specsim.tuner.study import StudySettings
from specsim.tuner.sweep import OFF, TUNED, run_sweep, sweep_policies
from specsim.tuner.tune import tune
from tests.tuner.helpers import poisson, small_profile

LOADS = [4.0, 16.0, 48.0, 96.0, 128.0]
SLO = "ttft=2s,tpot=30ms"


def test_tuned_schedule_switches_off_at_high_batch_and_beats_baselines_at_every_load() -> None:
    # 70B target + 1B drafter on H100 (roofline), acceptance 0.5: K=4 wins at batch 1, K>=1 loses near 150+
    prof = small_profile(alpha=0.5)
    tuning = multi_load(poisson(500, 10.0, seed=1), LOADS)  # one trace visiting every load level
    space = SearchSpace.for_profile(prof, max_batch=256, max_segments=2)
    result = tune(
        prof, tuning, Objective.parse("goodput", SLO), space, SimConfig(),
        StudySettings(n_trials=25, progress=False, seed=1), prefix_fraction=None,
    )
    pol = result.policy
    assert result.chosen == "tuned"
    assert pol.k_for(1) > 0, "speculation should be on at batch size 1"
    off_from = next((b for b in range(1, 257) if all(pol.k_for(x) == 0 for x in range(b, 257))), None)
    assert off_from is not None and off_from <= 200, f"schedule never switches off below 256: {pol.k_schedule}"

    # sweep on a fresh trace of the same shape (other seed), at the tuned-for loads
    sweep = run_sweep(prof, poisson(500, 10.0, seed=7), sweep_policies(prof, pol), LOADS,
                      SimConfig(slo_ttft=2.0, slo_tpot=0.03))
    baselines = [n for n in sweep.rows if n != TUNED]
    assert OFF in baselines and any(n.startswith("static K=4") for n in baselines)
    for i, load in enumerate(LOADS):
        tuned = sweep.rows[TUNED][i]["goodput"]
        better = max(sweep.rows[n][i]["goodput"] for n in baselines)
        assert tuned >= better - 1e-9, f"at {load} req/s tuned goodput {tuned:.3f} < best baseline {better:.3f}"
    # and the sweep really spans both regimes: speculation (static K=4) wins at the lowest load on TPOT
    # and loses to no speculation on goodput at the highest
    k4 = next(n for n in baselines if n.startswith("static K=4"))
    assert sweep.rows[k4][0]["tpot_mean"] < sweep.rows[OFF][0]["tpot_mean"]
    assert sweep.rows[k4][-1]["goodput"] < sweep.rows[OFF][-1]["goodput"]
