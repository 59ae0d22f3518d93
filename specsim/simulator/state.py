"""Per-request state of a simulation, held as numpy columns indexed by request number."""

from __future__ import annotations

import numpy as np

from specsim.formats.traffic import Traffic


class RequestTable:
    """Columns for every request of the trace; engines update them in place, metrics read them."""

    def __init__(self, traffic: Traffic) -> None:
        n = len(traffic)
        self.n = n
        self.inp = traffic.input_lengths.astype(np.int64).copy()
        self.out = traffic.output_lengths.astype(np.int64).copy()
        nan = np.full(n, np.nan)
        self.arrival = nan.copy()
        self.first_scheduled = nan.copy()
        self.first_token = nan.copy()
        self.last_token = nan.copy()
        self.finish = nan.copy()
        self.replica = np.full(n, -1, dtype=np.int64)
        self.gen = np.zeros(n, dtype=np.int64)
        """Output tokens generated so far."""
        self.prefilled = np.zeros(n, dtype=np.int64)
        """Prompt (+ recomputed) tokens prefilled since the last admission."""
        self.prefill_target = np.zeros(n, dtype=np.int64)
        """Tokens to prefill at this admission: the prompt plus any output being recomputed."""
        self.blocks = np.zeros(n, dtype=np.int64)
        """KV-cache blocks held."""
        self.accepted = np.zeros(n, dtype=np.int64)
        self.drafted = np.zeros(n, dtype=np.int64)
        self.verify_steps = np.zeros(n, dtype=np.int64)
        """Decode steps with K > 0."""
        self.decode_steps = np.zeros(n, dtype=np.int64)
        self.preemptions = np.zeros(n, dtype=np.int64)
        self.itl_max = np.zeros(n)
        self.floor_off = np.zeros(n, dtype=bool)
        """True once the acceptance floor stopped speculation for the request."""
        self.trace_offset = np.zeros(n, dtype=np.int64)
        self.trace_length = np.ones(n, dtype=np.int64)
