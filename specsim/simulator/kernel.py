"""The engine's hot loop, compiled with numba: vLLM V1's scheduler, step costs, acceptance, metrics.

One call of `run_steps` runs engine iterations of one replica on its own clock until the next
external event (an arrival the router will deliver, or a finish a closed-loop client waits for).
Every iteration does what vLLM 0.32's engine core does in `EngineCore.step` + `post_step`:

1. `schedule_step`: vLLM V1's `Scheduler.schedule()` (vllm/v1/core/sched/scheduler.py) for a
   decoder-only model with full attention, FCFS, no KV connector: the RUNNING loop in admission
   order (each request asks for `num_tokens + len(spec) - num_computed`, capped by the token
   budget and max_model_len; `allocate_slots` fails -> preempt the tail of `running`, stop when
   the victim is the request itself), then, only if nothing was preempted, the WAITING loop
   (FCFS, `max_num_seqs`, whole-prompt KV check `scheduler_reserve_full_isl`, chunked prefill or
   stop, the static-K decode padding of 1-token admissions).
2. The step's duration from the profile's cost model (`step_seconds`).
3. `finish_step`: vLLM's `update_from_output`: rows whose computed tokens reached the request's
   tokens sample `accepted + 1` tokens (rejected drafts roll `num_computed` back), finished
   requests free their blocks; then the drafter proposes for every sampled row with K from the
   policy, keyed on the step's scheduled requests (`dynamic_sd_lookup[len(num_scheduled_tokens)]`)
   or another basis.

State lives in numpy columns (`Req`, `Rep`) shared with Python; `NUMBA_DISABLE_JIT=1` runs the same
code as plain Python for debugging. The vLLM scheduler itself can replace step 1
(`specsim.simulator.vllm_oracle`), which is how this module is checked.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from numba import njit

from specsim.formats.policy import floor_trips
from specsim.simulator.borrowed import borrowed

floor_trips_c = njit(cache=True)(floor_trips)
"""The acceptance floor's rule (formats.policy.floor_trips), compiled for the step loop."""

# ---- per-replica integer state (Rep.ri) -------------------------------------------------------
RI_NRUN = 0  # requests in `running`
RI_WHEAD = 1  # ring-buffer head of `waiting`
RI_WLEN = 2  # requests waiting
RI_FREE = 3  # free KV blocks
RI_HYST = 4  # hysteresis: index of the K range in force, -1 none
RI_LOGN = 5  # step-log rows used
RI_DETN = 6  # detail rows used
RI_PREN = 7  # preemption-detail rows used
RI_STEPS = 8  # steps run
RI_NFIN = 9  # finished requests written to `Rep.fin` since the caller last read them
RI_MAXSTEP = 10  # debug: stop after this many steps (<= 0: no limit)
# async scheduling: the step in flight (scheduled, executing, its output not yet processed)
RI_PENDN = 11  # its rows, -1 when none is in flight
RI_PENDBUF = 12  # which Rows buffer holds it (0: rows, 1: rows2)
RI_PM = 13  # 9 ints of its log record: dec, k, dec_tok, spec_tok, pre_tok, n_pre, basis, pre_rows, n_rows
RI_KLAST = 22  # K set by the last async schedule
RI_BLAST = 23  # the batch size that K was looked up at
# prefix caching: free blocks are a stack of unhashed ids (vLLM prepends them: reused first) followed
# by an LRU list of cached ones (vLLM appends them: evicted oldest first)
RI_STACK = 24  # unhashed free blocks on the stack
RI_LRU_HEAD = 25
RI_LRU_TAIL = 26
RI_HIT_TOKENS = 27  # prefix-cache hit tokens at admissions (vLLM's PrefixCacheStats.hits)
RI_QUERY_TOKENS = 28  # tokens of those admissions (PrefixCacheStats.queries)
RI_STEPACC = 29  # accepted draft tokens of the step last verified (for the log)
RI_STEPDROWS = 30  # rows that verified drafts in it
RI_SIZE = 31
# ---- per-replica float state (Rep.rf) ---------------------------------------------------------
RF_CLOCK = 0
RF_BUSY = 1
RF_ITL_SUM = 2
RF_ITL_N = 3
RF_EXTRAP = 4  # steps whose batch lay beyond the cost table's measured range
RF_PDT = 5  # duration of the step in flight
RF_PCTX = 6  # its decode context
RF_SIZE = 7

# ---- integer parameters (Params.pi) -----------------------------------------------------------
P_MAXSEQS = 0
P_TOKBUDGET = 1  # vLLM max_num_scheduled_tokens
P_INBUDGET = 2  # vLLM max_num_batched_tokens (the input budget, draft slots included)
P_DRAFTSLOTS = 3  # speculative_config.max_num_new_slots_for_drafting
P_BS = 4  # block size
P_LOOKAHEAD = 5  # vllm_config.num_lookahead_tokens
P_MAXLEN = 6  # max_model_len
P_CHUNKED = 7
P_FULLISL = 8  # scheduler_reserve_full_isl
P_WATERMARK = 9  # watermark blocks
P_LONGTHR = 10  # long_prefill_token_threshold
P_KBASIS = 11  # 0 scheduled (vLLM), 1 decoding rows, 2 running
P_STATICK = 12  # > 0: a static K (vLLM without a dynamic schedule: pads 1-token admissions)
P_HYSTBAND = 13
P_FLOORWARM = 14
P_ACCMODE = 15  # 0 no speculation, 1 greedy traces, 2 sampled per-draft-token, 3 sampled legacy p[pos+j]
P_HASDRAFTED = 16
P_DETAIL = 17  # record every scheduled row (parity checks)
P_KMAX = 18
P_STOPFIN = 19  # return after a step that finished a request (closed loop)
P_ASYNC = 20  # vLLM async scheduling: step t+1 is formed before step t's output is processed
P_PREFIX = 21  # prefix caching (block identities in Req.arena_id)
P_SIZE = 22
PF_FLOORRATE = 0  # acceptance floor min rate (0 = no floor)
PF_SIZE = 1

# ---- adaptive families (Params.fam / famf, Rep.fsi / fsf) --------------------------------------
FAM_SCHEDULE = 0  # vLLM / specsim: K from the batch-size schedule (+ hysteresis band)
FAM_SGLANG = 1  # SGLang --speculative-adaptive: per-slot EMA of accepted drafts, candidate steps
FAM_TRTLLM = 2  # TensorRT-LLM: draft_len_schedule (in klookup) + permanent acceptance-rate gate
F_FAMILY = 0
F_QMAX = 1  # specsim queue rule: above this many waiting requests K is capped (-1: no rule)
F_QK = 2
F_SLOTS = 3  # SGLang slots
F_INTERVAL = 4
F_WARMUP = 5
F_WINDOW = 6  # TensorRT-LLM acceptance_rate_window_size (0: no gate)
F_INIT = 7  # SGLang --speculative-num-steps (SGLangAdaptive.start_steps): a slot starts there when a candidate
F_SIZE = 8
FF_ALPHA = 0  # SGLang EMA alpha
FF_THRESHOLD = 1  # TensorRT-LLM acceptance_rate_threshold
FF_SIZE = 4
# Rep.fsi: SGLang per slot [current candidate index, verify batches] at 2 * slot; then scalars
FS_PSLOT = 120  # slot whose step count proposed the drafts now in flight (-1 none)
FS_GATE_N = 121  # TensorRT-LLM: samples recorded
FS_GATE_OFF = 122  # 1 once speculation is off for good
FS_SIZE = 128
MAX_SLOTS = 60

K_BASIS = {"scheduled": 0, "decoding": 1, "running": 2}

