"""vLLM V1 scheduler rules the fast engine follows, each shown on a small case without vLLM.

Each of these failed on the engine before it was rewritten after vLLM's Scheduler.schedule()
(vllm/v1/core/sched/scheduler.py, 0.32): the exact step-for-step agreement with vLLM itself is in
test_vllm_parity.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from specsim.errors import SpecsimError
from specsim.formats.policy import Policy
from specsim.formats.profile import AcceptanceTrace
from specsim.formats.traffic import Traffic
from specsim.profiler.analytic import constant_profile
from specsim.simulator import SimConfig, simulate
from tests.simulator.helpers import DRAFT, poisson_traffic, static


@pytest.fixture(scope="module")
def prof():
    return constant_profile(step_ms=10, draft_ratio=0.05, alpha=0.7, k_max=4, prefill_ms=5)


def _running_sets(detail: dict[str, np.ndarray], finished_at: dict[int, int]):
    """Per step with preemptions: the requests scheduled and those running before the step."""
    rows, pre = detail["rows"], detail["preemptions"]
    pre_by_step: dict[int, set[int]] = {}
    for _, step, i in pre.tolist():
        pre_by_step.setdefault(step, set()).add(i)
    running: set[int] = set()
    steps = sorted(set(rows[:, 1].tolist()) | set(pre_by_step))
    by_step: dict[int, list[int]] = {}
    for _, step, i, *_ in rows.tolist():
        by_step.setdefault(step, []).append(i)
    for step in steps:
        ids = by_step.get(step, [])
        gone = pre_by_step.get(step, set())
        yield step, set(ids), set(running), gone
        running = (running | set(ids)) - gone - {i for i, s in finished_at.items() if s == step}


def test_no_request_is_admitted_in_a_step_that_preempted(prof) -> None:
    # prompts are admitted when they fit; outputs then outgrow the cache
    traffic = poisson_traffic(80, rate=4.0, inp=50, out=(300, 600), seed=1)
    res = simulate(prof, traffic, static(4), SimConfig(max_num_seqs=16, max_num_batched_tokens=1024,
                                                       num_kv_blocks=150), detail=True)
    assert res.summary["preemptions"] > 20
    rows = res.detail["rows"]
    last = {}
    for _, step, i, *_ in rows.tolist():
        last[i] = step
    checked = 0
    for _step, ids, running, gone in _running_sets(res.detail, last):
        if gone:
            checked += 1
            assert ids <= running, "a step that preempted also admitted a waiting request"
            assert not (ids & gone), "a request preempted in a step was also scheduled in it"
    assert checked > 10


def test_a_prefill_chunk_needs_blocks_for_the_whole_chunk(prof) -> None:
    # A decodes holding 7 of 10 usable blocks when B arrives; B's first chunk (63 tokens, 4 blocks)
    # does not fit in the 3 left: vLLM stops the waiting loop (B waits for A to finish) instead of
    # shrinking the chunk to the 48 tokens that 3 blocks hold
    traffic = Traffic.from_arrays([0.0, 0.05], [100, 100], [40, 5])
    cfg = SimConfig(max_num_seqs=2, max_num_batched_tokens=64, num_kv_blocks=11, reserve_full_isl=False)
    rows = simulate(prof, traffic, static(0, drafter=None), cfg, detail=True).detail["rows"]
    a_rows, b_rows = rows[rows[:, 2] == 0], rows[rows[:, 2] == 1]
    assert int(b_rows[0, 1]) > int(a_rows[-1, 1])  # B first runs after A's last step
    assert int(b_rows[0, 3]) == 64  # with the whole budget, never a chunk cut to the free blocks


def test_decode_rows_beyond_the_budget_keep_their_blocks(prof) -> None:
    # a draft model takes 1 + K tokens and one drafting slot per row: 22 tokens hold three rows of
    # 6 and a fourth row cut to 1 + 2 drafts; rows left out keep their blocks
    traffic = poisson_traffic(30, rate=100.0, inp=8, out=(100, 200), seed=4)
    res = simulate(prof, traffic, static(4), SimConfig(max_num_seqs=12, max_num_batched_tokens=22,
                                                       num_kv_blocks=200))
    st = res.steps
    assert (st["free_blocks"] >= 0).all()  # blocks of rows left out of a step are never handed out
    assert (st["decode_tokens"] + st["prefill_tokens"] <= 22).all()
    dec = st["decoding"] > 0
    assert (st["spec_tokens"][dec] % 4 != 0).any()  # vLLM truncates a row's drafts to the budget


def test_no_chunked_prefill_with_a_prompt_longer_than_the_budget_is_refused(prof) -> None:
    traffic = Traffic.from_arrays([0.0], [100], [5])
    with pytest.raises(SpecsimError, match="max_num_batched_tokens"):
        simulate(prof, traffic, Policy(), SimConfig(max_num_seqs=4, max_num_batched_tokens=99,
                                                    chunked_prefill=False))


def test_k_is_keyed_on_the_scheduled_requests_prefills_included(prof) -> None:
    # one request decodes; a second arrives: in the step that prefills it, 2 requests are scheduled,
    # so vLLM's schedule [[1, 1, 4], [2, ..., 0]] gives K = 0 for the drafts proposed after it
    traffic = Traffic.from_arrays([0.0, 0.2], [16, 16], [200, 3])
    pol = Policy(drafter=DRAFT, k_schedule=[(1, 1, 4)])
    for basis, want in (("scheduled", 0), ("decoding", 4)):
        st = simulate(prof, traffic, pol, SimConfig(k_basis=basis)).steps
        j = int(np.argmax(st["prefill_rows"][1:] > 0)) + 1  # the step that prefills the second request
        assert st["k"][j] == want, basis


def test_lookahead_slots_are_reserved_at_the_static_k(prof) -> None:
    # a draft model reserves K lookahead slots even where the schedule says K = 0 (vLLM issue 49548)
    traffic = poisson_traffic(60, rate=20.0, inp=60, out=(60, 120), seed=5)
    pol = Policy(drafter=DRAFT, k_schedule=[(1, 1, 4), (2, 512, 0)])
    kw = dict(max_num_seqs=8, max_num_batched_tokens=512, num_kv_blocks=70)
    auto = simulate(prof, traffic, pol, SimConfig(**kw, lookahead="auto"))
    none = simulate(prof, traffic, pol, SimConfig(**kw, lookahead="none"))
    assert auto.summary["preemptions"] > none.summary["preemptions"]


def _sampled_profile(prof, drafted: list[int], pj: list[list[float]]):
    n = len(drafted)
    trace = AcceptanceTrace(prompt_id="p", drafter="draft", prompt_length=8, output_length=n, k_max=4,
                            mode="sampled", p=[1.0] * n, pj=pj, drafted=drafted)
    return prof.model_copy(update={"acceptance": [trace]})


def test_sampled_traces_honour_drafted_counts_and_per_token_probabilities(prof) -> None:
    n = 400
    drafted = [0 if pos % 2 else 4 for pos in range(n)]
    pj = [[1.0, 0.0, 1.0, 1.0] if d else [] for d in drafted]
    p2 = _sampled_profile(prof, drafted, pj)
    traffic = Traffic.from_arrays([0.0], [8], [300])
    r = simulate(p2, traffic, static(4), SimConfig()).requests
    # a 4-token draft only at even positions, and each stops after its first token (pj[pos][1] = 0)
    assert r["accepted_tokens"][0] == r["verify_steps"][0]
    assert r["draft_tokens"][0] == 4 * r["verify_steps"][0]
    assert r["decode_steps"][0] > r["verify_steps"][0]  # odd positions verify nothing
