"""The simulator against closed-form results: Leviathan et al.'s speedup and M/D/1 queueing."""

from __future__ import annotations

import numpy as np
import pytest

from specsim.profiler.analytic import constant_profile
from specsim.simulator import SimConfig, simulate
from tests.simulator.helpers import poisson_traffic, spaced_traffic, static


@pytest.mark.parametrize(("alpha", "k", "c"), [(0.7, 4, 0.1), (0.5, 2, 0.05), (0.85, 6, 0.02)])
def test_batch1_tokens_per_step_and_speedup_match_leviathan(alpha: float, k: int, c: float) -> None:
    prof = constant_profile(step_ms=10.0, draft_ratio=c, alpha=alpha, traces=64, trace_length=4096, seed=3)
    traffic = spaced_traffic(n=12, output=4001)
    base = simulate(prof, traffic, static(0), SimConfig())
    spec = simulate(prof, traffic, static(k), SimConfig())
    decode_tokens = spec.requests["output_length"].sum() - len(traffic)  # first token comes from prefill
    tokens_per_step = decode_tokens / spec.requests["decode_steps"].sum()
    expected_tps = (1 - alpha ** (k + 1)) / (1 - alpha)
    assert tokens_per_step == pytest.approx(expected_tps, rel=0.01)
    speedup = base.summary["tpot_mean"] / spec.summary["tpot_mean"]
    expected = (1 - alpha ** (k + 1)) / ((1 - alpha) * (k * c + 1))
    assert speedup == pytest.approx(expected, rel=0.01)
    assert spec.summary["mean_acceptance_length"] == pytest.approx(expected_tps, rel=0.01)


def test_k0_equals_plain_decoding() -> None:
    prof = constant_profile(step_ms=5.0, draft_ratio=0.1, alpha=0.8)
    traffic = poisson_traffic(300, rate=20.0, inp=64, out=(5, 80), seed=1)
    off = simulate(prof, traffic, static(0, drafter=None), SimConfig())
    k0 = simulate(prof, traffic, static(0), SimConfig())
    for key in ("ttft", "tpot", "e2e", "decode_steps"):
        np.testing.assert_array_equal(off.requests[key], k0.requests[key])
    assert k0.summary["draft_tokens"] == 0
    # and plain decoding takes exactly one step per token after the first
    np.testing.assert_array_equal(off.requests["decode_steps"], traffic.output_lengths - 1)


def test_md1_mean_wait_matches_pollaczek_khinchine() -> None:
    step = 10.0  # ms; prefill step and each decode step take the same time
    out = 10
    service = out * step / 1e3  # one prefill step (first token) + out-1 decode steps
    rate = 6.0
    rho = rate * service
    expected_wait = rho * service / (2 * (1 - rho))
    prof = constant_profile(step_ms=step, draft_ratio=0.0, alpha=0.5, prefill_ms=step)
    waits = []
    for seed in range(3):
        traffic = poisson_traffic(8000, rate=rate, inp=16, out=out, seed=seed)
        res = simulate(prof, traffic, static(0, drafter=None), SimConfig(max_num_seqs=1))
        waits.append(np.mean(res.requests["queue_delay"]))
        # service is deterministic: e2e = wait + service for every request
        np.testing.assert_allclose(res.requests["e2e"] - res.requests["queue_delay"], service, rtol=1e-9)
    assert np.mean(waits) == pytest.approx(expected_wait, rel=0.05)