# ---- step log columns (Log.li, Log.lf) --------------------------------------------------------
L_SCHED = 0  # requests scheduled (vLLM's K basis)
L_DEC = 1  # decode rows (requests past their prefill)
L_K = 2  # K the schedule gave for the drafts proposed after this step
L_DECTOK = 3  # tokens of decode rows (1 + drafts each)
L_SPECTOK = 4  # draft tokens verified
L_PRETOK = 5  # prefill tokens (prompt chunks and recomputation)
L_EMIT = 6  # tokens emitted
L_PREEMPT = 7  # requests preempted while scheduling this step
L_RUN = 8  # requests in `running` after scheduling
L_BASIS = 9  # batch size the K lookup used
L_PREROWS = 10  # prefill rows
L_WAIT = 11  # requests waiting after scheduling
L_FREE = 12  # free KV blocks after scheduling
L_ACC = 13  # draft tokens accepted in this step
L_DROWS = 14  # rows that verified drafts in this step
L_NCOL = 15
LF_START = 0
LF_DUR = 1
LF_CTX = 2  # context tokens of decode rows
LF_NCOL = 3

# ---- cost-model floats (Cost.cf) --------------------------------------------------------------
C_REFCTX = 0
C_CTXSLOPE = 1  # s per context token
C_PREINTERCEPT = 2
C_PRESLOPE = 3  # s per prefill token beyond the last measured point
C_BMAX = 4  # largest batch in the dense table
C_BMEASURED = 5  # largest measured batch (beyond it: extrapolated)
# composition model (profile version 2): Cost.pre_tok / pre_s hold F's knots and values (s)
C_MODE = 6  # 0: decode table + prefill curve; 1: composition model
C_BASE = 7
C_PERREQ = 8
C_PERKPAIR = 9  # s per thousand attention pairs
C_PERDRAFT = 10
C_D_STEP = 11  # drafter: per drafting step
C_D_ROW = 12
C_D_TOK = 13
C_D_FWD = 14
C_D_FWDROW = 15
C_MTOKENS = 16  # measured range: tokens per step, requests per step, context per request
C_MREQS = 17
C_MCTX = 18
C_PERPREKPAIR = 19  # s per thousand attention pairs of prefill rows
C_SIZE = 20
MIN_FRACTION = 0.25  # a context shorter than the reference never makes a step cheaper than this

# ---- ITL histogram: log-spaced bins from 1 us to 1e5 s ---------------------------------------
ITL_LO = 1e-6
ITL_BINS_PER_DECADE = 2000
ITL_DECADES = 11
ITL_NBINS = ITL_BINS_PER_DECADE * ITL_DECADES + 2

# return codes of run_steps
RET_IDLE = 0  # no request left on the replica
RET_EVENT = 1  # the clock reached the next external event
RET_FINISH = 2  # a request finished and the caller asked to hear of it
RET_LOGFULL = 3  # the step log (or detail log) needs more room
RET_MAXSTEP = 4
RET_STUCK = 5  # nothing could be scheduled while requests wait: an impossible configuration


class Req(NamedTuple):
    """Per-request columns (index = request number)."""

    inp: np.ndarray
    out: np.ndarray
    gen: np.ndarray
    """Output tokens so far."""
    computed: np.ndarray
    """vLLM num_computed_tokens."""
    spec: np.ndarray
    """Draft tokens proposed and not yet verified (len(spec_token_ids))."""
    held: np.ndarray
    """KV blocks held."""
    state: np.ndarray
    """0 not arrived, 1 waiting, 2 running, 3 finished."""
    first_sched: np.ndarray
    first_token: np.ndarray
    last_token: np.ndarray
    finish: np.ndarray
    itl_max: np.ndarray
    decode_steps: np.ndarray
    verify_steps: np.ndarray
    drafted: np.ndarray
    accepted: np.ndarray
    preemptions: np.ndarray
    tstart: np.ndarray
    tlen: np.ndarray
    floor_off: np.ndarray
    pchunk: np.ndarray
    """1 while the last schedule left the request part-way through its (re)prefill (is_prefill_chunk)."""
    ph: np.ndarray
    """Async scheduling: num_output_placeholders (tokens scheduled whose output is not yet known)."""
    inflight: np.ndarray
    """Async scheduling: tokens of the request in the step in flight (num_in_flight_tokens)."""
    stale: np.ndarray
    """Async scheduling: in-flight tokens of a preempted request (num_stale_output_tokens)."""
    cached_tokens: np.ndarray
    """Prefix caching: tokens of the prompt found in the cache at first admission."""
    arena_off: np.ndarray
    """Prefix caching: where request i's block ids and block identities start in the arenas."""
    ncached: np.ndarray
    """Prefix caching: how many of its held blocks are hashed (vLLM num_cached_block)."""
    arena_blk: np.ndarray
    """Prefix caching: block ids each request holds, in order (flat, at arena_off)."""
    arena_id: np.ndarray
    """Prefix caching: the identity (dense hash) of each full block of each request (-1: none)."""


class Rep(NamedTuple):
    """One replica: running (admission order), waiting (ring buffer), counters, finished list, and
    with prefix caching its block pool (vllm/v1/core/block_pool.py)."""

    running: np.ndarray
    waiting: np.ndarray
    ri: np.ndarray
    rf: np.ndarray
    fin: np.ndarray
    itl_hist: np.ndarray
    blk_ref: np.ndarray
    blk_hash: np.ndarray
    lru_prev: np.ndarray
    lru_next: np.ndarray
    stack: np.ndarray
    hmap: np.ndarray
    """identity -> a block holding it (-1 none)."""
    hnext: np.ndarray
    """Next block with the same identity (vLLM keeps duplicates; the first inserted answers)."""
    fsi: np.ndarray
    """Adaptive-family integer state (FS_*)."""
    fsf: np.ndarray
    """Adaptive-family float state: SGLang EMA per slot at [slot]; TensorRT-LLM's window of
    acceptance rates from index MAX_SLOTS on."""


class Params(NamedTuple):
    pi: np.ndarray
    pf: np.ndarray
    klookup: np.ndarray
    """K per batch size 0..max_num_seqs (the policy's ranges, 0 where none covers)."""
    kranges: np.ndarray
    """[n, 3] int64 ranges lo, hi, K (hysteresis)."""
    fam: np.ndarray
    """Adaptive family (F_* indices): which one, and its integer settings."""
    famf: np.ndarray
    """Its float settings (FF_* indices)."""
    ftab: np.ndarray
    """SGLang: [slot, 2 + candidates]: slot's lower batch size, number of candidates, candidate steps."""
    ftabf: np.ndarray
    """SGLang: [slot, 2]: up and down hysteresis."""
    cgbs: np.ndarray
    """SGLang: CUDA-graph batch sizes a batch is padded up to before choosing its slot (empty: none)."""
    ctxr: np.ndarray
    """Context-length axis: [n, 3] ranges ctx_lo, ctx_hi, K capping a row's K by its context."""


class Acc(NamedTuple):
    r: np.ndarray
    """Greedy: [row, flat position] accepted run length (int16); one row, or one per tree size."""
    d: np.ndarray
    """Draft tokens actually proposed at flat position (int16), when recorded."""
    p: np.ndarray
    """Sampled: [flat position, j] probability the j-th draft token is accepted."""
    krow: np.ndarray
    """The row of r a K-token draft reads (a tree's largest size <= K; 0 for every K of a chain)."""


class Cost(NamedTuple):
    tab: np.ndarray
    """[b_max + 1, k_max + 1] seconds of a decode step (target + drafter) at the reference context."""
    cf: np.ndarray
    pre_tok: np.ndarray
    pre_s: np.ndarray


class Log(NamedTuple):
    li: np.ndarray
    lf: np.ndarray
    det: np.ndarray
    """[rows, 5]: step, request, scheduled tokens, draft tokens scheduled, padded."""
    pre: np.ndarray
    """[rows, 2]: step, preempted request."""


class Rows(NamedTuple):
    """Scratch for one step's scheduled rows."""

    ids: np.ndarray
    new: np.ndarray
    spec: np.ndarray
    pad: np.ndarray
    sampled: np.ndarray
    dec: np.ndarray
    acc: np.ndarray
    """Draft tokens accepted (written by finish_step)."""


def new_rows(n: int) -> Rows:
    z = np.zeros(n, dtype=np.int64)
    return Rows(z.copy(), z.copy(), z.copy(), z.copy(), z.copy(), z.copy(), z.copy())


