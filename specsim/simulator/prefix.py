"""Block identities for prefix caching: which KV blocks of different requests hold the same tokens.

vLLM hashes every full block of a request's tokens, chained on the block before it, so two
blocks share a hash exactly when the requests agree on every token up to the block's end. The
simulator has no tokens; it gives each full block an identity (a dense integer) with the same
property, from what the trace says about shared content:

- `hash_ids` (Mooncake / Bailian traces): chained hashes of the prompt's blocks of
  `metadata["hash_block_size"]` tokens (512 there). A simulator block is identified by the hash
  block holding its last token and its offset in it, while it lies inside the hashed prompt.
- `conversation_ids`: every turn's prompt repeats the conversation so far (earlier prompts and the
  answers to them), so the turns of one conversation are windows of one token stream: block k of
  any turn is block k of that stream, outputs included.
- `prompt_ids`: requests sending the same prompt share its full prompt blocks.
- anything else is the request's own (it can still hit itself when recomputed after a preemption).

Vectorised with numpy: a 12,000-request trace of 12,000-token prompts has 9 million blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from specsim.errors import SpecsimError
from specsim.formats.traffic import Traffic

ARENA_DTYPE = np.int32
"""Block ids and block identities in the engine's arenas (NOTE: 32 bits halve the arenas, which for
12,000 prompts of 12,000 tokens hold 9 million blocks each; set-up time went mostly to first-touch
page faults on them)."""


@dataclass
class BlockIdentities:
    """Per-request arenas for the compiled engine."""

    offsets: np.ndarray
    """Where each request's blocks start in `ids` (and in the engine's block-id arena)."""
    ids: np.ndarray
    """Identity of each full block (dense, >= 0), -1 in the slack past a request's tokens (ARENA_DTYPE)."""
    count: int
    """Number of distinct identities."""
    source: str
    """What the identities came from: hash_ids, conversations, prompt_ids or none."""


def _dense(keys: np.ndarray) -> tuple[np.ndarray, int]:
    uniq, inv = np.unique(keys, return_inverse=True)
    return inv.astype(np.int64), int(len(uniq))


