"""Each engine's adaptive speculation, step by step: SGLang's EMA slots, TensorRT-LLM's schedule and
permanent acceptance gate, specsim's queue and context rules, and vLLM issue 49548."""

from __future__ import annotations

import numpy as np
import pytest

from specsim.errors import SpecsimError
from specsim.formats.policy import (
    DrafterRef,
    Policy,
    QueueRule,
    SGLangAdaptive,
    SGLangSlot,
    TrtllmSchedule,
)
from specsim.profiler.analytic import analytic_profile, constant_profile
from specsim.simulator import SimConfig, simulate
from tests.simulator.helpers import DRAFT, poisson_traffic


def _k_trace(res) -> np.ndarray:
    st = res.steps
    return st["k"][st["decoding"] > 0]


def test_sglang_steps_climb_with_high_acceptance_and_fall_with_low() -> None:
    pol = Policy(drafter=DRAFT, family="sglang", sglang=SGLangAdaptive())  # defaults: slot 1 starts at 3
    traffic = poisson_traffic(4, rate=0.01, inp=32, out=400, seed=1)  # one request at a time: slot [1, 64)
    high = simulate(constant_profile(10, 0.05, alpha=0.95, k_max=8), traffic, pol, SimConfig())
    low = simulate(constant_profile(10, 0.05, alpha=0.05, k_max=8), traffic, pol, SimConfig())
    kh, kl = _k_trace(high), _k_trace(low)
    assert kh[0] == 3 and kl[0] == 3  # the middle candidate first
    assert set(kh[-50:]) == {7} and set(kl[-50:]) == {1}
    # no change before the warm-up (10 verify batches) and the first interval (5 more)
    assert (kh[:14] == 3).all()


def test_sglang_slots_follow_the_padded_decode_batch() -> None:
    sg = SGLangAdaptive(slots=[SGLangSlot(lo=1, steps=[4]), SGLangSlot(lo=4, steps=[2]), SGLangSlot(lo=8, steps=[1])],
                        cuda_graph_batch_sizes=[1, 2, 4, 8, 16])
    pol = Policy(drafter=DRAFT, family="sglang", sglang=sg)
    res = simulate(constant_profile(10, 0.05, alpha=0.7, k_max=8), poisson_traffic(200, rate=40, inp=32, out=100),
                   pol, SimConfig(k_basis="decoding"))
    st = res.steps
    dec = st["decoding"]
    k = st["k"]
    for lo, hi, want in ((1, 2, 4), (3, 7, 2), (8, 64, 1)):  # 3 pads to 4, 5..7 pad to 8: slot of 8
        sel = (dec >= lo) & (dec <= hi)
        if lo == 3:
            sel = (dec == 3) | (dec == 4)
            want = 2
        if sel.any():
            assert set(k[sel]) == {want}, (lo, hi)
    assert set(k[(dec >= 5) & (dec <= 8)]) <= {1}


def test_trtllm_schedule_uses_inclusive_upper_bounds_and_turns_off_above() -> None:
    t = TrtllmSchedule(max_draft_len=4, draft_len_schedule={4: 4, 8: 2, 32: 1})
    assert [t.k_for(b) for b in (1, 4, 5, 8, 9, 32, 33)] == [4, 4, 2, 2, 1, 1, 0]
    assert TrtllmSchedule(max_draft_len=3, max_concurrency=6).k_for(7) == 0
    with pytest.raises(ValueError, match="mutually exclusive"):
        TrtllmSchedule(max_draft_len=3, max_concurrency=6, draft_len_schedule={6: 3})
    with pytest.raises(ValueError, match="smallest key"):
        TrtllmSchedule(max_draft_len=4, draft_len_schedule={4: 2})


def test_trtllm_acceptance_gate_switches_speculation_off_for_good() -> None:
    pol = Policy(drafter=DRAFT, family="trtllm", trtllm=TrtllmSchedule(
        max_draft_len=4, acceptance_rate_window_size=8, acceptance_rate_threshold=0.3))
    traffic = poisson_traffic(20, rate=2, inp=32, out=200, seed=2)
    low = simulate(constant_profile(10, 0.05, alpha=0.1, k_max=4), traffic, pol, SimConfig())
    high = simulate(constant_profile(10, 0.05, alpha=0.9, k_max=4), traffic, pol, SimConfig())
    kl, kh = _k_trace(low), _k_trace(high)
    first_off = int(np.argmax(kl == 0))
    # the K a step records is the one proposed after it: the 8th verifying step fills the window and
    # the drafts after it are already off (7 when the first logged decode step verifies drafts)
    assert 7 <= first_off <= 12 and (kl[first_off:] == 0).all()  # never back on
    assert (kh == 4).all()


