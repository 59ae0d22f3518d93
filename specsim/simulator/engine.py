"""One engine replica as a SimPy process around the compiled step loop (`kernel.run_steps`).

SimPy owns the external events: arrivals (open loop), clients (closed loop) and the router. Between
two of them the replica runs engine iterations on its own clock inside `kernel.run_steps`, then
yields to SimPy until that clock: the same event order as one SimPy timeout per step, far cheaper.
`VllmReplicaEngine` (vllm_oracle.py) swaps the compiled scheduler for vLLM's own.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import simpy

import specsim.simulator.kernel as kernel
from specsim.errors import SpecsimError
from specsim.simulator.prefix import ARENA_DTYPE
from specsim.simulator.state import RequestTable

_LOG_ROWS = 4096


class StepLog:
    """Composition and duration of every step of one replica (kernel.L_* / LF_* columns)."""

    def __init__(self, detail: bool, max_rows: int) -> None:
        self.detail = detail
        self.max_rows = max_rows
        self.int_cols: list[list[np.ndarray]] = [[] for _ in range(kernel.L_NCOL)]
        """Flushed chunks of each integer column (int32)."""
        self.float_cols: list[list[np.ndarray]] = [[] for _ in range(kernel.LF_NCOL)]
        self.det_chunks: list[np.ndarray] = []
        self.pre_chunks: list[np.ndarray] = []
        self.arrays = self._fresh(_LOG_ROWS)

    def _fresh(self, rows: int) -> kernel.Log:
        det_rows = max(rows * 16, self.max_rows * 4) if self.detail else 1
        return kernel.Log(
            np.zeros((rows, kernel.L_NCOL), dtype=np.int64), np.zeros((rows, kernel.LF_NCOL)),
            np.zeros((det_rows, 5), dtype=np.int64), np.zeros((max(det_rows // 4, 1), 2), dtype=np.int64))

    def flush(self, ri: np.ndarray) -> None:
        """Move the rows written so far out of the kernel's arrays (and make room for more).

        NOTE: kept per column, integers as int32 (counts, tokens and blocks fit), so a day of traffic's
        millions of steps take half the memory and `columns()` never holds two copies of the log."""
        n = int(ri[kernel.RI_LOGN])
        a = self.arrays
        if n:
            for j in range(kernel.L_NCOL):
                self.int_cols[j].append(a.li[:n, j].astype(np.int32))
            for j in range(kernel.LF_NCOL):
                self.float_cols[j].append(a.lf[:n, j].copy())
        if self.detail:
            self.det_chunks.append(a.det[: int(ri[kernel.RI_DETN])].copy())
            self.pre_chunks.append(a.pre[: int(ri[kernel.RI_PREN])].copy())
        grow = min(a.li.shape[0] * 2, 1 << 20) if n >= a.li.shape[0] else a.li.shape[0]
        if grow != a.li.shape[0]:
            self.arrays = self._fresh(grow)
        ri[kernel.RI_LOGN] = ri[kernel.RI_DETN] = ri[kernel.RI_PREN] = 0

    @staticmethod
    def _column(parts: list[np.ndarray], dtype: type) -> np.ndarray:
        """One column from its chunks, which it then holds alone (the chunks are freed)."""
        col = np.concatenate(parts) if parts else np.zeros(0, dtype)
        parts[:] = [col] if len(col) else []
        return col

    def columns(self) -> dict[str, np.ndarray]:
        """The whole log as named columns."""
        li = [self._column(self.int_cols[j], np.int32) for j in range(kernel.L_NCOL)]
        lf = [self._column(self.float_cols[j], np.float64) for j in range(kernel.LF_NCOL)]
        return {
            "start": lf[kernel.LF_START], "duration": lf[kernel.LF_DUR],
            "scheduled": li[kernel.L_SCHED], "basis_batch": li[kernel.L_BASIS],
            "decoding": li[kernel.L_DEC], "k": li[kernel.L_K],
            "decode_tokens": li[kernel.L_DECTOK], "spec_tokens": li[kernel.L_SPECTOK],
            "prefill_tokens": li[kernel.L_PRETOK], "prefill_rows": li[kernel.L_PREROWS],
            "emitted": li[kernel.L_EMIT], "preempted": li[kernel.L_PREEMPT],
            "running": li[kernel.L_RUN], "waiting": li[kernel.L_WAIT], "context_tokens": lf[kernel.LF_CTX],
            "free_blocks": li[kernel.L_FREE], "accepted": li[kernel.L_ACC],
            "draft_rows": li[kernel.L_DROWS],
        }

    def detail_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """(scheduled rows [step, request, tokens, drafts, padded], preemptions [step, request])."""
        det = np.concatenate(self.det_chunks) if self.det_chunks else np.zeros((0, 5), np.int64)
        pre = np.concatenate(self.pre_chunks) if self.pre_chunks else np.zeros((0, 2), np.int64)
        return det, pre


def _family_state(params: kernel.Params) -> tuple[np.ndarray, np.ndarray]:
    """Fresh adaptive-family state: each SGLang slot at --speculative-num-steps where that is a
    candidate, else at its middle candidate; its EMA at that step - 1 (AdaptiveStepSlot.__init__)."""
    fsi = np.zeros(kernel.FS_SIZE, dtype=np.int64)
    fsf = np.zeros(kernel.MAX_SLOTS + 4096)
    fsi[kernel.FS_PSLOT] = -1
    if params.fam[kernel.F_FAMILY] == kernel.FAM_SGLANG:
        init = int(params.fam[kernel.F_INIT])
        for s in range(int(params.fam[kernel.F_SLOTS])):
            n = int(params.ftab[s, 1])
            cands = [int(x) for x in params.ftab[s, 2:2 + n]]
            idx = cands.index(init) if init in cands else n // 2
            fsi[2 * s] = idx
            fsf[s] = float(cands[idx]) - 1.0
    return fsi, fsf


def _block_pool(blocks: int, identities: int) -> dict[str, np.ndarray]:
    """A replica's block pool with prefix caching: every block free and unhashed, the stack popping
    the lowest ids first (vLLM's initial free queue is in id order)."""
    minus = np.full(blocks, -1, dtype=np.int64)
    return {"blk_ref": np.zeros(blocks, dtype=np.int64), "blk_hash": minus.copy(), "lru_prev": minus.copy(),
            "lru_next": minus.copy(), "stack": np.arange(blocks - 1, -1, -1, dtype=np.int64),
            "hmap": np.full(max(identities, 1), -1, dtype=ARENA_DTYPE), "hnext": minus.copy()}


class ReplicaEngine:
    """A continuous-batching replica that runs steps while it has requests."""

    def __init__(
        self,
        env: simpy.Environment,
        index: int,
        table: RequestTable,
        params: kernel.Params,
        acc: kernel.Acc,
        cost: kernel.Cost,
        num_blocks: int,
        on_finish: Callable[[int], None] | None,
        detail: bool = False,
        identities: int = 0,
    ) -> None:
        self.env = env
        self.index = index
        self.table = table
        self.req = table.cols
        self.params = params
        self.acc = acc
        self.cost = cost
        self.on_finish = on_finish
        max_seqs = int(params.pi[kernel.P_MAXSEQS])
        ri = np.zeros(kernel.RI_SIZE, dtype=np.int64)
        ri[kernel.RI_FREE] = num_blocks
        ri[kernel.RI_HYST] = -1
        ri[kernel.RI_PENDN] = -1
        one = np.zeros(1, dtype=np.int64)
        pool: dict[str, np.ndarray] = {"blk_ref": one, "blk_hash": one, "lru_prev": one, "lru_next": one,
                                       "stack": one, "hmap": np.full(1, -1, dtype=ARENA_DTYPE), "hnext": one}
        if params.pi[kernel.P_PREFIX]:
            pool = _block_pool(num_blocks, identities)
            ri[kernel.RI_STACK] = num_blocks
            ri[kernel.RI_LRU_HEAD] = ri[kernel.RI_LRU_TAIL] = -1
        self.rep = kernel.Rep(
            running=np.zeros(max_seqs + 1, dtype=np.int64),
            waiting=np.zeros(table.n + 1, dtype=np.int64),
            ri=ri, rf=np.zeros(kernel.RF_SIZE),
            fin=np.zeros(table.n + 1, dtype=np.int64),
            itl_hist=np.zeros(kernel.ITL_NBINS, dtype=np.int64),
            **pool,
            fsi=_family_state(params)[0], fsf=_family_state(params)[1],
        )
        self.rows = kernel.new_rows(max_seqs + 1)
        self.rows2 = kernel.new_rows(max_seqs + 1)
        self.log = StepLog(detail, max_seqs + 1)
        self._wake: simpy.Event | None = None
        self.process = env.process(self._run())

    # ---- interface for the router -------------------------------------------------------------
    def submit(self, i: int) -> None:
        """Queue request i; wake the engine if idle."""
        kernel.submit(self.req, self.rep, i)
        if self._wake is not None and not self._wake.triggered:
            self._wake.succeed()

    @property
    def load(self) -> int:
        """Outstanding requests (running + waiting), for least-loaded routing."""
        return int(self.rep.ri[kernel.RI_NRUN] + self.rep.ri[kernel.RI_WLEN])

    @property
    def busy_time(self) -> float:
        return float(self.rep.rf[kernel.RF_BUSY])

    def _has_work(self) -> bool:
        return self.load > 0 or self.rep.ri[kernel.RI_PENDN] >= 0

    # ---- the step loop ------------------------------------------------------------------------
    def _advance(self, t_limit: float) -> None:
        """Run steps from env.now until t_limit (subclasses replace the scheduler)."""
        while True:
            code = kernel.run_steps(self.req, self.rep, self.params, self.acc, self.cost, self.log.arrays,
                                    self.rows, self.rows2, t_limit)
            if code == kernel.RET_LOGFULL:
                self.log.flush(self.rep.ri)
                continue
            if code == kernel.RET_STUCK:
                raise SpecsimError(self._stuck_message())
            return

    def run_open_loop(self, arrival: np.ndarray) -> None:
        """Serve requests 0..n-1 arriving at `arrival` (seconds, sorted) on this replica alone, without
        SimPy: the compiled loop queues arrivals itself (kernel.run_open_loop), which is what makes a
        day of traffic take seconds. Equivalent to the SimPy process with `workload.open_loop`."""
        nxt = np.zeros(1, dtype=np.int64)
        self.rep.rf[kernel.RF_CLOCK] = 0.0
        while True:
            code = kernel.run_open_loop(self.req, self.rep, self.params, self.acc, self.cost, self.log.arrays,
                                        self.rows, self.rows2, arrival, nxt)
            if code == kernel.RET_LOGFULL:
                self.log.flush(self.rep.ri)
                continue
            if code == kernel.RET_STUCK:
                raise SpecsimError(self._stuck_message())
            if code == kernel.RET_IDLE:
                return
            raise RuntimeError(f"the step loop returned {code} in open loop")  # pragma: no cover

    def _run(self):  # noqa: ANN202 - SimPy process generator
        env = self.env
        rep = self.rep
        while True:
            if not self._has_work():
                self._wake = env.event()
                yield self._wake
                self._wake = None
            rep.rf[kernel.RF_CLOCK] = env.now
            self._advance(env.peek())
            yield env.timeout(rep.rf[kernel.RF_CLOCK] - env.now)
            nfin = int(rep.ri[kernel.RI_NFIN])
            if nfin:
                done = rep.fin[:nfin].tolist()
                rep.ri[kernel.RI_NFIN] = 0
                if self.on_finish is not None:
                    for i in done:
                        self.on_finish(i)

    def finish_log(self) -> None:
        self.log.flush(self.rep.ri)

    def _stuck_message(self) -> str:
        ri = self.rep.ri
        i = int(self.rep.waiting[ri[kernel.RI_WHEAD]]) if ri[kernel.RI_WLEN] else -1
        pi = self.params.pi
        if i >= 0:
            tokens = int(self.req.inp[i] + self.req.gen[i])
            return (f"request {i} ({tokens} tokens to prefill) can never be scheduled: "
                    f"max_num_batched_tokens {pi[kernel.P_INBUDGET]}, chunked prefill "
                    f"{'on' if pi[kernel.P_CHUNKED] else 'off'}, {ri[kernel.RI_FREE]} free KV blocks of "
                    f"{pi[kernel.P_BS]} tokens")
        return "the engine could schedule nothing although requests are running (max_model_len reached?)"