def block_identities(traffic: Traffic, block_size: int, slack_tokens: int) -> BlockIdentities:
    """Identities of every request's full blocks; each request gets room for
    cdiv(input + output + slack_tokens, block_size) blocks (drafts and lookahead past its tokens)."""
    inp = traffic.input_lengths.astype(np.int64)
    out = traffic.output_lengths.astype(np.int64)
    n = len(traffic)
    cap = -(-(inp + out + slack_tokens) // block_size) + 1
    offsets = np.concatenate([[0], np.cumsum(cap)[:-1]]).astype(np.int64)
    total = int(cap.sum())
    full = (inp + out) // block_size  # full blocks a request can ever have
    # every valid block gets one class: 0 its request's own, 1 its conversation's stream, 2 a hashed
    # prompt block, 3 a shared prompt; within a class an identity is a base (per request, conversation,
    # hash or prompt) plus an offset. Only per-request arrays are built here; one compiled pass
    # (_fill_ids) writes the millions of block identities.
    source = "none"
    conv = getattr(traffic, "conversation_ids", None)
    hashes = getattr(traffic, "hash_ids", None)
    sizes = [0, 0, 0, 0]
    zeros = np.zeros(n, dtype=np.int64)
    conv_base = np.full(n, -1, dtype=np.int64)  # per request: its stream's base, -1 none
    hcov = zeros  # per request: blocks 0..hcov-1 are hashed prompt blocks
    hstart = zeros
    hcode = np.zeros(0, dtype=np.int64)
    hslots = 0  # > 0: hash block size is a multiple of block_size (identity hc * slots + offset)
    hhbs = 1
    prompt_base = np.full(n, -1, dtype=np.int64)
    if conv is not None:
        codes, n_conv = _dense(np.array([-1 if c is None else hash(c) for c in conv], dtype=np.int64))
        has = np.array([c is not None for c in conv], dtype=bool)
        # block k of any turn is block k of the conversation's stream: base + k
        longest = np.zeros(n_conv, dtype=np.int64)
        np.maximum.at(longest, codes[has], full[has])
        base = np.concatenate([[0], np.cumsum(longest)[:-1]])
        conv_base[has] = base[codes[has]]
        sizes[1] = int(longest.sum())
        source = "conversations"
    if hashes is not None:
        hhbs = int(traffic.metadata.get("hash_block_size", 512))
        lens = np.array([len(h) if h is not None else 0 for h in hashes], dtype=np.int64)
        flat = (np.concatenate([np.asarray(h, dtype=np.int64) for h in hashes if h]) if lens.sum()
                else np.zeros(0, np.int64))
        hcode, n_hash = _dense(flat) if len(flat) else (flat, 0)
        hstart = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
        # a block is identified by the hash block holding its last token, while that token lies in
        # the hashed prompt: (k + 1) * bs - 1 < min(inp, lens * hbs), i.e. k < min(...) // bs
        hcov = np.minimum(np.minimum(inp, lens * hhbs) // block_size, full)
        if hhbs % block_size == 0:
            # every offset is (block_size - 1) mod block_size, so offset // block_size numbers them exactly
            hslots = hhbs // block_size
            sizes[2] = n_hash * hslots
        source = "hash_ids"
    pids = traffic.prompt_ids
    if pids is not None and hashes is None and conv is None:
        codes, n_prompts = _dense(np.array([-1 if p is None else hash(p) for p in pids], dtype=np.int64))
        has = np.array([p is not None for p in pids], dtype=bool)
        shared = np.minimum(inp // block_size, full)  # the prompt's full blocks
        longest = np.zeros(n_prompts, dtype=np.int64)
        np.maximum.at(longest, codes[has], shared[has])
        base = np.concatenate([[0], np.cumsum(longest)[:-1]])
        prompt_base[has] = base[codes[has]]
        hcov = np.where(has, shared, 0).astype(np.int64)  # the shared prompt blocks play the hashed ones' part
        sizes[3] = int(longest.sum())
        source = "prompt_ids"
    hwithin = np.zeros(0, dtype=np.int64)
    if hashes is not None and hslots == 0 and int(hcov.sum()):
        # NOTE: blocks straddle hash blocks at varying offsets: number the (hash, offset) pairs densely
        keys = _hash_pair_keys(hcov, hstart, hcode, block_size, hhbs)
        hwithin, sizes[2] = _dense(keys)
    own = full - hcov
    own[conv_base >= 0] = 0  # a conversation's blocks past the hashed prompt are its stream's
    sizes[0] = int(own.sum())
    start = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    if total >= np.iinfo(ARENA_DTYPE).max - 2 or sum(sizes) >= np.iinfo(ARENA_DTYPE).max:
        raise SpecsimError(f"prefix caching: {total:,} KV blocks in the trace's requests, more than the simulator's "
                           f"32-bit block arenas hold; simulate a window of the trace")
    ids = np.empty(total, dtype=ARENA_DTYPE)
    _fill_ids(ids, offsets, cap, full, hcov, conv_base, prompt_base, hstart, hcode, hwithin, hslots, hhbs,
              block_size, start)
    return BlockIdentities(offsets, ids, int(sum(sizes)), source)


@njit(cache=True)
def _hash_pair_keys(hcov: np.ndarray, hstart: np.ndarray, hcode: np.ndarray, bs: int, hbs: int) -> np.ndarray:
    """(hash, offset) keys of every hashed block, request by request, block by block."""
    keys = np.empty(hcov.sum(), dtype=np.int64)
    m = 0
    for r in range(hcov.shape[0]):
        for k in range(hcov[r]):
            last = (k + 1) * bs - 1
            keys[m] = hcode[hstart[r] + last // hbs] * hbs + last % hbs
            m += 1
    return keys


@njit(cache=True)
def _fill_ids(ids: np.ndarray, offsets: np.ndarray, cap: np.ndarray, full: np.ndarray, hcov: np.ndarray,
              conv_base: np.ndarray, prompt_base: np.ndarray, hstart: np.ndarray, hcode: np.ndarray,
              hwithin: np.ndarray, hslots: int, hbs: int, bs: int, start: np.ndarray) -> None:
    """Write each request's block identities: hashed (or shared-prompt) blocks first, then its
    conversation's stream or its own blocks, -1 in the slack."""
    own = 0
    m = 0
    for r in range(offsets.shape[0]):
        off = offsets[r]
        h = hcov[r]
        for k in range(h):
            if prompt_base[r] >= 0:
                ids[off + k] = start[3] + prompt_base[r] + k
            elif hslots > 0:
                last = (k + 1) * bs - 1
                ids[off + k] = start[2] + hcode[hstart[r] + last // hbs] * hslots + (last % hbs) // bs
            else:
                ids[off + k] = start[2] + hwithin[m]
                m += 1
        cb = conv_base[r]
        for k in range(h, full[r]):
            if cb >= 0:
                ids[off + k] = start[1] + cb + k
            else:
                ids[off + k] = own
                own += 1
        for k in range(full[r], cap[r]):
            ids[off + k] = -1


class TokenModel:
    """Token ids consistent with the block identities, for driving vLLM's own KV cache manager:
    two requests get identical tokens at a position exactly where the trace says their content is
    shared (the same conversation stream, the same hashed prompt block, the same prompt), so vLLM's
    chained block hashes hit where specsim's identities do."""

    VOCAB = 990

    def __init__(self, traffic: Traffic) -> None:
        self.inp = traffic.input_lengths.astype(np.int64)
        self.conv = getattr(traffic, "conversation_ids", None)
        self.hashes = getattr(traffic, "hash_ids", None)
        self.hbs = int(traffic.metadata.get("hash_block_size", 512))
        self.pids = traffic.prompt_ids if self.conv is None and self.hashes is None else None

    @classmethod
    def _mix(cls, x: np.ndarray) -> np.ndarray:
        x = (x.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ (x.astype(np.uint64) >> np.uint64(29))
        x = x * np.uint64(0xBF58476D1CE4E5B9)
        return (x % np.uint64(cls.VOCAB)).astype(np.int64) + 10

    def tokens(self, i: int, lo: int, hi: int) -> list[int]:
        pos = np.arange(lo, hi, dtype=np.int64)
        own = self._mix((np.int64(i) * 1_000_003 + pos) * 4 + 0)
        if self.conv is not None and self.conv[i] is not None:
            c = np.int64(abs(hash(self.conv[i])) % (1 << 40))
            return self._mix((c * 1_000_003 + pos) * 4 + 1).tolist()
        if self.hashes is not None and self.hashes[i]:
            h = np.asarray(self.hashes[i], dtype=np.int64)
            inside = pos < min(int(self.inp[i]), len(h) * self.hbs)
            hb = np.minimum(pos // self.hbs, len(h) - 1)
            shared = self._mix(((h[hb] % (1 << 40)) * 1_000_003 + pos % self.hbs) * 4 + 2)
            return np.where(inside, shared, own).tolist()
        if self.pids is not None and self.pids[i] is not None:
            c = np.int64(abs(hash(self.pids[i])) % (1 << 40))
            shared = self._mix((c * 1_000_003 + pos) * 4 + 3)
            return np.where(pos < self.inp[i], shared, own).tolist()
        return own.tolist()
