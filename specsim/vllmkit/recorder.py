"""A vLLM scheduler that records every engine step as it is served: composition and timing.

vLLM loads a scheduler class by name (`scheduler_cls="specsim.vllmkit.recorder.RecordingScheduler"`)
inside its engine-core process. This subclass of vLLM's own `Scheduler` (the async variant for
async engines) changes nothing it decides; it writes one JSON line per step to the file named by
`$SPECSIM_STEP_LOG`:

    {"t": start of schedule() (perf_counter, s), "s": seconds inside schedule(),
     "u": seconds inside update_from_output(), "w": requests unfinished after it,
     "rows": [[new, computed_before, drafts, prompt_tokens], ...]}

The time from one schedule() to the next is the step's whole period as served: scheduling, the
model forward and sampling, the drafter, output processing and the hand-off to the front end. The
profiler fits its cost model to that period (not to `elapsed_ms`, which leaves the scheduler,
the drafter hand-off and the IPC out), and the fidelity and verify studies record live servers the
same way. A step's line is written (and flushed) as soon as its output is processed.
"""

from __future__ import annotations

import atexit
import json
import os
import time
from collections import deque
from typing import Any

ENV = "SPECSIM_STEP_LOG"
SCHEDULER = "specsim.vllmkit.recorder.RecordingScheduler"
ASYNC_SCHEDULER = "specsim.vllmkit.recorder.RecordingAsyncScheduler"


class _Recorder:
    """The recording half, mixed into vLLM's scheduler classes.

    Steps wait in a FIFO from schedule() to their update_from_output(): vLLM processes outputs in
    the order it scheduled (under async scheduling the next step is scheduled first)."""

    def _rec_init(self) -> None:
        path = os.environ.get(ENV)
        self._rec_file = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115
        self._rec_pending: deque[dict[str, Any]] = deque()
        if self._rec_file is not None:
            atexit.register(self._rec_flush)

    def _rec_write(self, rec: dict[str, Any]) -> None:
        assert self._rec_file is not None
        self._rec_file.write(json.dumps(rec, separators=(",", ":")) + "\n")
        self._rec_file.flush()

    def _rec_flush(self) -> None:
        if self._rec_file is None:
            return
        while self._rec_pending:
            self._rec_write(self._rec_pending.popleft())

    def _rec_schedule(self, schedule: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        out = schedule(*args, **kwargs)
        t1 = time.perf_counter()
        if self._rec_file is None:
            return out
        rows = []
        for rid, new in out.num_scheduled_tokens.items():
            req = self.requests.get(rid)  # type: ignore[attr-defined]
            if req is None:
                continue
            drafts = out.scheduled_spec_decode_tokens.get(rid, ())
            rows.append([int(new), int(req.num_computed_tokens) - int(new), len(drafts), int(req.num_prompt_tokens)])
        self._rec_pending.append({"t": t0, "s": t1 - t0, "u": 0.0, "rows": rows})
        return out

    def _rec_update(self, update: Any, *args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        out = update(*args, **kwargs)
        if self._rec_file is not None and self._rec_pending:
            rec = self._rec_pending.popleft()
            rec["u"] = time.perf_counter() - t0
            rec["w"] = int(self.get_num_unfinished_requests())  # type: ignore[attr-defined]
            # written (and flushed) before the step's outputs leave the engine core, so a reader
            # that has seen a request finish has every step up to that one
            self._rec_write(rec)
        return out


def _make(base: type) -> type:
    class Recording(_Recorder, base):  # type: ignore[valid-type, misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._rec_init()

        def schedule(self, *args: Any, **kwargs: Any) -> Any:
            return self._rec_schedule(super().schedule, *args, **kwargs)

        def update_from_output(self, *args: Any, **kwargs: Any) -> Any:
            return self._rec_update(super().update_from_output, *args, **kwargs)

        def shutdown(self) -> None:
            self._rec_flush()
            super().shutdown()

    return Recording


def __getattr__(name: str) -> type:
    # NOTE: built on first use so that importing specsim never imports vLLM
    if name == "RecordingScheduler":
        from vllm.v1.core.sched.scheduler import Scheduler

        cls = _make(Scheduler)
    elif name == "RecordingAsyncScheduler":
        from vllm.v1.core.sched.async_scheduler import AsyncScheduler

        cls = _make(AsyncScheduler)
    else:
        raise AttributeError(name)
    cls.__name__ = cls.__qualname__ = name
    cls.__module__ = __name__
    globals()[name] = cls
    return cls


MAX_STEP_GAP_S = 120.0
"""Longer than any engine step (a step here takes at most a few seconds): a longer gap between two
recorded steps is an engine restart, not a period."""


def read_steps(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The recorded steps of one or more engines, with `period` (s) where the next step followed at once.

    A step's period is the time to the next schedule(); a step after which no request was left
    (the engine then waited for work) has none, nor has the last step before an engine restart.
    """
    steps: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                steps.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a killed engine
    for a, b in zip(steps, steps[1:], strict=False):
        # NOTE: one file can hold several engine starts (a resumed study appends to it); the gap from
        # one engine's last step to the next engine's first is no step's period
        if a["rows"] and a.get("w", 1) > 0 and 0 <= b["t"] - a["t"] <= MAX_STEP_GAP_S:
            a["period"] = b["t"] - a["t"]
    return steps
