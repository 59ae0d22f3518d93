"""The decoding batch of one replica as compact numpy columns, updated in place every step.

Gathering from and scattering to the whole request table each step costs more than the step's
arithmetic, so requests past their prefill live here while they decode and are written back to
the table only when membership changes. Counters that grow by the same amount for every member
(decode steps, draft tokens, verification steps) are kept as one running total per batch plus a
per-member base, so a step updates a scalar instead of an array.
"""

from __future__ import annotations

import numpy as np

from specsim.simulator.state import RequestTable

# columns gathered from / written back to the request table: name in batch -> name in table
_COLUMNS = {
    "gen": "gen",
    "out": "out",
    "inp": "inp",
    "trace": "trace_offset",
    "tlen": "trace_length",
    "acc": "accepted",
    "last": "last_token",
    "itl_max": "itl_max",
    "floor_off": "floor_off",
}
# per-member counters derived from batch running totals: total name -> table column
_COUNTERS = {"steps": "decode_steps", "drafted": "drafted", "verify": "verify_steps"}


class DecodeBatch:
    """Requests in their decode phase, in admission order, as numpy columns."""

    def __init__(self, table: RequestTable) -> None:
        self.t = table
        self.idx = np.zeros(0, dtype=np.int64)
        self.total = dict.fromkeys(_COUNTERS, 0)
        self.base = {name: np.zeros(0, dtype=np.int64) for name in _COUNTERS}
        for name, col in _COLUMNS.items():
            setattr(self, name, getattr(table, col)[:0].copy())
        self.inp_sum = 0
        self.gen_sum = 0

    def __len__(self) -> int:
        return len(self.idx)

    def count(self, n: int, k: int, per_row_k: np.ndarray | None) -> None:
        """Record one step over the first n rows at speculation length k (or per-row K)."""
        tot, base = self.total, self.base
        tot["steps"] += 1
        tot["drafted"] += k
        tot["verify"] += 1 if k else 0
        if n < len(self.idx):  # rows that sat this step out
            base["steps"][n:] -= 1
            base["drafted"][n:] -= k
            if k:
                base["verify"][n:] -= 1
        if per_row_k is not None:  # acceptance floor: some rows drafted fewer tokens
            short = per_row_k < k
            base["drafted"][:n][short] -= k - per_row_k[short]
            base["verify"][:n][short & (per_row_k == 0)] -= 1

    def _write_back(self) -> None:
        ids = self.idx
        t = self.t
        for name, col in _COLUMNS.items():
            getattr(t, col)[ids] = getattr(self, name)
        for name, col in _COUNTERS.items():
            getattr(t, col)[ids] = self.base[name] + self.total[name]

    def set_members(self, members: list[int]) -> None:
        """Make the batch exactly `members` (in order): write everyone back, then re-gather."""
        self._write_back()
        idx = np.asarray(members, dtype=np.int64)
        self.idx = idx
        t = self.t
        for name, col in _COLUMNS.items():
            setattr(self, name, getattr(t, col)[idx])
        for name, col in _COUNTERS.items():
            self.base[name] = getattr(t, col)[idx] - self.total[name]
        self.inp_sum = int(self.inp.sum())
        self.gen_sum = int(self.gen.sum())

    def flush(self) -> None:
        """Write the batch's columns back to the table."""
        self._write_back()
