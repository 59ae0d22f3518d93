"""One engine replica as a SimPy process: vLLM-V1-like batch formation, then one timed step.

Each iteration: decoding requests first (each needs 1 + K tokens of the step budget), then
requests part-way through a chunked prefill, then waiting requests FCFS while `max_num_seqs`,
the token budget and free KV blocks allow. When the decoding batch cannot get KV blocks, the
most recently admitted running request is preempted and later recomputed (vLLM's default).

The decoding batch is updated with numpy (see batch.py). Between external events the engine
runs steps on a local clock and yields to SimPy only when another event is due, a request
finishes, or it runs out of work: the same event order as one SimPy timeout per step, cheaper.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import simpy

from specsim.formats.policy import KController, Policy
from specsim.simulator.acceptance import AcceptanceReplay
from specsim.simulator.batch import DecodeBatch
from specsim.simulator.config import SimConfig
from specsim.simulator.costs import StepCostModel
from specsim.simulator.state import RequestTable


class StepLog:
    """Composition and duration of every step (columns appended as lists, read as arrays)."""

    def __init__(self) -> None:
        self.start: list[float] = []
        self.duration: list[float] = []
        self.basis_batch: list[int] = []
        self.decoding: list[int] = []
        self.k: list[int] = []
        self.decode_tokens: list[int] = []
        self.prefill_tokens: list[int] = []
        self.emitted: list[int] = []

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k, v in vars(self).items()}


@dataclass
class StepPlan:
    """What one step does: how many batch rows decode, their K, and which prefill chunks run."""

    n: int
    k: int
    row_k: np.ndarray | None
    """Per-row K when the acceptance floor switched some rows off, else None."""
    prefills: list[tuple[int, int]]
    dt: float


class ReplicaEngine:
    """A continuous-batching engine that runs steps while it has requests."""

    def __init__(
        self,
        env: simpy.Environment,
        index: int,
        table: RequestTable,
        cost: StepCostModel,
        policy: Policy,
        replay: AcceptanceReplay | None,
        cfg: SimConfig,
        num_blocks: int,
        on_finish: Callable[[int], None],
        itl_samples: list[np.ndarray],
    ) -> None:
        self.env = env
        self.index = index
        self.t = table
        self.cost = cost
        self.kc = KController(policy)
        self.floor = policy.acceptance_floor
        self.replay = replay
        self.cfg = cfg
        self.num_blocks = num_blocks
        self.kv_limited = num_blocks < (1 << 39)
        self.on_finish = on_finish
        self.itl_samples = itl_samples
        self.running: list[int] = []
        self.waiting: deque[int] = deque()
        self.prefill_blocks: dict[int, int] = {}  # running requests still prefilling -> blocks held
        self.batch = DecodeBatch(table)
        self.log = StepLog()
        self.busy_time = 0.0
        self._wake: simpy.Event | None = None
        self._dirty = False
        self._exact_free: int | None = None
        self.process = env.process(self._run())

    # ---- interface for the router -------------------------------------------------------------
    def submit(self, i: int) -> None:
        """Queue request i; wake the engine if idle."""
        self.waiting.append(i)
        if self._wake is not None and not self._wake.triggered:
            self._wake.succeed()

    @property
    def load(self) -> int:
        """Outstanding requests (running + waiting), for least-loaded routing."""
        return len(self.running) + len(self.waiting)

    # ---- the step loop ------------------------------------------------------------------------
    def _run(self):  # noqa: ANN202 - SimPy process generator
        env = self.env
        while True:
            if not self.running and not self.waiting:
                self._wake = env.event()
                yield self._wake
                self._wake = None
            local = env.now
            while True:
                plan = self._schedule(local)
                local += plan.dt
                self.busy_time += plan.dt
                finished = self._apply(plan, local)
                if finished or env.peek() <= local or not (self.running or self.waiting):
                    break
            yield env.timeout(local - env.now)
            for i in finished:
                self.on_finish(i)

    def _sync_batch(self) -> None:
        if self._dirty:
            self.batch.set_members([i for i in self.running if i not in self.prefill_blocks])
            self._dirty = False

    def _preempt_last(self) -> None:
        """Preempt the most recently admitted running request (recompute later)."""
        self.batch.flush()
        v = self.running.pop()
        self.prefill_blocks.pop(v, None)
        self.t.prefilled[v] = 0
        self.t.preemptions[v] += 1
        self.waiting.appendleft(v)
        self._dirty = True
        self._sync_batch()

    def _decode_blocks(self, n: int, k: int | np.ndarray) -> int:
        """Exact KV blocks the first n decoding rows need this step (context plus K draft slots)."""
        if not n:
            return 0
        b, bs = self.batch, self.cfg.block_size
        return int(((b.inp[:n] + b.gen[:n] + k + (bs - 1)) // bs).sum())

    def _schedule(self, now: float) -> StepPlan:
        t, cfg = self.t, self.cfg
        self._sync_batch()
        b = self.batch
        n = len(b)
        basis = len(self.running) if cfg.k_basis == "running" else n
        k_step = self.kc.k(basis) if self.replay is not None else 0
        k: int | np.ndarray = k_step
        row_k: np.ndarray | None = None
        budget = cfg.max_num_batched_tokens
        if n:
            if k_step and self.replay.has_drafted:  # the drafter proposes fewer where it finds nothing
                k = row_k = self.replay.drafted(b.trace, b.tlen, b.gen, k_step)
            if self.floor is not None and k_step and b.floor_off.any():
                k = row_k = np.where(b.floor_off, 0, row_k if row_k is not None else k_step)
            need = n + (int(row_k.sum()) if row_k is not None else n * k_step)
            if need > budget:  # rare: schedule the prefix of the batch that fits
                per = 1 + (row_k if row_k is not None else np.full(n, k_step))
                n = int(np.searchsorted(np.cumsum(per), budget, side="right"))
                if row_k is not None:
                    k = row_k = row_k[:n]
                need = n + (int(row_k.sum()) if row_k is not None else n * k_step)
            budget -= need
        if n == len(b):
            ctx = b.inp_sum + b.gen_sum
        else:
            ctx = int(b.inp[:n].sum() + b.gen[:n].sum())
        free = 1 << 60
        if self.kv_limited:
            bs = cfg.block_size
            avail = self.num_blocks - sum(self.prefill_blocks.values())
            # cheap upper bound on the decoding rows' blocks; exact count only when it is tight
            kk = int(row_k.sum()) if row_k is not None else n * k_step
            bound = -(-(ctx + kk) // bs) + n
            if bound > avail:
                used = self._decode_blocks(n, k)
                while n and used > avail:
                    self._preempt_last()
                    b = self.batch
                    n = min(n, len(b))
                    if row_k is not None:
                        k = row_k = row_k[:n]
                    avail = self.num_blocks - sum(self.prefill_blocks.values())
                    used = self._decode_blocks(n, k)
                budget = cfg.max_num_batched_tokens - (n + (int(row_k.sum()) if row_k is not None else n * k_step))
                ctx = int(b.inp[:n].sum() + b.gen[:n].sum()) if n else 0
                bound = used
            free = avail - bound
        self._exact_free = None
        prefills: list[tuple[int, int]] = []
        if self.prefill_blocks and budget > 0:
            for i in list(self.prefill_blocks):
                if budget <= 0:
                    break
                rem = int(t.prefill_target[i] - t.prefilled[i])
                chunk, free = self._prefill_chunk(i, rem, budget, free, n, k)
                if chunk:
                    prefills.append((i, chunk))
                    budget -= chunk
        while self.waiting and len(self.running) < cfg.max_num_seqs and budget > 0:
            i = self.waiting[0]
            rem = int(t.inp[i] + t.gen[i])
            if not cfg.chunked_prefill and rem > budget:
                break
            self.prefill_blocks[i] = 0
            chunk, free = self._prefill_chunk(i, rem, budget, free, n, k)
            if not chunk:
                del self.prefill_blocks[i]
                break
            t.prefill_target[i] = rem
            self.waiting.popleft()
            self.running.append(i)
            if t.first_scheduled[i] != t.first_scheduled[i]:  # NaN: first admission
                t.first_scheduled[i] = now
            prefills.append((i, chunk))
            budget -= chunk
        ptoks = sum(c for _, c in prefills)
        kmean = (float(row_k.mean()) if row_k is not None and n else float(k_step)) if n else 0.0
        dt = self.cost.step_s(n, kmean, ptoks, ctx)
        log = self.log
        log.start.append(now)
        log.duration.append(dt)
        log.basis_batch.append(basis)
        log.decoding.append(n)
        log.k.append(k_step if n else 0)
        log.decode_tokens.append(n + (int(row_k.sum()) if row_k is not None else n * k_step))
        log.prefill_tokens.append(ptoks)
        return StepPlan(n, k_step, row_k, prefills, dt)

    def _prefill_chunk(
        self, i: int, rem: int, budget: int, free: int, n: int, k: int | np.ndarray
    ) -> tuple[int, int]:
        """Tokens of request i to prefill this step and the free blocks left (0 tokens if none fit)."""
        t, bs = self.t, self.cfg.block_size
        done = int(t.prefilled[i])
        held = self.prefill_blocks[i]
        chunk = min(rem, budget) if self.cfg.chunked_prefill else rem
        need = -(-(done + chunk) // bs) - held
        if need > free and self.kv_limited and self._exact_free is None:
            # the bound was pessimistic: count the decoding rows' blocks exactly, once per step
            avail = self.num_blocks - sum(self.prefill_blocks.values())
            self._exact_free = avail - self._decode_blocks(n, k)
            free = max(free, self._exact_free)
        if need > free:
            if not self.cfg.chunked_prefill:
                return 0, free
            chunk = min((held + free) * bs - done, rem, budget)
            if chunk <= 0:
                return 0, free
            need = -(-(done + chunk) // bs) - held
        need = max(need, 0)
        self.prefill_blocks[i] = held + need
        return chunk, free - need

    def _apply(self, plan: StepPlan, now: float) -> list[int]:
        t = self.t
        b = self.batch
        n, k, row_k = plan.n, plan.k, plan.row_k
        emitted = 0
        finished: list[int] = []
        if n:
            full = n == len(b)
            gen = b.gen if full else b.gen[:n]
            out = b.out if full else b.out[:n]
            last = b.last if full else b.last[:n]
            rem = out - gen
            if k:
                kk = row_k if row_k is not None else k
                acc = self.replay.accepted(b.trace[:n], b.tlen[:n], gen, kk)
                if full:
                    b.acc += acc
                else:
                    b.acc[:n] += acc
                emit = np.minimum(acc + 1, rem)
            else:
                emit = np.minimum(1, rem)
            b.count(n, k, row_k)
            gen += emit
            dec_emitted = int(emit.sum())
            b.gen_sum += dec_emitted
            emitted += dec_emitted
            gap = now - last
            self.itl_samples.append(gap)
            if full:
                np.maximum(b.itl_max, gap, out=b.itl_max)
            else:
                b.itl_max[:n] = np.maximum(b.itl_max[:n], gap)
            last.fill(now)
            if self.floor is not None and k:
                fl = self.floor
                verify = b.base["verify"][:n] + b.total["verify"]
                drafted = b.base["drafted"][:n] + b.total["drafted"]
                low = (verify >= fl.warmup_steps) & (b.acc[:n] < fl.min_rate * drafted)
                b.floor_off[:n] |= low
            done = emit >= rem
            if done.any():
                finished.extend(b.idx[:n][done].tolist())
        for i, chunk in plan.prefills:
            t.prefilled[i] += chunk
            if t.prefilled[i] >= t.prefill_target[i]:
                del self.prefill_blocks[i]
                self._dirty = True
                if t.gen[i] == 0:
                    t.first_token[i] = now
                else:  # recompute after preemption: the gap counts as an inter-token latency
                    gap = now - t.last_token[i]
                    self.itl_samples.append(np.asarray([gap]))
                    t.itl_max[i] = max(t.itl_max[i], gap)
                    t.decode_steps[i] += 1
                t.gen[i] += 1
                emitted += 1
                t.last_token[i] = now
                if t.gen[i] >= t.out[i]:
                    finished.append(i)
        self.log.emitted.append(emitted)
        if finished:
            self.batch.flush()
            for i in finished:
                self.running.remove(i)
                t.finish[i] = now
            self._dirty = True
        return finished