def test_queue_rule_caps_k_while_requests_wait() -> None:
    prof = constant_profile(10, 0.05, alpha=0.7, k_max=4)
    traffic = poisson_traffic(300, rate=200, inp=64, out=60, seed=3)
    pol = Policy(drafter=DRAFT, family="specsim", k_schedule=[(1, 1 << 16, 4)], queue=QueueRule(max_waiting=2, k=1))
    res = simulate(prof, traffic, pol, SimConfig(max_num_seqs=8))
    st = res.steps
    queued = st["waiting"] > 2
    assert queued.any() and (~queued).any()
    assert (st["k"][queued] <= 1).all() and (st["k"][~queued & (st["decoding"] > 0)] == 4).any()


def test_context_schedule_caps_k_for_long_requests() -> None:
    prof = constant_profile(10, 0.05, alpha=0.9, k_max=4)
    traffic = poisson_traffic(2, rate=0.001, inp=40, out=200, seed=4)
    pol = Policy(drafter=DRAFT, family="specsim", k_schedule=[(1, 1 << 16, 4)], context_schedule=[(0, 100, 4),
                                                                                                  (101, 10**6, 1)])
    res = simulate(prof, traffic, pol, SimConfig())
    r = res.requests
    # alpha 0.9: K=4 yields ~4.1 tokens a step, K=1 ~1.9. 60 tokens at K=4 (~15 steps, ~60 drafts), then
    # 140 at K=1 (~74 drafts): ~134 draft tokens a request against ~196 at K=4 throughout (ratio ~0.68)
    full = simulate(prof, traffic, Policy.static(DRAFT, 4), SimConfig()).requests
    ratio = r["draft_tokens"].sum() / full["draft_tokens"].sum()
    assert 0.58 < ratio < 0.78, ratio


def test_family_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="family sglang needs"):
        Policy(drafter=DRAFT, family="sglang")
    with pytest.raises(ValueError, match="own settings"):
        Policy(drafter=DRAFT, family="trtllm", trtllm=TrtllmSchedule(max_draft_len=2), k_schedule=[(1, 4, 2)])
    with pytest.raises(ValueError, match="start at lo 1"):
        SGLangAdaptive(slots=[SGLangSlot(lo=2, steps=[1])])


def test_vllm_issue_49548_k_flips_costs_throughput_and_the_fixes() -> None:
    """8 concurrent clients, schedule [[1, 4, 2], [5, 512, 0]] keyed on the scheduled requests
    (prefills included), lookahead reserved at the static K: K flips 2 <-> 0 step to step."""
    prof = analytic_profile(target="llama-8b", drafter_model="llama-1b", gpu="h100", k_max=4)
    dm = DrafterRef(name="draft_model", method="draft_model")
    traffic = poisson_traffic(160, rate=1000, inp=180, out=(60, 200), seed=5)
    flaky = Policy(drafter=dm, k_schedule=[(1, 4, 2), (5, 512, 0)])
    # NOTE: 8 clients that never pause keep 7 decodes + 1 prefill scheduled, never <= 4, so K would
    # sit at 0; half a second of think time lets the batch move across 4 | 5 as in the issue
    cfg = dict(concurrency=8, think_time=0.5, max_num_seqs=64)
    static = simulate(prof, traffic, Policy.static(dm, 2), SimConfig(**cfg))
    bad = simulate(prof, traffic, flaky, SimConfig(**cfg))
    flips = int(np.count_nonzero(np.diff(_k_trace(bad))))
    assert flips > 30
    assert bad.summary["output_tokens_per_s"] < static.summary["output_tokens_per_s"]
    fixed = simulate(prof, traffic, flaky.model_copy(update={"hysteresis": 4}), SimConfig(**cfg))
    assert int(np.count_nonzero(np.diff(_k_trace(fixed)))) < flips / 4
    with pytest.raises(SpecsimError):
        simulate(prof, traffic, flaky.model_copy(update={"hysteresis": 4}), SimConfig(**cfg, async_scheduling="on"))