# =============================================================================================
# small helpers
# =============================================================================================
@njit(cache=True, inline="always")
def cdiv(a: int, b: int) -> int:
    return -(-a // b)


@njit(cache=True, inline='always')
def waiting_push(rep: Rep, i: int) -> None:
    """Append request i to the back of the waiting queue."""
    w = rep.waiting
    cap = w.shape[0]
    pos = (rep.ri[RI_WHEAD] + rep.ri[RI_WLEN]) % cap
    w[pos] = i
    rep.ri[RI_WLEN] += 1


@njit(cache=True, inline='always')
def waiting_prepend(rep: Rep, i: int) -> None:
    """Put request i at the front of the waiting queue (a preempted request)."""
    w = rep.waiting
    cap = w.shape[0]
    h = (rep.ri[RI_WHEAD] - 1) % cap
    w[h] = i
    rep.ri[RI_WHEAD] = h
    rep.ri[RI_WLEN] += 1


@njit(cache=True, inline='always')
def waiting_peek(rep: Rep) -> int:
    return rep.waiting[rep.ri[RI_WHEAD]]


@njit(cache=True, inline='always')
def waiting_pop(rep: Rep) -> int:
    i = rep.waiting[rep.ri[RI_WHEAD]]
    rep.ri[RI_WHEAD] = (rep.ri[RI_WHEAD] + 1) % rep.waiting.shape[0]
    rep.ri[RI_WLEN] -= 1
    return i


@njit(cache=True)
def submit(req: Req, rep: Rep, i: int) -> None:
    """Request i arrives at this replica."""
    req.state[i] = 1
    waiting_push(rep, i)


# =============================================================================================
# 0. the block pool with prefix caching (vllm/v1/core/block_pool.py, kv_cache_manager.py)
# =============================================================================================
@njit(cache=True)
def lru_remove(ri: np.ndarray, prev: np.ndarray, nxt: np.ndarray, b: int) -> None:
    """Unlink block b from the free queue's LRU list (Rep.lru_prev / lru_next, head and tail in ri)."""
    prv, q = prev[b], nxt[b]
    if prv >= 0:
        nxt[prv] = q
    else:
        ri[RI_LRU_HEAD] = q
    if q >= 0:
        prev[q] = prv
    else:
        ri[RI_LRU_TAIL] = prv
    prev[b] = nxt[b] = -1


@njit(cache=True)
def lru_append(ri: np.ndarray, prev: np.ndarray, nxt: np.ndarray, b: int) -> None:
    """Put block b at the back of the LRU list (evicted last)."""
    tail = ri[RI_LRU_TAIL]
    prev[b] = tail
    nxt[b] = -1
    if tail >= 0:
        nxt[tail] = b
    else:
        ri[RI_LRU_HEAD] = b
    ri[RI_LRU_TAIL] = b


@njit(cache=True)
def unhash(bh: np.ndarray, hmap: np.ndarray, hnext: np.ndarray, b: int) -> None:
    """Evict block b's identity from the cache map (_maybe_evict_cached_block)."""
    h = bh[b]
    if h < 0:
        return
    cur = hmap[h]
    if cur == b:
        hmap[h] = hnext[b]
    else:
        while cur >= 0 and hnext[cur] != b:
            cur = hnext[cur]
        if cur >= 0:
            hnext[cur] = hnext[b]
    hnext[b] = -1
    bh[b] = -1


@njit(cache=True)
def pc_allocate(req: Req, rep: Rep, i: int, n: int) -> None:
    """get_new_blocks(n) into request i's block list: each from the front of vLLM's free queue,
    unhashed blocks first, then the least recently freed cached one (evicted from the cache map).

    # NOTE: this is the simulator's innermost loop with prefix caching (once per KV block), so it and
    # its helpers work on local arrays: a helper taking the 15-array Rep tuple, even inlined, re-binds
    # the tuple per block, and numba counts references on each member every time (simulator/borrowed.py)."""
    ri = rep.ri
    stack = rep.stack
    ref = rep.blk_ref
    prev = rep.lru_prev
    nxt = rep.lru_next
    bh = rep.blk_hash
    hmap = rep.hmap
    hnext = rep.hnext
    arena = req.arena_blk
    pos = req.arena_off[i] + req.held[i]
    for _ in range(n):
        if ri[RI_STACK] > 0:
            ri[RI_STACK] -= 1
            b = stack[ri[RI_STACK]]
        else:  # the least recently freed cached block
            b = ri[RI_LRU_HEAD]
            lru_remove(ri, prev, nxt, b)
            unhash(bh, hmap, hnext, b)
        ref[b] = 1
        arena[pos] = b
        pos += 1
    ri[RI_FREE] -= n
    req.held[i] += n


@njit(cache=True)
def pc_free(req: Req, rep: Rep, i: int) -> None:
    """free(): blocks released tail first; unhashed ones go to the front (reused first), cached
    ones to the back of the free queue (evicted last, LRU). Per block, over local arrays (see
    pc_allocate)."""
    ri = rep.ri
    stack = rep.stack
    ref = rep.blk_ref
    prev = rep.lru_prev
    nxt = rep.lru_next
    bh = rep.blk_hash
    arena = req.arena_blk
    off = req.arena_off[i]
    for j in range(req.held[i] - 1, -1, -1):
        b = arena[off + j]
        ref[b] -= 1
        if ref[b] == 0:
            if bh[b] >= 0:
                lru_append(ri, prev, nxt, b)
            else:
                stack[ri[RI_STACK]] = b
                ri[RI_STACK] += 1
            ri[RI_FREE] += 1
    req.held[i] = 0
    req.ncached[i] = 0


@njit(cache=True)
def pc_cache(req: Req, rep: Rep, i: int, tokens: int, bs: int) -> None:
    """cache_blocks(request, tokens): the request's full blocks up to `tokens` get their identity."""
    off = req.arena_off[i]
    full = tokens // bs
    if full > req.held[i]:
        full = req.held[i]
    for k in range(req.ncached[i], full):
        b = req.arena_blk[off + k]
        h = req.arena_id[off + k]
        if h >= 0 and rep.blk_hash[b] < 0:
            rep.blk_hash[b] = h
            rep.hnext[b] = -1
            cur = rep.hmap[h]
            if cur < 0:
                rep.hmap[h] = b
            else:  # a duplicate: after the blocks already holding this identity
                while rep.hnext[cur] >= 0:
                    cur = rep.hnext[cur]
                rep.hnext[cur] = b
    if full > req.ncached[i]:
        req.ncached[i] = full


@njit(cache=True)
def pc_lookup(req: Req, rep: Rep, i: int, bs: int) -> tuple[int, int]:
    """find_longest_cache_hit: (blocks hit, of which free) along the request's identities, at most
    num_tokens - 1 tokens (the last token is always computed)."""
    off = req.arena_off[i]
    limit = (req.inp[i] + req.gen[i] - 1) // bs
    hits = 0
    evictable = 0
    while hits < limit:
        h = req.arena_id[off + hits]
        if h < 0 or rep.hmap[h] < 0:
            break
        if rep.blk_ref[rep.hmap[h]] == 0:
            evictable += 1
        hits += 1
    return hits, evictable


@njit(cache=True)
def pc_touch(req: Req, rep: Rep, i: int, hits: int) -> None:
    """touch() the hit blocks and make them the request's first blocks (per block, over local
    arrays: see pc_allocate)."""
    ri = rep.ri
    ref = rep.blk_ref
    prev = rep.lru_prev
    nxt = rep.lru_next
    hmap = rep.hmap
    arena = req.arena_blk
    ids = req.arena_id
    off = req.arena_off[i]
    for k in range(hits):
        b = hmap[ids[off + k]]
        if ref[b] == 0:
            lru_remove(ri, prev, nxt, b)
            ri[RI_FREE] -= 1
        ref[b] += 1
        arena[off + k] = b
    req.held[i] = hits
    req.ncached[i] = hits


# =============================================================================================
# 1. scheduling (vLLM V1 Scheduler.schedule)
# =============================================================================================
@njit(cache=True)
def preempt(req: Req, rep: Rep, victim: int, log: Log, p: Params) -> None:
    """vLLM `_preempt_request`: free its blocks, forget its progress and drafts, queue it first."""
    if p.pi[P_PREFIX]:
        pc_free(req, rep, victim)
    else:
        rep.ri[RI_FREE] += req.held[victim]
        req.held[victim] = 0
    req.computed[victim] = 0
    req.spec[victim] = 0
    req.stale[victim] = req.inflight[victim]
    req.ph[victim] = 0
    req.preemptions[victim] += 1
    req.state[victim] = 1
    waiting_prepend(rep, victim)
    if p.pi[P_DETAIL]:
        n = rep.ri[RI_PREN]
        if n < log.pre.shape[0]:
            log.pre[n, 0] = rep.ri[RI_STEPS]
            log.pre[n, 1] = victim
        rep.ri[RI_PREN] = n + 1


@njit(cache=True)
def schedule_step(req: Req, rep: Rep, p: Params, rows: Rows, log: Log) -> tuple[int, int]:
    """Form one step's batch exactly as vLLM V1's scheduler does. Returns (rows, preempted)."""
    pi = p.pi
    bs = pi[P_BS]
    maxlen = pi[P_MAXLEN]
    lookahead = pi[P_LOOKAHEAD]
    draft_slots = pi[P_DRAFTSLOTS]
    token_budget = pi[P_TOKBUDGET]
    input_budget = pi[P_INBUDGET]
    running = rep.running
    ri = rep.ri
    n_rows = 0
    n_preempted = 0
    # long_prefill_token_threshold applies only when another request could be starved
    thr = pi[P_LONGTHR] if ri[RI_NRUN] + ri[RI_WLEN] > 1 else 0
    prefill_scheduled = False

    # ---- RUNNING requests, in admission order ------------------------------------------------
    is_async = pi[P_ASYNC] != 0
    prefix = pi[P_PREFIX] != 0
    idx = 0
    while idx < ri[RI_NRUN] and token_budget > 0:
        if input_budget <= draft_slots:
            break
        i = running[idx]
        num_tokens = req.inp[i] + req.gen[i]
        ph = req.ph[i]
        if ph > 0 and req.computed[i] + 2 - ph >= req.inp[i] + req.out[i]:
            idx += 1  # async: the step in flight certainly reaches max_tokens
            continue
        new = num_tokens + req.spec[i] + ph - req.computed[i]
        if 0 < thr < new:
            new = thr
        new = min(new, token_budget, input_budget - draft_slots)
        new = min(new, maxlen - req.computed[i] - 1)
        if new <= 0:
            idx += 1
            continue
        ok = False
        while True:
            need = cdiv(min(req.computed[i] + new + lookahead, maxlen), bs) - req.held[i]
            if need < 0:
                need = 0
            if need <= ri[RI_FREE]:
                ok = True
                break
            victim = running[ri[RI_NRUN] - 1]
            ri[RI_NRUN] -= 1
            preempt(req, rep, victim, log, p)
            n_preempted += 1
            if victim == i:
                break
        if not ok:
            break
        if prefix:
            pc_allocate(req, rep, i, need)
            pc_cache(req, rep, i, min(req.computed[i] + new, num_tokens), bs)
        else:
            ri[RI_FREE] -= need
            req.held[i] += need
        if req.pchunk[i]:
            prefill_scheduled = True  # request.is_prefill_chunk
            rows.dec[n_rows] = 0
        else:
            rows.dec[n_rows] = 1
        sched_spec = new + req.computed[i] - num_tokens - ph
        if sched_spec < 0:
            sched_spec = 0
        if sched_spec > req.spec[i]:
            sched_spec = req.spec[i]
        rows.ids[n_rows] = i
        rows.new[n_rows] = new
        rows.spec[n_rows] = sched_spec
        rows.pad[n_rows] = 0
        n_rows += 1
        req.spec[i] = 0
        token_budget -= new
        input_budget -= new + draft_slots
        idx += 1

    # ---- WAITING requests, only when nothing was preempted -----------------------------------
    if n_preempted == 0:
        static_k = pi[P_STATICK]
        while token_budget > 0:
            if ri[RI_WLEN] == 0 or input_budget <= draft_slots:
                break
            if ri[RI_NRUN] >= pi[P_MAXSEQS]:
                break
            i = waiting_peek(rep)
            if req.state[i] == 3:  # async: finished by its stale in-flight output while waiting
                waiting_pop(rep)
                continue
            num_tokens = req.inp[i] + req.gen[i]
            computed = 0
            hits = 0
            evictable = 0
            if prefix:  # get_computed_blocks: the longest run of cached full blocks from the start
                hits, evictable = pc_lookup(req, rep, i, bs)
                computed = hits * bs
            request_budget = min(token_budget, input_budget - draft_slots)
            new = num_tokens - computed
            pad = 0
            if (static_k > 0 and new == 1 and not prefill_scheduled
                    and (n_rows > 0 or computed > 0)):
                padded = 1 + static_k
                if computed + padded + 1 <= maxlen:
                    if padded > request_budget:
                        break
                    new = padded
                    pad = 1
            if 0 < thr < new:
                new = thr
            if pi[P_CHUNKED] == 0 and new > request_budget:
                break
            new = min(new, request_budget)
            watermark = pi[P_WATERMARK] if ri[RI_NRUN] > 0 else 0
            if pi[P_FULLISL]:
                full = max(cdiv(min(num_tokens, maxlen), bs) - hits, 0) + evictable
                if full + watermark > ri[RI_FREE]:
                    break
            need = max(cdiv(min(computed + new + lookahead, maxlen), bs) - hits, 0)
            if need + evictable + watermark > ri[RI_FREE]:
                break
            waiting_pop(rep)
            if req.first_sched[i] != req.first_sched[i]:  # NaN: first admission
                req.first_sched[i] = rep.rf[RF_CLOCK]
            running[ri[RI_NRUN]] = i
            ri[RI_NRUN] += 1
            req.state[i] = 2
            if prefix:
                if req.preemptions[i] == 0:  # record_prefix_cache_stats (first admissions)
                    ri[RI_QUERY_TOKENS] += num_tokens
                    ri[RI_HIT_TOKENS] += computed
                    req.cached_tokens[i] = computed
                pc_touch(req, rep, i, hits)
                pc_allocate(req, rep, i, need)
                pc_cache(req, rep, i, min(computed + new, num_tokens), bs)
            else:
                ri[RI_FREE] -= need
                req.held[i] = need
            req.computed[i] = computed
            rows.ids[n_rows] = i
            rows.new[n_rows] = new
            rows.spec[n_rows] = static_k if pad else 0
            rows.pad[n_rows] = pad
            rows.dec[n_rows] = 1 if (pad and req.gen[i] > 0) else 0
            n_rows += 1
            token_budget -= new
            input_budget -= new + draft_slots

    # _update_after_schedule: computed tokens advance now; rejected drafts roll back later
    for j in range(n_rows):
        i = rows.ids[j]
        req.computed[i] += rows.new[j]
        sampled = 1 if req.computed[i] >= req.inp[i] + req.gen[i] + req.ph[i] else 0
        rows.sampled[j] = sampled
        req.pchunk[i] = 1 - sampled
    if is_async and n_rows > 0:
        async_after_schedule(req, rep, p, rows, n_rows)
    return n_rows, n_preempted


@njit(cache=True)
def async_after_schedule(req: Req, rep: Rep, p: Params, rows: Rows, n_rows: int) -> None:
    """AsyncScheduler._update_after_schedule: the output of this step is unknown when the next is
    formed, so a decoding row holds 1 + drafts output placeholders, and K placeholder drafts
    (num_spec_tokens_to_schedule of this step) stand for the drafts the worker will propose."""
    n_dec = 0
    for j in range(n_rows):
        n_dec += rows.dec[j]
    k = 0
    basis = basis_of(p, rep, n_rows, n_dec)
    if p.pi[P_ACCMODE] != 0:
        k = k_decide(p, rep, basis, n_dec)
    rep.ri[RI_KLAST] = k
    rep.ri[RI_BLAST] = basis
    for j in range(n_rows):
        i = rows.ids[j]
        req.inflight[i] += rows.new[j]
        if req.pchunk[i] == 0:
            req.ph[i] += 1 + rows.spec[j]
            req.spec[i] = ctx_cap(p.ctxr, req.inp[i] + req.gen[i], k) if p.ctxr.shape[0] > 0 and k > 0 else k


# =============================================================================================
# 2. step cost (the profile's execution-time model)
# =============================================================================================
@njit(cache=True)
def prefill_seconds(cost: Cost, tokens: float) -> float:
    if tokens <= 0:
        return 0.0
    t = cost.pre_tok
    s = cost.pre_s
    cf = cost.cf
    if tokens <= t[-1]:
        if tokens < t[0]:
            return cf[C_PREINTERCEPT] + (s[0] - cf[C_PREINTERCEPT]) * tokens / t[0]
        return np.interp(tokens, t, s)
    return s[-1] + cf[C_PRESLOPE] * (tokens - t[-1])


@njit(cache=True)
def decode_seconds(cost: Cost, batch: int, k: float) -> float:
    tab = cost.tab
    bmax = tab.shape[0] - 1
    kmax = tab.shape[1] - 1
    if batch > bmax:
        ki = min(int(round(k)), kmax)
        slope = max(tab[bmax, ki] - tab[bmax - 1, ki], 0.0) if bmax >= 2 else 0.0
        return tab[bmax, ki] + slope * (batch - bmax)
    ki = int(k)
    if ki >= kmax:
        return tab[batch, kmax]
    frac = k - ki
    if frac == 0.0:
        return tab[batch, ki]
    return tab[batch, ki] * (1.0 - frac) + tab[batch, ki + 1] * frac


@njit(cache=True)
def step_seconds(cost: Cost, n_dec: int, spec_tokens: int, prefill_tokens: int, ctx: float) -> float:
    """Duration of a step with n_dec decode rows verifying spec_tokens drafts in all, and prefill."""
    if n_dec <= 0:
        return prefill_seconds(cost, prefill_tokens)
    cf = cost.cf
    k = spec_tokens / n_dec
    base = decode_seconds(cost, n_dec, k)
    t = base + cf[C_CTXSLOPE] * (ctx - n_dec * cf[C_REFCTX])
    if t < MIN_FRACTION * base:
        t = MIN_FRACTION * base
    if prefill_tokens > 0:
        extra = prefill_seconds(cost, prefill_tokens) - cf[C_PREINTERCEPT]
        if extra > 0:
            t += extra
    return t


@njit(cache=True)
def composition_seconds(cost: Cost, tokens: float, requests: int, kpairs: float, prefill_kpairs: float,
                        drafts: int, draft_rows: int, kmax: int) -> float:
    """A step's period from its composition (profile version 2, formats.profile.CompositionCost);
    `kpairs` counts every row's attention pairs, `prefill_kpairs` those of prefill rows."""
    cf = cost.cf
    knots = cost.pre_tok
    vals = cost.pre_s
    if tokens <= knots[-1]:
        f = np.interp(tokens, knots, vals)
    elif knots.shape[0] >= 2:
        slope = (vals[-1] - vals[-2]) / (knots[-1] - knots[-2])
        f = vals[-1] + slope * (tokens - knots[-1])
    else:
        f = vals[-1]
    t = (cf[C_BASE] + f + cf[C_PERREQ] * requests + cf[C_PERKPAIR] * (kpairs - prefill_kpairs)
         + cf[C_PERPREKPAIR] * prefill_kpairs + cf[C_PERDRAFT] * drafts)
    if draft_rows > 0:
        t += (cf[C_D_STEP] + cf[C_D_ROW] * draft_rows + cf[C_D_TOK] * drafts + cf[C_D_FWD] * kmax
              + cf[C_D_FWDROW] * kmax * draft_rows)
    return t


@njit(cache=True)
def step_time(cost: Cost, req: Req, rows: Rows, n_rows: int, n_dec: int, spec_tok: int, pre_tok: int,
              ctx: float, rf: np.ndarray) -> float:
    """Duration of a scheduled step (after schedule_step), counting steps outside the measured range."""
    cf = cost.cf
    if cf[C_MODE] == 0.0:
        if n_dec > cf[C_BMEASURED]:
            rf[RF_EXTRAP] += 1.0
        return step_seconds(cost, n_dec, spec_tok, pre_tok, ctx)
    tokens = 0
    kpairs = 0.0
    prefill_kpairs = 0.0
    draft_rows = 0
    kmax = 0
    maxctx = 0
    for j in range(n_rows):
        new = rows.new[j]
        before = req.computed[rows.ids[j]] - new  # computed tokens before this step
        tokens += new
        pairs = new * (before + (new + 1) * 0.5)
        kpairs += pairs
        d = rows.spec[j]
        if new > 1 + d:  # a prefill row (stepfit.features draws the same line)
            prefill_kpairs += pairs
        if d > 0:
            draft_rows += 1
            if d > kmax:
                kmax = d
        if before + new > maxctx:
            maxctx = before + new
    if tokens > cf[C_MTOKENS] or n_rows > cf[C_MREQS] or maxctx > cf[C_MCTX]:
        rf[RF_EXTRAP] += 1.0
    return composition_seconds(cost, tokens, n_rows, kpairs / 1000.0, prefill_kpairs / 1000.0, spec_tok,
                               draft_rows, kmax)


# =============================================================================================
# 3. outcome of a step (update_from_output) and the drafter's next proposals (post_step)
# =============================================================================================
@njit(cache=True)
def k_for_basis(p: Params, rep: Rep, basis: int) -> int:
    """K the policy gives at batch size `basis`, with the hysteresis band when set."""
    band = p.pi[P_HYSTBAND]
    lk = p.klookup
    if band == 0:
        if basis < lk.shape[0]:
            return lk[basis]
        return lk[-1] if p.kranges.shape[0] and p.kranges[-1, 1] >= basis else 0
    kr = p.kranges
    cur = rep.ri[RI_HYST]
    if cur >= 0:
        if kr[cur, 0] - band <= basis <= kr[cur, 1] + band:
            return kr[cur, 2]
    new = -1
    for r in range(kr.shape[0]):
        if kr[r, 0] <= basis <= kr[r, 1]:
            new = r
            break
    rep.ri[RI_HYST] = new
    return kr[new, 2] if new >= 0 else 0


@njit(cache=True)
def sglang_slot(p: Params, n_dec: int) -> int:
    """The slot a decode batch of n_dec requests routes to: padded up to the next CUDA-graph batch
    size, then the slot with the largest lower bound not above it (sglang adaptive_spec_params.py)."""
    bs = n_dec
    g = p.cgbs
    if g.shape[0] > 0:  # above the largest captured size: the raw size (SGLang 0.5.23)
        j = np.searchsorted(g, bs)
        bs = g[j] if j < g.shape[0] else bs
    slot = 0
    for s_ in range(p.fam[F_SLOTS]):
        if p.ftab[s_, 0] <= bs:
            slot = s_
    return slot


@njit(cache=True)
def k_decide(p: Params, rep: Rep, basis: int, n_dec: int) -> int:
    """K for the drafts proposed after this step, by the policy's family; then the queue rule."""
    fam = p.fam[F_FAMILY]
    if fam == FAM_SGLANG:
        slot = sglang_slot(p, n_dec)
        rep.fsi[FS_PSLOT] = slot
        k = p.ftab[slot, 2 + rep.fsi[2 * slot]]
    else:
        k = k_for_basis(p, rep, basis)
        if fam == FAM_TRTLLM and rep.fsi[FS_GATE_OFF]:
            k = 0
    if p.fam[F_QMAX] >= 0 and rep.ri[RI_WLEN] > p.fam[F_QMAX] and k > p.fam[F_QK]:
        k = p.fam[F_QK]
    return k


@njit(cache=True)
def family_feedback(p: Params, rep: Rep, accepted: int, drafted: int, rows: int, dec_rows: int) -> None:
    """What the family learns from a verification step (rows drafted, dec_rows decoding; drafted /
    accepted tokens)."""
    rep.ri[RI_STEPACC] = accepted
    rep.ri[RI_STEPDROWS] = rows
    fam = p.fam[F_FAMILY]
    if fam == FAM_SGLANG and dec_rows > 0:
        sglang_feedback(p, rep, accepted, rows)
    elif fam == FAM_TRTLLM and drafted > 0 and p.fam[F_WINDOW] > 0 and not rep.fsi[FS_GATE_OFF]:
        w = p.fam[F_WINDOW]
        n = rep.fsi[FS_GATE_N]
        rep.fsf[MAX_SLOTS + n % w] = accepted / drafted
        n += 1
        rep.fsi[FS_GATE_N] = n
        if n >= w:
            mean = 0.0
            for j in range(w):
                mean += rep.fsf[MAX_SLOTS + j]
            if mean / w < p.famf[FF_THRESHOLD]:
                rep.fsi[FS_GATE_OFF] = 1  # speculation_gate: disabled permanently


@njit(cache=True)
def sglang_feedback(p: Params, rep: Rep, accepted: int, rows: int) -> None:
    """AdaptiveStepSlot.update and _recompute_params, SGLang 0.5.23
    (sglang/srt/speculative/adaptive_spec_params.py): every decode batch counts, even at step 0
    (a trivial verify runs); the EMA of accepted drafts per request moves only while drafting;
    decisions after the warm-up, every update_interval batches; down first, up only when it did not
    move down; a slot at step 0 probes the next candidate up; ceiling_coeff caps moves that do not
    rise."""
    slot = rep.fsi[FS_PSLOT]
    if slot < 0:
        return
    idx = rep.fsi[2 * slot]
    cur = p.ftab[slot, 2 + idx]
    if cur > 0:
        if rows == 0:
            return  # NOTE: no draft was verified (truncated, or a first decode): not a verify batch
        a = p.famf[FF_ALPHA]
        rep.fsf[slot] = (1.0 - a) * rep.fsf[slot] + a * (accepted / rows)
    rep.fsi[2 * slot + 1] += 1
    cnt = rep.fsi[2 * slot + 1]
    warm = p.fam[F_WARMUP]
    if cnt <= warm or (cnt - warm) % p.fam[F_INTERVAL] != 0:
        return
    ema = rep.fsf[slot]
    ncand = p.ftab[slot, 1]
    if cur == 0:  # probe the smallest positive step after a zero-step interval
        idx = min(idx + 1, ncand - 1)
        if p.ftab[slot, 2 + idx] > 0 and ema < 0.0:
            rep.fsf[slot] = float(p.ftab[slot, 2 + idx] - 1)
        rep.fsi[2 * slot] = idx
        return
    up_h, dn_h, ceil_c = p.ftabf[slot, 0], p.ftabf[slot, 1], p.ftabf[slot, 2]
    old = idx
    while idx > 0:
        prev = p.ftab[slot, 2 + idx - 1]
        if ema <= (0.5 if prev == 0 else prev - 0.5) + dn_h:
            idx -= 1
        else:
            break
    if idx == old:
        while idx < ncand - 1:
            if ema > p.ftab[slot, 2 + idx] - 0.5 + up_h:
                idx += 1
            else:
                break
    if ceil_c > 0.0:
        ceiling = max(1, int(math.ceil(ema * ceil_c)))
        tgt = p.ftab[slot, 2 + idx]
        if tgt > ceiling and tgt <= cur:
            while idx > 0 and p.ftab[slot, 2 + idx] > ceiling:
                idx -= 1
    rep.fsi[2 * slot] = idx


@njit(cache=True, inline='always')
def ctx_cap(ctxr: np.ndarray, ctx: int, k: int) -> int:
    """A row's K capped by the context-length axis (Params.ctxr; uncovered contexts: no cap)."""
    for r in range(ctxr.shape[0]):
        if ctxr[r, 0] <= ctx <= ctxr[r, 1]:
            return min(k, ctxr[r, 2])
    return k


@njit(cache=True, inline='always')
def accepted_tokens(mode: int, acc: Acc, gen: int, tstart: int, tlen: int, d: int) -> int:
    """Draft tokens of a d-token draft that the target accepts, for a request at output position `gen`
    whose acceptance trace starts at flat position `tstart` and is `tlen` long (P_ACCMODE `mode`).

    # NOTE: scalars, not the Req and Params tuples: this runs once per verifying row, and numba counts
    # references on every member of a tuple it binds (simulator/borrowed.py)."""
    pos = gen % tlen
    flat = tstart + pos
    if mode == 1:
        r = acc.r[acc.krow[min(d, acc.krow.shape[0] - 1)], flat]
        return r if r < d else d
    n = 0
    if mode == 2:
        for j in range(d):
            if np.random.random() < acc.p[flat, j]:
                n += 1
            else:
                break
        return n
    # legacy sampled traces (one probability per position): the j-th token uses p[pos + j]
    for j in range(d):
        f = tstart + (gen + j) % tlen
        if np.random.random() < acc.p[f, 0]:
            n += 1
        else:
            break
    return n


@njit(cache=True, inline='always')
def itl_record(rf: np.ndarray, hist: np.ndarray, gap: float) -> None:
    """One inter-token gap into the replica's running sum (Rep.rf) and histogram (Rep.itl_hist)."""
    rf[RF_ITL_SUM] += gap
    rf[RF_ITL_N] += 1.0
    if gap <= ITL_LO:
        b = 0
    else:
        b = int(math.log10(gap / ITL_LO) * ITL_BINS_PER_DECADE) + 1
        if b >= ITL_NBINS:
            b = ITL_NBINS - 1
    hist[b] += 1


@njit(cache=True)
def finish_step(req: Req, rep: Rep, p: Params, acc: Acc, rows: Rows, n_rows: int, now: float,
                basis: int, free_blocks: bool) -> tuple[int, int]:
    """Apply one step's outcome at time `now`; returns (tokens emitted, K for the new drafts)."""
    emitted = 0
    mode = p.pi[P_ACCMODE]
    floor_rate = p.pf[PF_FLOORRATE]
    warm = p.pi[P_FLOORWARM]
    acc_sum = 0
    draft_sum = 0
    draft_rows = 0
    for j in range(n_rows):
        if rows.sampled[j] == 0:
            continue  # a prefill chunk that did not reach the end of the prompt: nothing sampled
        i = rows.ids[j]
        d = rows.spec[j]
        a = 0
        if d > 0 and rows.pad[j] == 0:
            a = accepted_tokens(mode, acc, req.gen[i], req.tstart[i], req.tlen[i], d)
        rows.acc[j] = a
        rem = req.out[i] - req.gen[i]
        emit = a + 1
        if emit > rem:
            emit = rem
        req.computed[i] -= d - a  # rejected drafts are recomputed
        if req.gen[i] == 0:
            req.first_token[i] = now
        else:
            gap = now - req.last_token[i]
            itl_record(rep.rf, rep.itl_hist, gap)
            if gap > req.itl_max[i]:
                req.itl_max[i] = gap
            req.decode_steps[i] += 1
        if d > 0:
            req.verify_steps[i] += 1
            req.drafted[i] += d
            req.accepted[i] += a
            acc_sum += a
            draft_sum += d
            draft_rows += 1
            if floor_trips_c(req.accepted[i], req.drafted[i], req.verify_steps[i], floor_rate, warm):
                req.floor_off[i] = 1
        req.gen[i] += emit
        req.last_token[i] = now
        emitted += emit
        if req.gen[i] >= req.out[i]:
            req.finish[i] = now
            req.state[i] = 3
            if free_blocks:
                if p.pi[P_PREFIX]:
                    pc_free(req, rep, i)
                else:
                    rep.ri[RI_FREE] += req.held[i]
                    req.held[i] = 0
            nf = rep.ri[RI_NFIN]
            rep.fin[nf] = i
            rep.ri[RI_NFIN] = nf + 1
    # the drafter proposes for every row that sampled and goes on (EngineCore.post_step)
    k = 0
    if p.pi[P_ACCMODE] != 0:
        n_dec = 0
        for j in range(n_rows):
            n_dec += rows.dec[j]
        family_feedback(p, rep, acc_sum, draft_sum, draft_rows, n_dec)
        k = k_decide(p, rep, basis, n_dec)
        has_d = p.pi[P_HASDRAFTED] != 0
        has_ctx = p.ctxr.shape[0] > 0
        for j in range(n_rows):
            if rows.sampled[j] == 0:
                continue
            i = rows.ids[j]
            if req.state[i] == 3:
                continue
            kk = 0 if req.floor_off[i] else k
            if has_ctx and kk > 0:
                kk = ctx_cap(p.ctxr, req.inp[i] + req.gen[i], kk)
            if has_d and kk > 0:
                dd = acc.d[req.tstart[i] + req.gen[i] % req.tlen[i]]
                if dd < kk:
                    kk = dd
            req.spec[i] = kk
    return emitted, k


@njit(cache=True)
def finish_step_async(req: Req, rep: Rep, p: Params, acc: Acc, rows: Rows, n_rows: int, now: float,
                      free_blocks: bool) -> int:
    """update_from_output under async scheduling (AsyncScheduler): like finish_step, plus the
    placeholders, rows of requests that finished meanwhile are dropped, and the output of a request
    preempted while this step was in flight is delivered without touching its reset counters. No
    proposals: the drafts are the K placeholders set when the step was scheduled."""
    emitted = 0
    mode = p.pi[P_ACCMODE]
    acc_sum = 0
    draft_sum = 0
    draft_rows = 0
    for j in range(n_rows):
        i = rows.ids[j]
        req.inflight[i] -= rows.new[j]
        stale = False
        if req.stale[i] > 0:
            stale = True
            req.stale[i] -= rows.new[j]
        rows.acc[j] = 0
        if req.state[i] == 3 or rows.sampled[j] == 0:
            continue
        d = rows.spec[j]
        a = 0
        if d > 0 and rows.pad[j] == 0:
            a = accepted_tokens(mode, acc, req.gen[i], req.tstart[i], req.tlen[i], d)
        rows.acc[j] = a
        rem = req.out[i] - req.gen[i]
        emit = a + 1
        if emit > rem:
            emit = rem
        if not stale:
            if req.computed[i] > 0:
                req.computed[i] -= d - a
            if req.ph[i] > 0:
                req.ph[i] -= d - a
            req.ph[i] -= emit
            if p.pi[P_PREFIX] and req.state[i] == 2:
                # AsyncScheduler._update_request_with_output caches what is now final
                pc_cache(req, rep, i, req.computed[i] - req.ph[i], p.pi[P_BS])
        if req.gen[i] == 0:
            req.first_token[i] = now
        else:
            gap = now - req.last_token[i]
            itl_record(rep.rf, rep.itl_hist, gap)
            if gap > req.itl_max[i]:
                req.itl_max[i] = gap
            req.decode_steps[i] += 1
        if d > 0:
            req.verify_steps[i] += 1
            req.drafted[i] += d
            req.accepted[i] += a
            acc_sum += a
            draft_sum += d
            draft_rows += 1
        req.gen[i] += emit
        req.last_token[i] = now
        emitted += emit
        if req.gen[i] >= req.out[i]:
            req.finish[i] = now
            if free_blocks:
                if p.pi[P_PREFIX]:
                    pc_free(req, rep, i)
                else:
                    rep.ri[RI_FREE] += req.held[i]
                    req.held[i] = 0
            req.state[i] = 3  # (one that was waiting leaves the queue when the waiting loop meets it)
            nf = rep.ri[RI_NFIN]
            rep.fin[nf] = i
            rep.ri[RI_NFIN] = nf + 1
    if p.pi[P_ACCMODE] != 0:
        n_dec = 0
        for j in range(n_rows):
            n_dec += rows.dec[j]
        family_feedback(p, rep, acc_sum, draft_sum, draft_rows, n_dec)
    return emitted


@njit(cache=True)
def drop_finished(req: Req, rep: Rep) -> None:
    """Remove finished requests from `running`, keeping the order of the others."""
    running = rep.running
    n = rep.ri[RI_NRUN]
    w = 0
    for r in range(n):
        i = running[r]
        if req.state[i] != 3:
            running[w] = i
            w += 1
    rep.ri[RI_NRUN] = w


# =============================================================================================
# 4. the loop
# =============================================================================================
@njit(cache=True)
def step_features(req: Req, rows: Rows, n_rows: int) -> tuple[int, int, int, int, int, float]:
    """(decode rows, decode tokens, draft tokens, prefill tokens, prefill rows, decode context)."""
    n_dec = 0
    dec_tok = 0
    spec_tok = 0
    pre_tok = 0
    pre_rows = 0
    ctx = 0.0
    for j in range(n_rows):
        if rows.dec[j]:
            i = rows.ids[j]
            n_dec += 1
            dec_tok += rows.new[j]
            spec_tok += rows.spec[j]
            ctx += req.inp[i] + req.gen[i]
        else:
            pre_tok += rows.new[j]
            pre_rows += 1
    return n_dec, dec_tok, spec_tok, pre_tok, pre_rows, ctx


@njit(cache=True)
def log_step(rep: Rep, log: Log, start: float, dt: float, n_rows: int, n_dec: int, k: int, dec_tok: int,
             spec_tok: int, pre_tok: int, emitted: int, n_pre: int, basis: int, pre_rows: int,
             ctx: float) -> None:
    n = rep.ri[RI_LOGN]
    li = log.li
    li[n, L_SCHED] = n_rows
    li[n, L_DEC] = n_dec
    li[n, L_K] = k
    li[n, L_DECTOK] = dec_tok
    li[n, L_SPECTOK] = spec_tok
    li[n, L_PRETOK] = pre_tok
    li[n, L_EMIT] = emitted
    li[n, L_PREEMPT] = n_pre
    li[n, L_RUN] = rep.ri[RI_NRUN]
    li[n, L_BASIS] = basis
    li[n, L_PREROWS] = pre_rows
    li[n, L_WAIT] = rep.ri[RI_WLEN]
    li[n, L_FREE] = rep.ri[RI_FREE]
    li[n, L_ACC] = rep.ri[RI_STEPACC]
    li[n, L_DROWS] = rep.ri[RI_STEPDROWS]
    rep.ri[RI_STEPACC] = rep.ri[RI_STEPDROWS] = 0
    log.lf[n, LF_START] = start
    log.lf[n, LF_DUR] = dt
    log.lf[n, LF_CTX] = ctx
    rep.ri[RI_LOGN] = n + 1


@njit(cache=True)
def log_detail(rep: Rep, log: Log, rows: Rows, n_rows: int) -> None:
    n = rep.ri[RI_DETN]
    step = rep.ri[RI_STEPS]
    for j in range(n_rows):
        if n + j < log.det.shape[0]:
            log.det[n + j, 0] = step
            log.det[n + j, 1] = rows.ids[j]
            log.det[n + j, 2] = rows.new[j]
            log.det[n + j, 3] = rows.spec[j]
            log.det[n + j, 4] = rows.pad[j]
    rep.ri[RI_DETN] = n + n_rows


@njit(cache=True, inline='always')
def basis_of(p: Params, rep: Rep, n_rows: int, n_dec: int) -> int:
    kb = p.pi[P_KBASIS]
    if kb == 0:
        return n_rows
    if kb == 1:
        return n_dec
    return rep.ri[RI_NRUN]


@njit(cache=True)
def run_steps(req: Req, rep: Rep, p: Params, acc: Acc, cost: Cost, log: Log, rows: Rows, rows2: Rows,
              t_limit: float) -> int:
    """Run steps from the replica's clock until the clock reaches t_limit (or see RET_*)."""
    # uncounted views: see simulator/borrowed.py (the caller holds the arrays for the whole call)
    req, rep, p, acc, cost, log, rows, rows2 = (borrowed(req), borrowed(rep), borrowed(p), borrowed(acc),
                                                borrowed(cost), borrowed(log), borrowed(rows), borrowed(rows2))
    if p.pi[P_ASYNC]:
        return run_steps_async(req, rep, p, acc, cost, log, rows, rows2, t_limit)
    ri = rep.ri
    rf = rep.rf
    while True:
        if ri[RI_NRUN] == 0 and ri[RI_WLEN] == 0:
            return RET_IDLE
        if ri[RI_LOGN] >= log.li.shape[0]:
            return RET_LOGFULL
        if p.pi[P_DETAIL] and (ri[RI_DETN] + p.pi[P_MAXSEQS] > log.det.shape[0]
                               or ri[RI_PREN] + p.pi[P_MAXSEQS] > log.pre.shape[0]):
            return RET_LOGFULL
        if 0 < ri[RI_MAXSTEP] <= ri[RI_STEPS]:
            return RET_MAXSTEP
        n_rows, n_pre = schedule_step(req, rep, p, rows, log)
        if n_rows == 0:
            if n_pre == 0:
                return RET_STUCK
            # every running request was preempted: vLLM runs an empty step, then admits
            log_step(rep, log, rf[RF_CLOCK], 0.0, 0, 0, 0, 0, 0, 0, 0, n_pre, 0, 0, 0.0)
            ri[RI_STEPS] += 1
            continue
        if p.pi[P_DETAIL]:
            log_detail(rep, log, rows, n_rows)
        n_dec, dec_tok, spec_tok, pre_tok, pre_rows, ctx = step_features(req, rows, n_rows)
        dt = step_time(cost, req, rows, n_rows, n_dec, spec_tok, pre_tok, ctx, rf)
        start = rf[RF_CLOCK]
        now = start + dt
        rf[RF_CLOCK] = now
        rf[RF_BUSY] += dt
        basis = basis_of(p, rep, n_rows, n_dec)
        n_fin_before = ri[RI_NFIN]
        emitted, k = finish_step(req, rep, p, acc, rows, n_rows, now, basis, True)
        if ri[RI_NFIN] > n_fin_before:
            drop_finished(req, rep)
        log_step(rep, log, start, dt, n_rows, n_dec, k, dec_tok, spec_tok, pre_tok, emitted, n_pre, basis,
                 pre_rows, ctx)
        ri[RI_STEPS] += 1
        if p.pi[P_STOPFIN] and ri[RI_NFIN] > n_fin_before:
            return RET_FINISH
        if now >= t_limit:
            return RET_EVENT


@njit(cache=True)
def run_steps_async(req: Req, rep: Rep, p: Params, acc: Acc, cost: Cost, log: Log, rows: Rows, rows2: Rows,
                    t_limit: float) -> int:
    """The loop under async scheduling (EngineCore.step_with_batch_queue, batch queue of 2): the
    next step is scheduled when the one in flight starts, and its output is processed when it ends."""
    # (called only by run_steps, which has already made the state uncounted views)
    ri = rep.ri
    rf = rep.rf
    while True:
        has_req = ri[RI_NRUN] > 0 or ri[RI_WLEN] > 0
        pend_n = ri[RI_PENDN]
        if not has_req and pend_n < 0:
            return RET_IDLE
        if ri[RI_LOGN] >= log.li.shape[0]:
            return RET_LOGFULL
        if p.pi[P_DETAIL] and (ri[RI_DETN] + p.pi[P_MAXSEQS] > log.det.shape[0]
                               or ri[RI_PREN] + p.pi[P_MAXSEQS] > log.pre.shape[0]):
            return RET_LOGFULL
        if 0 < ri[RI_MAXSTEP] <= ri[RI_STEPS]:
            return RET_MAXSTEP
        pend_in_2 = ri[RI_PENDBUF] == 1
        cur = rows if pend_in_2 else rows2
        n_new = -1
        n_pre = 0
        n_dec = dec_tok = spec_tok = pre_tok = pre_rows = 0
        ctx = 0.0
        dt_new = 0.0
        if has_req:
            n_new, n_pre = schedule_step(req, rep, p, cur, log)
            # the step's composition is fixed now: time it before the step in flight completes
            n_dec, dec_tok, spec_tok, pre_tok, pre_rows, ctx = step_features(req, cur, n_new)
            dt_new = step_time(cost, req, cur, n_new, n_dec, spec_tok, pre_tok, ctx, rf) if n_new > 0 else 0.0
        if n_new == 0 and n_pre == 0 and pend_n <= 0:
            if ri[RI_NRUN] > 0 or ri[RI_WLEN] > 0:
                return RET_STUCK
            n_new = -1  # only lazily removed entries were left
        if pend_n >= 0:
            pen = rows2 if pend_in_2 else rows
            now = rf[RF_CLOCK] + rf[RF_PDT]
            n_fin_before = ri[RI_NFIN]
            emitted = finish_step_async(req, rep, p, acc, pen, pend_n, now, True)
            if ri[RI_NFIN] > n_fin_before:
                drop_finished(req, rep)
            pm = RI_PM
            log_step(rep, log, rf[RF_CLOCK], rf[RF_PDT], ri[pm + 8], ri[pm], ri[pm + 1], ri[pm + 2], ri[pm + 3],
                     ri[pm + 4], emitted, ri[pm + 5], ri[pm + 6], ri[pm + 7], rf[RF_PCTX])
            rf[RF_BUSY] += rf[RF_PDT]
            rf[RF_CLOCK] = now
            ri[RI_PENDN] = -1
        else:
            n_fin_before = ri[RI_NFIN]
        if n_new >= 0:
            if p.pi[P_DETAIL]:
                log_detail(rep, log, cur, n_new)
            dt = dt_new
            pm = RI_PM
            ri[pm] = n_dec
            ri[pm + 1] = k_now(p, rep) if n_new > 0 else 0
            ri[pm + 2] = dec_tok
            ri[pm + 3] = spec_tok
            ri[pm + 4] = pre_tok
            ri[pm + 5] = n_pre
            ri[pm + 6] = ri[RI_BLAST] if n_new > 0 else 0
            ri[pm + 7] = pre_rows
            ri[pm + 8] = n_new
            rf[RF_PDT] = dt
            rf[RF_PCTX] = ctx
            ri[RI_PENDN] = n_new
            ri[RI_PENDBUF] = 0 if pend_in_2 else 1
            ri[RI_STEPS] += 1
        if pend_n >= 0:
            if p.pi[P_STOPFIN] and ri[RI_NFIN] > n_fin_before:
                return RET_FINISH
            if rf[RF_CLOCK] >= t_limit:
                return RET_EVENT


@njit(cache=True)
def run_open_loop(req: Req, rep: Rep, p: Params, acc: Acc, cost: Cost, log: Log, rows: Rows, rows2: Rows,
                  arrival: np.ndarray, next_arrival: np.ndarray) -> int:
    """One replica under open-loop arrivals, arrivals included in the compiled loop (no SimPy event per
    request). Before each run of steps every request whose arrival time is at or before the clock is
    queued, in trace order, as SimPy orders an arrival before the engine's resumption at the same time
    (workload.open_loop, ReplicaEngine._run); an idle replica jumps to the next arrival, and steps run
    until the clock passes it (run_steps' t_limit is the next arrival, as env.peek() is there).
    `next_arrival[0]` is the next request to arrive. Returns RET_IDLE once every request has arrived
    and the replica is idle, else the code of run_steps for the caller (a full log, a stuck engine)."""
    # uncounted views: see simulator/borrowed.py (the caller holds the arrays for the whole call)
    req, rep, p, acc, cost, log, rows, rows2 = (borrowed(req), borrowed(rep), borrowed(p), borrowed(acc),
                                                borrowed(cost), borrowed(log), borrowed(rows), borrowed(rows2))
    n = arrival.shape[0]
    ri = rep.ri
    rf = rep.rf
    while True:
        pos = next_arrival[0]
        while pos < n and arrival[pos] <= rf[RF_CLOCK]:
            submit(req, rep, pos)
            pos += 1
        next_arrival[0] = pos
        if ri[RI_NRUN] == 0 and ri[RI_WLEN] == 0 and ri[RI_PENDN] < 0:
            if pos >= n:
                return RET_IDLE
            rf[RF_CLOCK] = arrival[pos]  # the idle engine wakes at the arrival
            continue
        t_limit = arrival[pos] if pos < n else np.inf
        code = run_steps(req, rep, p, acc, cost, log, rows, rows2, t_limit)
        ri[RI_NFIN] = 0  # nobody listens for finishes in open loop
        if code != RET_EVENT and code != RET_IDLE:
            return code


@njit(cache=True, inline='always')
def k_now(p: Params, rep: Rep) -> int:
    """The K the last async schedule set (stored for its log record)."""
    return rep.ri[RI_KLAST]


@njit(cache=True)
def seed_rng(seed: int) -> None:
    np.random.seed(seed)
