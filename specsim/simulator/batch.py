"""The decoding batch of one replica as compact numpy columns, updated in place every step.

Gathering from and scattering to the whole request table each step costs more than the step's
arithmetic, so requests past their prefill live here while they decode and are written back to
the table only when they leave (finish or preemption).
"""

from __future__ import annotations

import numpy as np

from specsim.simulator.state import RequestTable

# columns copied between the request table and the batch: name in batch -> name in table
_COLUMNS = {
    "gen": "gen",
    "out": "out",
    "ctx": "ctx",
    "off": "trace_offset",
    "tlen": "trace_length",
    "acc": "accepted",
    "drafted": "drafted",
    "verify": "verify_steps",
    "dsteps": "decode_steps",
    "last": "last_token",
    "itl_sum": "itl_sum",
    "itl_max": "itl_max",
    "floor_off": "floor_off",
}


class DecodeBatch:
    """Requests in their decode phase, in admission order, as numpy columns."""

    def __init__(self, table: RequestTable) -> None:
        self.t = table
        self.idx = np.zeros(0, dtype=np.int64)
        for name, col in _COLUMNS.items():
            setattr(self, name, getattr(table, col)[:0].copy())

    def __len__(self) -> int:
        return len(self.idx)

    def _write_back(self, sel: np.ndarray | slice) -> None:
        ids = self.idx[sel]
        t = self.t
        for name, col in _COLUMNS.items():
            getattr(t, col)[ids] = getattr(self, name)[sel]

    def set_members(self, members: list[int]) -> None:
        """Make the batch exactly `members` (in order): write everyone back, then re-gather."""
        self._write_back(slice(None))
        idx = np.asarray(members, dtype=np.int64)
        self.idx = idx
        t = self.t
        for name, col in _COLUMNS.items():
            setattr(self, name, getattr(t, col)[idx])

    def flush(self) -> None:
        """Write the batch's columns back to the table (at the end of a run)."""
        self._write_back(slice(None))
