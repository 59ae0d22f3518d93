"""Unit tests for the n-gram proposer replay and the accept-run bookkeeping."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specsim.profiler.ngram import accept_run, ngram_trace, propose, propose_bruteforce
from specsim.profiler.replay import r_from_argmax, r_from_steps, relative_gap, walk


def test_propose_takes_tokens_after_longest_match() -> None:
    # suffix [1, 2, 3] occurs at the start; the 3-gram wins over the later 2-gram [2, 3].
    toks = [1, 2, 3, 9, 8, 5, 2, 3, 7, 1, 2, 3]
    assert propose(toks, 2, 3, 3) == [9, 8, 5]
    # with max_n = 2 the earliest [2, 3] is the first one as well
    assert propose(toks, 2, 2, 2) == [9, 8]


def test_propose_earliest_occurrence_among_longest() -> None:
    toks = [5, 6, 1, 5, 6, 2, 5, 6]
    assert propose(toks, 2, 4, 2) == [1, 5]


def test_propose_caps_at_context_end_and_min_n() -> None:
    assert propose([4, 4, 4], 2, 3, 5) == [4]
    assert propose([1, 2, 3, 4], 2, 4, 3) == []  # no repeated n-gram
    assert propose([7], 2, 4, 3) == []
    assert propose([1, 2, 1, 2], 2, 2, 3, max_model_len=5) == [1]


@settings(max_examples=400, deadline=None)
@given(
    toks=st.lists(st.integers(0, 3), min_size=0, max_size=40),
    min_n=st.integers(1, 3),
    extra=st.integers(0, 3),
    k=st.integers(1, 6),
)
def test_kmp_matches_bruteforce(toks: list[int], min_n: int, extra: int, k: int) -> None:
    assert propose(toks, min_n, min_n + extra, k) == propose_bruteforce(toks, min_n, min_n + extra, k)


def test_smaller_k_proposes_a_prefix() -> None:
    rng = random.Random(0)
    for _ in range(200):
        toks = [rng.randrange(4) for _ in range(rng.randrange(2, 50))]
        full = propose(toks, 2, 4, 5)
        for k in range(1, 5):
            assert propose(toks, 2, 4, k) == full[:k]


def test_accept_run() -> None:
    assert accept_run([1, 2, 3], [1, 2, 4, 5]) == 2
    assert accept_run([1, 2], [1, 2, 3]) == 2
    assert accept_run([9], [1]) == 0
    assert accept_run([1, 2, 3], [1]) == 1  # tokens past the known output are not counted


def test_ngram_trace_by_hand() -> None:
    prompt = [10, 11, 12, 13, 10, 11]
    output = [12, 13, 10, 11, 99, 5]
    r, drafted = ngram_trace(prompt, output, 2, 3, 3)
    assert r[0] == 0 and drafted[0] == 0
    # pos 1: context ends [.., 11, 12]; earliest [10, 11, 12] at 0 -> draft [13, 10, 11] = output[1:4]
    assert drafted[1] == 3 and r[1] == 3
    # pos 4: context ends [.., 10, 11]; longest suffix match [13, 10, 11] at 3 -> draft [12, 13, 10]
    # but output[4] = 99, so nothing is accepted
    assert drafted[4] == 3 and r[4] == 0
    assert r == [0, 3, 2, 1, 0, 0]
    assert drafted == [0, 3, 3, 3, 3, 0]


def test_walk_counts_steps() -> None:
    r = [0, 2, 1, 0, 3, 0, 0, 0, 0, 0]
    drafted = [0, 2, 2, 2, 3, 0, 2, 2, 2, 2]
    c = walk(r, drafted, 2, 8)
    # pos 1: d=2 a=2 -> pos 4: d=2 a=2 -> pos 7: d=2 a=0 -> pos 8 stop
    assert c.steps == [(2, 2), (2, 2), (2, 0)]
    assert (c.num_drafts, c.num_draft_tokens, c.num_accepted_tokens) == (3, 6, 4)
    assert c.accepted_per_pos == [2, 2]
    # no-draft positions are steps without a draft
    c = walk([0, 0, 0], [0, 0, 0], 3, 3)
    assert c.steps == [(0, 0), (0, 0)] and c.num_drafts == 0


@pytest.mark.parametrize("k", [1, 2, 4])
def test_walk_accepts_min_k_r(k: int) -> None:
    r = [0] + [4] * 30
    c = walk(r, None, k, 20)
    assert all(a == k for _, a in c.steps)


def test_r_from_argmax() -> None:
    out = [1, 2, 3, 4, 5, 6]
    arg = [1, 2, 3, 0, 5, 6]
    assert r_from_argmax(out, arg, 4) == [0, 2, 1, 0, 2, 1]
    assert r_from_argmax(out, out, 2) == [0, 2, 2, 2, 2, 1]


def test_r_from_steps_roundtrip_when_runs_end_before_k() -> None:
    r = [0, 2, 1, 0, 1, 0, 0, 3, 2, 1, 0]
    c = walk(r, None, 4, len(r))
    back = r_from_steps(c.steps, len(r), 4)
    assert back == r


def test_relative_gap() -> None:
    assert relative_gap(99, 100) == pytest.approx(0.01)
    assert relative_gap(0, 0) == 0.0


def test_sampled_acceptance_probabilities() -> None:
    import math

    from specsim.profiler.acceptance import p_deterministic, p_overlap, tempered

    dist = [(5, math.log(0.6)), (7, math.log(0.3)), (9, math.log(0.1))]
    assert p_deterministic(dist, 5, 1.0) == pytest.approx(0.6)
    assert p_deterministic(dist, 8, 1.0) == 0.0  # outside the top-k
    assert p_deterministic(dist, None, 1.0) == 0.0  # nothing drafted
    cold = tempered(dist, 0.5)
    assert cold[5] == pytest.approx(0.36 / (0.36 + 0.09 + 0.01))
    assert sum(cold.values()) == pytest.approx(1.0)
    assert p_overlap(dist, dist, 1.0) == pytest.approx(1.0)
    other = [(5, math.log(0.2)), (7, math.log(0.8))]
    assert p_overlap(dist, other, 1.0) == pytest.approx(0.2 + 0.3)
