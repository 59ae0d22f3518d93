"""Property-based checks: for random traffic, engine limits and policies, invariants always hold."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from specsim.formats.policy import AcceptanceFloor, DrafterRef, Policy
from specsim.formats.traffic import Traffic
from specsim.profiler.analytic import analytic_profile
from specsim.simulator import SimConfig, simulate

PROFILE = analytic_profile(target="llama-8b", drafter_model="llama-1b", gpu="a100", k_max=5, batch_sizes=(1, 4, 16, 64))
DRAFT = DrafterRef(name="draft_model", method="draft_model")


@st.composite
def scenarios(draw):  # noqa: ANN201
    n = draw(st.integers(1, 40))
    gaps = draw(st.lists(st.floats(0, 0.5), min_size=n, max_size=n))
    inp = draw(st.lists(st.integers(1, 600), min_size=n, max_size=n))
    out = draw(st.lists(st.integers(1, 300), min_size=n, max_size=n))
    traffic = Traffic.from_arrays(np.cumsum(gaps), inp, out, [draw(st.sampled_from(["code", "conv", None]))] * n)
    k1 = draw(st.integers(0, 5))
    k2 = draw(st.integers(0, k1))
    b = draw(st.integers(1, 8))
    floor = draw(st.one_of(st.none(), st.floats(0.1, 0.9)))
    policy = Policy(
        drafter=DRAFT,
        k_schedule=[(1, b, k1), (b + 1, 512, k2)],
        hysteresis=draw(st.integers(0, 3)),
        acceptance_floor=AcceptanceFloor(min_rate=floor) if floor else None,
    )
    largest = max(i + o for i, o in zip(inp, out, strict=True)) + 2 * k1  # drafts + the draft model's lookahead
    seqs = draw(st.integers(1, 16))
    cfg = SimConfig(
        max_num_seqs=seqs,
        max_num_batched_tokens=max(seqs, draw(st.integers(8, 2048))),
        num_kv_blocks=draw(st.integers(-(-largest // 16) + 1, 400)),  # + vLLM's null block
        chunked_prefill=True,
        k_basis=draw(st.sampled_from(["scheduled", "running", "decoding"])),
        replicas=draw(st.integers(1, 3)),
        router=draw(st.sampled_from(["round_robin", "least_loaded"])),
        concurrency=draw(st.one_of(st.none(), st.integers(1, 6))),
        seed=draw(st.integers(0, 3)),
    )
    return traffic, policy, cfg


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_invariants(case) -> None:  # noqa: ANN001
    traffic, policy, cfg = case
    res = simulate(PROFILE, traffic, policy, cfg)
    r, s, steps = res.requests, res.summary, res.steps
    assert s["completed"] == len(traffic)  # every request completes
    assert s["output_tokens"] == int(traffic.output_lengths.sum())  # tokens conserved
    assert int(steps["emitted"].sum()) == int(traffic.output_lengths.sum())
    assert (r["queue_delay"] >= 0).all() and (r["ttft"] >= r["queue_delay"]).all()
    assert (r["e2e"] >= r["ttft"]).all()
    assert (r["accepted_tokens"] <= r["draft_tokens"]).all()
    assert (steps["basis_batch"] <= cfg.max_num_seqs).all()
    dec = steps["decoding"]
    assert (steps["decode_tokens"] + steps["prefill_tokens"] <= cfg.max_num_batched_tokens).all()  # budget
    assert (steps["decode_tokens"] <= dec * (1 + policy.max_k)).all()
    assert (steps["scheduled"] <= cfg.max_num_seqs).all()
    if policy.hysteresis == 0:  # without hysteresis, K is exactly the schedule's
        expect = np.array([policy.k_for(int(b)) for b in steps["basis_batch"]])
        assert (steps["k"][dec > 0] == expect[dec > 0]).all()
    if cfg.concurrency is not None:
        assert (steps["basis_batch"] <= cfg.concurrency).all()
