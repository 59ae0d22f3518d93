"""Per-request state of a simulation, held as numpy columns indexed by request number."""

from __future__ import annotations

import numpy as np

import specsim.simulator.kernel as kernel
from specsim.formats.traffic import Traffic
from specsim.simulator.prefix import ARENA_DTYPE


class RequestTable:
    """Columns for every request of the trace; the engine updates them in place, metrics read them.

    `cols` is the same data as the namedtuple the compiled engine takes; the attributes below are
    views of it for Python readers.
    """

    def __init__(self, traffic: Traffic) -> None:
        n = len(traffic)
        self.n = n

        def ints() -> np.ndarray:
            return np.zeros(n, dtype=np.int64)

        def nans() -> np.ndarray:
            return np.full(n, np.nan)

        self.cols = kernel.Req(
            inp=traffic.input_lengths.astype(np.int64).copy(),
            out=traffic.output_lengths.astype(np.int64).copy(),
            gen=ints(), computed=ints(), spec=ints(), held=ints(), state=ints(),
            first_sched=nans(), first_token=nans(), last_token=nans(), finish=nans(),
            itl_max=np.zeros(n),
            decode_steps=ints(), verify_steps=ints(), drafted=ints(), accepted=ints(), preemptions=ints(),
            tstart=ints(), tlen=np.ones(n, dtype=np.int64), floor_off=ints(), pchunk=ints(),
            ph=ints(), inflight=ints(), stale=ints(), cached_tokens=ints(),
            arena_off=ints(), ncached=ints(), arena_blk=np.zeros(1, dtype=ARENA_DTYPE),
            arena_id=np.full(1, -1, dtype=ARENA_DTYPE),
        )
        c = self.cols
        self.inp, self.out, self.gen = c.inp, c.out, c.gen
        self.first_scheduled, self.first_token, self.last_token, self.finish = (
            c.first_sched, c.first_token, c.last_token, c.finish)
        self.itl_max = c.itl_max
        self.decode_steps, self.verify_steps = c.decode_steps, c.verify_steps
        self.drafted, self.accepted, self.preemptions = c.drafted, c.accepted, c.preemptions
        self.arrival = nans()
        self.cached_tokens = c.cached_tokens
        self.replica = np.full(n, -1, dtype=np.int64)

    def with_arenas(self, offsets: np.ndarray, ids: np.ndarray) -> None:
        """Prefix caching: give every request its block-id and block-identity arenas."""
        self.cols = self.cols._replace(arena_off=offsets.astype(np.int64, copy=False),
                                       arena_id=ids.astype(ARENA_DTYPE, copy=False),
                                       arena_blk=np.zeros(len(ids), dtype=ARENA_DTYPE))
