"""The custom vLLM proposer's decisions: schedule, hysteresis, acceptance floor, trimming."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from specsim.formats.policy import KController
from specsim.policies.export import POLICY_ENV, policy_env_value
from specsim.policies.proposer import PolicyLogic, PolicyProposer
from tests.policies.conftest import policy


def fake_propose(k: int, n: int, draft: list[int] | None = None) -> list[list[int]]:
    """A drafter that always offers k tokens."""
    return [list((draft or [7, 8, 9, 10, 11])[:k]) for _ in range(n)]


def test_schedule_per_batch_size() -> None:
    logic = PolicyLogic(policy(k_schedule=[[1, 2, 3], [3, 4, 1]]))
    for b, k in ((1, 3), (2, 3), (3, 1), (4, 1), (5, 0)):
        sampled = [[1]] * b
        drafts = logic.step([f"r{i}" for i in range(b)], sampled, lambda kk, b=b: fake_propose(kk, b))
        assert [len(d) for d in drafts] == [k] * b


def test_prefilling_rows_get_no_drafts() -> None:
    logic = PolicyLogic(policy(k_schedule=[[1, 8, 2]]))
    drafts = logic.step(["a", "b"], [[5], []], lambda k: fake_propose(k, 2))
    assert drafts == [[7, 8], []]


def test_hysteresis_matches_kcontroller() -> None:
    p = policy(k_schedule=[[1, 4, 3], [5, 8, 1]], hysteresis=2)
    logic, kc = PolicyLogic(p), KController(p)
    seen = []
    for b in (3, 4, 5, 6, 7, 5, 4, 3, 2, 9, 11, 6):
        drafts = logic.step(None, [[1]] * b, lambda k, b=b: fake_propose(k, b))
        seen.append(len(drafts[0]))
        assert len(drafts[0]) == kc.k(b)
    assert seen[:6] == [3, 3, 3, 3, 1, 1]  # stays at K=3 until B leaves [1, 4+2]


def test_floor_switches_off_low_acceptance_requests_after_warmup() -> None:
    p = policy(k_schedule=[[1, 8, 4]], acceptance_floor={"min_rate": 0.5, "warmup_steps": 3})
    logic = PolicyLogic(p)
    ids = ["good", "bad"]
    logic.step(ids, [[1], [1]], lambda k: fake_propose(k, 2))
    for step in range(5):
        # good accepted all 4 drafts (5 tokens sampled); bad accepted none (1 token).
        sampled = [[1, 2, 3, 4, 5], [1]]
        drafts = logic.step(ids, sampled, lambda k: fake_propose(k, 2))
        assert len(drafts[0]) == 4
        assert len(drafts[1]) == (4 if step < 2 else 0), step  # off once 3 steps were verified
    assert logic.states["bad"].off and not logic.states["good"].off
    assert logic.states["good"].accepted == logic.states["good"].drafted == 20


def test_floor_counts_only_offered_tokens() -> None:
    p = policy(k_schedule=[[1, 8, 4]], acceptance_floor={"min_rate": 0.5, "warmup_steps": 1})
    logic = PolicyLogic(p)
    logic.step(["a"], [[1]], lambda k: [[9]])  # the drafter found only one token
    logic.step(["a"], [[1, 2]], lambda k: [[9]])  # ... and it was accepted
    st = logic.states["a"]
    assert (st.drafted, st.accepted, st.off) == (1, 1, False)


def test_floor_without_request_ids_is_inactive() -> None:
    p = policy(k_schedule=[[1, 8, 2]], acceptance_floor={"min_rate": 0.9, "warmup_steps": 1})
    logic = PolicyLogic(p)
    for _ in range(4):
        assert logic.step(None, [[1]], lambda k: fake_propose(k, 1)) == [[7, 8]]


def test_states_are_pruned() -> None:
    p = policy(k_schedule=[[1, 8, 2]], acceptance_floor={"min_rate": 0.1})
    logic = PolicyLogic(p, max_tracked=4)
    for i in range(10):
        logic.step([f"r{i}"], [[1]], lambda k: fake_propose(k, 1))
    assert len(logic.states) <= 4


def test_policy_proposer_wraps_vllm_ngram(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("vllm.v1.spec_decode.ngram_proposer")
    p = policy(k_schedule=[[1, 1, 3], [2, 4, 1]], hysteresis=0, acceptance_floor={"min_rate": 0.1})
    monkeypatch.setenv(POLICY_ENV, policy_env_value(p))
    cfg = SimpleNamespace(
        speculative_config=SimpleNamespace(prompt_lookup_min=0, prompt_lookup_max=0, num_speculative_tokens=3),
        model_config=SimpleNamespace(max_model_len=64),
        scheduler_config=SimpleNamespace(max_num_seqs=8),
        parallel_config=SimpleNamespace(tensor_parallel_size=1),
    )
    prop = PolicyProposer(cfg)
    assert (prop.ngram.min_n, prop.ngram.max_n) == (2, 4)
    prop.load_model()
    tokens = np.zeros((8, 64), dtype=np.int32)
    seq = [5, 6, 7, 8, 9, 5, 6, 7]  # "5 6 7" repeats: the n-gram drafter proposes "8 9 5"
    tokens[0, : len(seq)] = seq
    tokens[1, : len(seq)] = seq
    n = np.array([len(seq), len(seq)] + [0] * 6, dtype=np.int32)
    assert prop.propose([[7]], n[:1], tokens) == [[8, 9, 5]]  # batch 1: K=3
    assert prop.propose([[7], [7]], n, tokens) == [[8], [8]]  # batch 2: K=1


def test_policy_proposer_needs_the_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(POLICY_ENV, raising=False)
    with pytest.raises(RuntimeError, match=POLICY_ENV):
        PolicyProposer(SimpleNamespace())
