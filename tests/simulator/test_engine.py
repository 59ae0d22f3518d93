"""Engine behaviour: conservation, determinism, load monotonicity, schedules, KV pressure, routing."""

from __future__ import annotations

import numpy as np
import pytest

from specsim.errors import SpecsimError
from specsim.formats.policy import AcceptanceFloor, Policy
from specsim.profiler.analytic import analytic_profile, constant_profile
from specsim.simulator import SimConfig, simulate
from tests.simulator.helpers import DRAFT, poisson_traffic, static


@pytest.fixture(scope="module")
def h100():
    return analytic_profile(target="llama-8b", drafter_model="llama-1b", gpu="h100", k_max=6)


def _draft_policy(schedule, **kw) -> Policy:
    from specsim.formats.policy import DrafterRef

    return Policy(drafter=DrafterRef(name="draft_model", method="draft_model"), k_schedule=schedule, **kw)


def test_every_request_completes_and_tokens_are_conserved(h100) -> None:
    traffic = poisson_traffic(600, rate=40.0, inp=700, out=(1, 400), seed=2, cat="code")
    res = simulate(h100, traffic, _draft_policy([(1, 256, 4)]), SimConfig(num_kv_blocks=3000))
    r = res.requests
    assert res.summary["completed"] == len(traffic)
    assert np.isfinite(r["e2e"]).all()
    assert res.summary["output_tokens"] == int(traffic.output_lengths.sum())
    assert int(res.steps["emitted"].sum()) == int(traffic.output_lengths.sum())
    assert (r["ttft"] <= r["e2e"]).all() and (r["queue_delay"] >= 0).all()
    assert res.summary["preemptions"] > 0  # the small KV cache forced recomputation


def test_same_seed_same_result_and_other_seed_differs(h100) -> None:
    traffic = poisson_traffic(300, rate=30.0, inp=300, out=(10, 300), seed=5)
    pol = _draft_policy([(1, 256, 3)])
    a = simulate(h100, traffic, pol, SimConfig(seed=7))
    b = simulate(h100, traffic, pol, SimConfig(seed=7))
    c = simulate(h100, traffic, pol, SimConfig(seed=8))
    assert a.summary == b.summary
    for key in a.requests:
        np.testing.assert_array_equal(a.requests[key], b.requests[key])
    assert not np.array_equal(a.requests["e2e"], c.requests["e2e"])


def test_mean_latency_never_falls_as_rate_rises(h100) -> None:
    traffic = poisson_traffic(800, rate=1.0, inp=500, out=(20, 400), seed=11)
    pol = _draft_policy([(1, 256, 4)])
    means = [
        float(np.mean(simulate(h100, traffic, pol, SimConfig(rate_scale=s)).requests["e2e"]))
        for s in (1, 4, 16, 32, 64, 128)
    ]
    assert all(b >= a for a, b in zip(means, means[1:], strict=False)), means
    assert means[-1] > 2 * means[0]


def test_schedule_turning_speculation_off_above_b_is_obeyed_every_step(h100) -> None:
    traffic = poisson_traffic(1200, rate=8.0, inp=200, out=(50, 300), seed=3)
    res = simulate(h100, traffic, _draft_policy([(1, 6, 4), (7, 12, 2)]), SimConfig())
    st = res.steps
    dec = st["decoding"] > 0
    b = st["basis_batch"]
    assert (st["k"][dec & (b > 12)] == 0).all()
    assert (st["k"][dec & (b >= 7) & (b <= 12)] == 2).all()
    assert (st["k"][dec & (b <= 6)] == 4).all()
    for regime in (b > 12, (b >= 7) & (b <= 12), b <= 6):  # all three regimes visited
        assert (dec & regime).sum() > 100


def test_decoding_basis_counts_only_decoding_requests(h100) -> None:
    traffic = poisson_traffic(400, rate=60.0, inp=3000, out=(20, 100), seed=4)
    cfg = SimConfig(k_basis="decoding", max_num_batched_tokens=1024)
    res = simulate(h100, traffic, _draft_policy([(1, 4, 4)]), cfg)
    st = res.steps
    assert (st["basis_batch"] == st["decoding"]).all()
    assert (st["k"][(st["decoding"] > 0) & (st["decoding"] <= 4)] == 4).all()


