"""The fast engine against vLLM's own V1 Scheduler (driven without a model, as vLLM's unit tests
drive it): identical batches step for step, identical preemptions and finish times.

Each case runs in seconds; the module is skipped only when vLLM is not installed.
"""

from __future__ import annotations

import numpy as np
import pytest

from specsim.formats.policy import DrafterRef, Policy
from specsim.formats.profile import load_profile
from specsim.formats.traffic import Traffic
from specsim.profiler.analytic import analytic_profile
from specsim.simulator import SimConfig
from tests.conftest import REPO

pytest.importorskip("vllm")

from specsim.simulator.parity import check_against_vllm  # noqa: E402

NGRAM = DrafterRef(name="ngram", method="ngram")
DRAFT = DrafterRef(name="draft_model", method="draft_model")


@pytest.fixture(scope="module")
def cpu_profile():
    """The committed measured profile: n-gram traces with partial drafts (drafted < K)."""
    return load_profile(REPO / "profiles" / "smollm2-135m-cpu.json")


@pytest.fixture(scope="module")
def gpu_profile():
    return analytic_profile(target="llama-8b", drafter_model="llama-1b", gpu="h100", k_max=4)


def _traffic(n: int, rate: float, inp: tuple[int, int], out: tuple[int, int], seed: int) -> Traffic:
    rng = np.random.default_rng(seed)
    ts = np.cumsum(rng.exponential(1.0 / rate, n))
    return Traffic.from_arrays(ts - ts[0], rng.integers(*inp, n), rng.integers(*out, n), ["coding"] * n)


def _assert_identical(profile, traffic, policy, cfg) -> None:
    rep, fast, ref = check_against_vllm(profile, traffic, policy, cfg)
    assert rep.steps > 20
    assert rep.first_difference is None, (
        f"step {rep.first_difference} differs: fast {rep.rows_a} vs vLLM {rep.rows_b}")
    assert rep.exact and rep.same_finish_times
    assert (fast.steps["free_blocks"] >= 0).all()


def test_kv_starved_static_k_preempts_like_vllm(cpu_profile) -> None:
    traffic = _traffic(60, rate=2.0, inp=(50, 400), out=(20, 120), seed=1)
    cfg = SimConfig(max_num_seqs=16, max_num_batched_tokens=512, num_kv_blocks=64, block_size=16)
    rep, fast, _ = check_against_vllm(cpu_profile, traffic, Policy.static(NGRAM, 4), cfg)
    assert rep.exact and rep.first_difference is None
    assert fast.summary["preemptions"] >= 20  # the case really is KV-starved


def test_switch_off_schedule_near_the_batch_size(cpu_profile) -> None:
    traffic = _traffic(80, rate=2.0, inp=(20, 300), out=(10, 150), seed=2)
    pol = Policy(drafter=NGRAM, k_schedule=[(1, 4, 4), (5, 6, 2)])
    _assert_identical(cpu_profile, traffic, pol, SimConfig(max_num_seqs=12, max_num_batched_tokens=1024))


def test_long_prompts_under_chunked_prefill_and_a_tight_budget(cpu_profile) -> None:
    # decode rows need more than the budget (8 x (1 + 4) > 32): the last row gets fewer drafts
    traffic = _traffic(40, rate=3.0, inp=(200, 1500), out=(5, 60), seed=3)
    cfg = SimConfig(max_num_seqs=8, max_num_batched_tokens=32, num_kv_blocks=400)
    _assert_identical(cpu_profile, traffic, Policy.static(NGRAM, 4), cfg)


def test_speculation_off_with_long_prefill_threshold_and_watermark(cpu_profile) -> None:
    traffic = _traffic(60, rate=2.0, inp=(100, 900), out=(5, 80), seed=4)
    cfg = SimConfig(max_num_seqs=8, max_num_batched_tokens=256, num_kv_blocks=150,
                    long_prefill_token_threshold=100, watermark=0.05)
    _assert_identical(cpu_profile, traffic, Policy(), cfg)


def test_one_token_prompts_are_padded_under_a_static_k(cpu_profile) -> None:
    traffic = _traffic(40, rate=5.0, inp=(1, 3), out=(5, 40), seed=5)
    _assert_identical(cpu_profile, traffic, Policy.static(NGRAM, 3), SimConfig(max_num_seqs=8))


