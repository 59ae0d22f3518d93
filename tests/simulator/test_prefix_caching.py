"""Prefix caching: specsim's block pool against vLLM's own KV cache manager, and what it changes."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from specsim.formats.policy import DrafterRef, Policy
from specsim.formats.profile import load_profile
from specsim.formats.traffic import Traffic
from specsim.simulator import SimConfig, simulate
from tests.conftest import REPO

NGRAM = DrafterRef(name="ngram", method="ngram")
needs_vllm = pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed")


@pytest.fixture(scope="module")
def profile():
    return load_profile(REPO / "profiles" / "smollm2-135m-cpu.json")


def conversations(n_conv: int = 20, turns: int = 4, seed: int = 0, gap: tuple[float, float] = (5, 20)) -> Traffic:
    """Multi-turn chats: each turn's prompt is the previous prompt + its answer + a new message."""
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(n_conv):
        length, t = int(rng.integers(30, 200)), float(rng.uniform(0, 30))
        for turn in range(turns):
            out = int(rng.integers(10, 80))
            rows.append((t, length, out, f"c{c}", turn))
            length += out + int(rng.integers(10, 60))
            t += float(rng.uniform(*gap))
    rows.sort(key=lambda r: r[0])
    ts, inp, out, conv, turn = zip(*rows, strict=True)
    return Traffic.from_arrays(ts, inp, out, conversation_ids=conv, turns=turn)


def mooncake(n: int = 60, seed: int = 1) -> Traffic:
    """Requests whose prompts share prefixes, as Mooncake-style chained hash ids of 64-token blocks."""
    rng = np.random.default_rng(seed)
    roots = [list(rng.integers(0, 10**9, 12)) for _ in range(4)]
    ts, inp, out, hashes = [], [], [], []
    for i in range(n):
        root = roots[int(rng.integers(0, 4))]
        shared = int(rng.integers(1, 10))
        own = list(rng.integers(10**9, 2 * 10**9, int(rng.integers(1, 4))))
        blocks = root[:shared] + own
        ts.append(i * 0.3)
        inp.append(len(blocks) * 64 - int(rng.integers(0, 40)))
        out.append(int(rng.integers(5, 60)))
        hashes.append(blocks)
    return Traffic.from_arrays(ts, inp, out, hash_ids=hashes, metadata={"hash_block_size": 64})


@needs_vllm
@pytest.mark.parametrize("case", ["conversations-off", "conversations-k3", "conversations-k3-async", "mooncake-k2",
                                  "prompts-off"])
def test_hits_and_batches_equal_vllms_kv_cache_manager(profile, case: str) -> None:
    from specsim.simulator.parity import check_against_vllm

    kw = dict(max_num_seqs=8, max_num_batched_tokens=256, block_size=16, prefix_caching="on")
    if case.startswith("conversations"):
        tr, blocks = conversations(), 90 if "k3" in case else 120
    elif case.startswith("mooncake"):
        tr, blocks = mooncake(), 150
    else:
        base = conversations(turns=1)
        tr = Traffic.from_arrays(base.timestamps, base.input_lengths, base.output_lengths,
                                 prompt_ids=[f"p{i % 5}" for i in range(len(base))])
        blocks = 200
    pol = Policy() if case.endswith("off") else Policy.static(NGRAM, 3 if "k3" in case else 2)
    cfg = SimConfig(**kw, num_kv_blocks=blocks, async_scheduling="on" if case.endswith("async") else "off")
    rep, fast, ref = check_against_vllm(profile, tr, pol, cfg)
    assert rep.exact and rep.first_difference is None and rep.same_finish_times
    assert (fast.requests["cached_tokens"] == ref.requests["cached_tokens"]).all()
    assert fast.summary["prefix_cached_tokens"] > 0


def test_conversation_turns_reuse_their_history(profile) -> None:
    tr = conversations(gap=(0.5, 1.0))
    cfg = dict(max_num_seqs=16, max_num_batched_tokens=512, block_size=16, num_kv_blocks=4000)
    on = simulate(profile, tr, Policy(), SimConfig(**cfg, prefix_caching="auto"))  # auto: the trace says
    off = simulate(profile, tr, Policy(), SimConfig(**cfg, prefix_caching="off"))
    assert on.summary["prefix_caching"] and not off.summary["prefix_caching"]
    later = np.array([t > 0 for t in tr.turns])
    cached = on.requests["cached_tokens"]
    # with room for everything, a later turn finds at least the full blocks of the previous turn's prompt
    prev = {}
    for i in np.argsort(tr.timestamps, kind="stable"):
        c = tr.conversation_ids[i]
        if c in prev:
            assert cached[i] >= (prev[c] // 16) * 16
        prev[c] = int(tr.input_lengths[i])
    assert (cached[~later] == 0).all() and on.summary["prefix_cache_hit_rate"] > 0.3
    assert on.summary["ttft_mean"] < off.summary["ttft_mean"]


def test_prefix_identities_cover_millions_of_blocks() -> None:
    from specsim.simulator.prefix import block_identities

    rng = np.random.default_rng(3)
    n = 2000
    inp = rng.integers(2000, 20000, n)
    tr = Traffic.from_arrays(np.arange(n) * 0.1, inp, rng.integers(10, 200, n),
                             hash_ids=[list(rng.integers(0, 50, -(-int(x) // 512))) for x in inp],
                             metadata={"hash_block_size": 512})
    ids = block_identities(tr, 16, 8)
    assert ids.source == "hash_ids" and len(ids.ids) > 1_000_000
    # 50 root hashes x 32 offsets per 512-token block at most, plus every request's own output blocks
    own = int(((tr.input_lengths + tr.output_lengths) // 16 - tr.input_lengths // 16).sum())
    assert ids.count <= 50 * 32 + own + n
