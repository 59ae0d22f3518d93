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


def _reference_identities(traffic: Traffic, block_size: int, slack_tokens: int) -> np.ndarray:
    """The first implementation (one np.unique over every block), kept as the reference."""
    def dense(keys: np.ndarray) -> np.ndarray:
        return np.unique(keys, return_inverse=True)[1].astype(np.int64)

    inp, out = traffic.input_lengths.astype(np.int64), traffic.output_lengths.astype(np.int64)
    n = len(traffic)
    cap = -(-(inp + out + slack_tokens) // block_size) + 1
    offsets = np.concatenate([[0], np.cumsum(cap)[:-1]]).astype(np.int64)
    total = int(cap.sum())
    full = (inp + out) // block_size
    req = np.repeat(np.arange(n), cap)
    k = np.arange(total) - offsets[req]
    valid = k < full[req]
    cls, a, b = np.zeros(total, dtype=np.int64), req.copy(), k.copy()
    if traffic.conversation_ids is not None:
        codes = dense(np.array([-1 if c is None else hash(c) for c in traffic.conversation_ids], dtype=np.int64))
        has = np.array([c is not None for c in traffic.conversation_ids])
        sel = valid & has[req]
        cls[sel], a[sel] = 1, codes[req[sel]]
    if traffic.hash_ids is not None:
        hbs = int(traffic.metadata.get("hash_block_size", 512))
        lens = np.array([len(h) if h is not None else 0 for h in traffic.hash_ids], dtype=np.int64)
        flat = np.concatenate([np.asarray(h, dtype=np.int64) for h in traffic.hash_ids if h])
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
        last_tok = (k + 1) * block_size - 1
        covered = valid & (last_tok < np.minimum(inp[req], lens[req] * hbs))
        cls[covered] = 2
        a[covered] = flat[starts[req[covered]] + last_tok[covered] // hbs]
        b[covered] = last_tok[covered] % hbs
    if traffic.prompt_ids is not None and traffic.hash_ids is None and traffic.conversation_ids is None:
        codes = dense(np.array([-1 if p is None else hash(p) for p in traffic.prompt_ids], dtype=np.int64))
        has = np.array([p is not None for p in traffic.prompt_ids])
        sel = valid & has[req] & ((k + 1) * block_size <= inp[req])
        cls[sel], a[sel] = 3, codes[req[sel]]
    for c in (1, 2, 3):
        sel = cls == c
        if sel.any():
            a[sel] = dense(a[sel])
    ids = np.full(total, -1, dtype=np.int64)
    ids[valid] = dense((cls << 58) | (a << 24) | b)[valid]
    return ids


@pytest.mark.parametrize("source", ["conversations", "hash_ids", "prompt_ids", "mixed"])
def test_block_identities_partition_blocks_as_the_reference_does(source: str) -> None:
    from specsim.simulator.prefix import block_identities

    rng = np.random.default_rng(11)
    n = 300
    inp = rng.integers(20, 3000, n)
    out = rng.integers(1, 300, n)
    kw: dict = {}
    if source in ("conversations", "mixed"):
        kw["conversation_ids"] = [None if rng.random() < 0.2 else f"c{rng.integers(0, 40)}" for _ in range(n)]
    if source in ("hash_ids", "mixed"):
        kw["hash_ids"] = [list(rng.integers(0, 30, -(-int(x) // 512))) if rng.random() < 0.8 else None for x in inp]
        kw["metadata"] = {"hash_block_size": 512}
    if source == "prompt_ids":
        kw["prompt_ids"] = [None if rng.random() < 0.3 else f"p{rng.integers(0, 20)}" for _ in range(n)]
    tr = Traffic.from_arrays(np.arange(n) * 0.5, inp, out, **kw)
    for bs in (16, 96, 128):
        got = block_identities(tr, bs, 6)
        ref = _reference_identities(tr, bs, 6)
        assert ((got.ids >= 0) == (ref >= 0)).all()
        g, r = got.ids[got.ids >= 0], ref[ref >= 0]
        assert g.max() < got.count
        # the same partition: a one-to-one map between the two labellings
        pairs = np.unique(np.stack([g, r], axis=1), axis=0)
        assert len(pairs) == len(np.unique(g)) == len(np.unique(r)), (source, bs)