def test_closed_loop_and_replicas_behind_least_loaded(cpu_profile) -> None:
    traffic = _traffic(60, rate=10.0, inp=(20, 200), out=(5, 60), seed=6)
    cfg = SimConfig(max_num_seqs=4, max_num_batched_tokens=256, concurrency=6, replicas=2,
                    router="least_loaded", num_kv_blocks=80)
    _assert_identical(cpu_profile, traffic, Policy(drafter=NGRAM, k_schedule=[(1, 2, 4)]), cfg)


def test_async_scheduling_with_a_draft_model_and_lookahead(gpu_profile) -> None:
    # GPU profile + draft model: vLLM schedules asynchronously and reserves K lookahead slots
    traffic = _traffic(50, rate=20.0, inp=(50, 600), out=(10, 100), seed=7)
    pol = Policy(drafter=DRAFT, k_schedule=[(1, 4, 2), (5, 512, 0)])
    cfg = SimConfig(max_num_seqs=8, max_num_batched_tokens=512, num_kv_blocks=120)
    rep, fast, _ = check_against_vllm(gpu_profile, traffic, pol, cfg)
    assert fast.summary["async_scheduling"] is True
    assert rep.exact and rep.first_difference is None and rep.same_finish_times


def test_async_scheduling_without_speculation(gpu_profile) -> None:
    traffic = _traffic(60, rate=30.0, inp=(50, 600), out=(10, 100), seed=8)
    _assert_identical(gpu_profile, traffic, Policy(), SimConfig(max_num_seqs=8, max_num_batched_tokens=512,
                                                                num_kv_blocks=100))


def test_queue_rule_matches_specsims_scheduler_plugin_in_vllm(cpu_profile) -> None:
    # the oracle runs specsim's PolicyScheduler (what `specsim serve` loads) over vLLM's scheduler:
    # every step's K, capped while more than 2 requests wait, must equal the simulator's
    from specsim.formats.policy import QueueRule

    traffic = _traffic(80, rate=6.0, inp=(20, 200), out=(10, 80), seed=9)
    pol = Policy(drafter=NGRAM, family="specsim", k_schedule=[(1, 64, 4)], queue=QueueRule(max_waiting=2, k=1))
    cfg = SimConfig(max_num_seqs=4, max_num_batched_tokens=512, num_kv_blocks=200)
    rep, fast, _ = check_against_vllm(cpu_profile, traffic, pol, cfg)
    assert rep.exact and rep.first_difference is None and rep.same_finish_times
    st = fast.steps
    capped = (st["waiting"] > 2) & (st["decoding"] > 0)
    assert capped.any() and (st["k"][capped] == 1).all() and (st["k"][~capped & (st["decoding"] > 0)] == 4).any()


def test_queue_rule_under_async_scheduling(gpu_profile) -> None:
    from specsim.formats.policy import QueueRule

    traffic = _traffic(60, rate=40.0, inp=(50, 400), out=(10, 80), seed=10)
    pol = Policy(drafter=DRAFT, family="specsim", k_schedule=[(1, 64, 3)], queue=QueueRule(max_waiting=1, k=0))
    rep, fast, _ = check_against_vllm(gpu_profile, traffic, pol, SimConfig(max_num_seqs=4, max_num_batched_tokens=512,
                                                                          num_kv_blocks=120))
    assert fast.summary["async_scheduling"] is True
    assert rep.exact and rep.first_difference is None and rep.same_finish_times


def test_the_scheduler_class_serve_names_follows_the_engines_async_setting() -> None:
    # `--scheduler-cls specsim.vllmkit.policy_scheduler.PolicyScheduler` names one class; vLLM decides
    # async scheduling per configuration, and the class must build the matching variant
    from vllm.v1.core.sched.async_scheduler import AsyncScheduler

    from specsim.formats.policy import QueueRule
    from specsim.simulator.vllm_oracle import build_scheduler
    from specsim.vllmkit import policy_scheduler

    pol = Policy(drafter=DRAFT, family="specsim", k_schedule=[(1, 64, 3)], queue=QueueRule(max_waiting=1, k=0))
    cfg = SimConfig(max_num_seqs=4, max_num_batched_tokens=512, num_kv_blocks=64, block_size=16)
    sync = build_scheduler(cfg, pol, 64, 2048, is_async=False)
    asyn = build_scheduler(cfg, pol, 64, 2048, is_async=True)
    assert type(sync) is policy_scheduler.PolicyScheduler and not isinstance(sync, AsyncScheduler)
    assert type(asyn) is policy_scheduler.PolicyAsyncScheduler and isinstance(asyn, AsyncScheduler)
    assert sync._queue_rule == asyn._queue_rule == (1, 0)