def test_hysteresis_band_reduces_k_flips(h100) -> None:
    traffic = poisson_traffic(1500, rate=5.0, inp=200, out=(50, 300), seed=9)
    sched = [(1, 8, 4), (9, 256, 0)]
    flips = []
    for band in (0, 4):
        st = simulate(h100, traffic, _draft_policy(sched, hysteresis=band), SimConfig()).steps
        k = st["k"][st["decoding"] > 0]
        flips.append(int(np.count_nonzero(np.diff(k))))
    assert flips[0] > 50 and flips[1] < flips[0] / 4


def test_acceptance_floor_stops_drafting_for_poor_requests() -> None:
    prof = constant_profile(step_ms=10, draft_ratio=0.1, alpha=0.1, traces=8)
    traffic = poisson_traffic(50, rate=5.0, inp=16, out=200, seed=1)
    pol = Policy(drafter=DRAFT, k_schedule=[(1, 256, 4)], acceptance_floor=AcceptanceFloor(min_rate=0.5))
    res = simulate(prof, traffic, pol, SimConfig())
    free = simulate(prof, traffic, static(4), SimConfig())
    assert res.summary["draft_tokens"] < 0.1 * free.summary["draft_tokens"]
    assert res.summary["tpot_mean"] < free.summary["tpot_mean"]


def test_closed_loop_keeps_at_most_n_in_flight(h100) -> None:
    traffic = poisson_traffic(200, rate=1000.0, inp=100, out=(20, 200), seed=6)
    res = simulate(h100, traffic, static(0, drafter=None), SimConfig(concurrency=8))
    st = res.steps
    assert st["basis_batch"].max() <= 8 and st["basis_batch"].max() >= 6
    assert res.summary["completed"] == 200
    assert res.summary["queue_mean"] < 0.05  # nobody waits behind 8 running requests


def test_replicas_share_load(h100) -> None:
    traffic = poisson_traffic(600, rate=100.0, inp=500, out=(50, 300), seed=8)
    one = simulate(h100, traffic, static(0, None), SimConfig())
    for router in ("round_robin", "least_loaded"):
        four = simulate(h100, traffic, static(0, None), SimConfig(replicas=4, router=router))
        counts = np.bincount(four.requests["replica"], minlength=4)
        assert counts.min() > 100
        assert four.summary["e2e_mean"] < one.summary["e2e_mean"]


def test_request_too_large_for_kv_cache_is_a_clear_error(h100) -> None:
    traffic = poisson_traffic(5, rate=1.0, inp=5000, out=10)
    with pytest.raises(SpecsimError, match="KV cache"):
        simulate(h100, traffic, static(0, None), SimConfig(num_kv_blocks=100))


def test_k_above_profile_kmax_is_refused(h100) -> None:
    traffic = poisson_traffic(5, rate=1.0, inp=50, out=10)
    with pytest.raises(SpecsimError, match="K=7"):
        simulate(h100, traffic, _draft_policy([(1, 8, 7)]), SimConfig())


def test_unknown_drafter_is_refused(h100) -> None:
    traffic = poisson_traffic(5, rate=1.0, inp=50, out=10)
    with pytest.raises(SpecsimError, match="not in the profile"):
        simulate(h100, traffic, static(2), SimConfig())


def test_policy_engine_knobs_apply_without_changing_the_callers_config(h100) -> None:
    from specsim.formats.policy import EngineKnobs

    traffic = poisson_traffic(200, rate=200.0, inp=100, out=(20, 60), seed=1)
    cfg = SimConfig()
    capped = Policy(engine=EngineKnobs(max_num_seqs=4))
    res = simulate(h100, traffic, capped, cfg)
    assert res.steps["basis_batch"].max() <= 4
    assert cfg.max_num_seqs == 256  # the caller's config is untouched
    free = simulate(h100, traffic, Policy(), cfg)
    assert free.steps["basis_batch"].max() > 4
