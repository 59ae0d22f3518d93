"""A vLLM stat logger that keeps every engine step's composition, timing and draft counters.

vLLM calls `record` once per engine step (frontend side). With
`enable_logging_iteration_details=True` the scheduler stats carry that step's composition
(prefill/decode requests and tokens) and `elapsed_ms`, the engine core's own time for executing
the step; `spec_decoding_stats` carries the step's drafts and accepted tokens.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class StepRecord:
    """One engine step as seen by the stat logger."""

    ctx_requests: int
    ctx_tokens: int
    gen_requests: int
    gen_tokens: int
    elapsed_ms: float
    wall: float
    """time.monotonic() when the frontend recorded the step."""
    num_drafts: int = 0
    num_draft_tokens: int = 0
    num_accepted_tokens: int = 0
    accepted_per_pos: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for checkpoints)."""
        d = asdict(self)
        d["accepted_per_pos"] = list(self.accepted_per_pos)
        return d


class StepLogger:
    """Collects StepRecords; attach with `attach(llm)`, read `steps`, `clear()` between runs."""

    def __init__(self) -> None:
        self.steps: list[StepRecord] = []
        self.spec_totals = {"num_drafts": 0, "num_draft_tokens": 0, "num_accepted_tokens": 0}
        self.accepted_per_pos: list[int] = []

    def attach(self, llm: Any) -> StepLogger:
        """Append this logger to an `vllm.LLM`'s stat loggers (stats must be enabled)."""
        manager = getattr(llm.llm_engine, "logger_manager", None)
        if manager is None:
            raise RuntimeError("vLLM stats are disabled: build the LLM with disable_log_stats=False")
        manager.stat_loggers.append(self)
        return self

    def clear(self) -> None:
        """Forget recorded steps and counters."""
        self.steps = []
        self.spec_totals = {k: 0 for k in self.spec_totals}
        self.accepted_per_pos = []

    # --- vLLM's stat logger interface -------------------------------------------------------
    def record(
        self,
        scheduler_stats: Any,
        iteration_stats: Any,
        mm_cache_stats: Any = None,
        engine_idx: int = 0,
        **_: Any,
    ) -> None:
        """Called by vLLM once per engine step."""
        if scheduler_stats is None:
            return
        spec = getattr(scheduler_stats, "spec_decoding_stats", None)
        drafts = draft_tokens = accepted = 0
        per_pos: tuple[int, ...] = ()
        if spec is not None:
            drafts = int(spec.num_drafts)
            draft_tokens = int(spec.num_draft_tokens)
            accepted = int(spec.num_accepted_tokens)
            per_pos = tuple(int(x) for x in getattr(spec, "num_accepted_tokens_per_pos", []) or [])
            self.spec_totals["num_drafts"] += drafts
            self.spec_totals["num_draft_tokens"] += draft_tokens
            self.spec_totals["num_accepted_tokens"] += accepted
            if len(per_pos) > len(self.accepted_per_pos):
                self.accepted_per_pos += [0] * (len(per_pos) - len(self.accepted_per_pos))
            for i, v in enumerate(per_pos):
                self.accepted_per_pos[i] += v
        details = getattr(scheduler_stats, "iteration_details", None)
        if details is None or getattr(details, "is_dummy", False):
            return
        self.steps.append(
            StepRecord(
                ctx_requests=int(details.num_ctx_requests),
                ctx_tokens=int(details.num_ctx_tokens),
                gen_requests=int(details.num_generation_requests),
                gen_tokens=int(details.num_generation_tokens),
                elapsed_ms=float(details.elapsed_ms),
                wall=time.monotonic(),
                num_drafts=drafts,
                num_draft_tokens=draft_tokens,
                num_accepted_tokens=accepted,
                accepted_per_pos=per_pos,
            )
        )

    def log(self) -> None:
        """No periodic logging."""

    def log_engine_initialized(self) -> None:
        """Nothing to log."""

    def record_sleep_state(self, *args: Any, **kwargs: Any) -> None:
        """Ignored."""

    def record_admission_rejection(self, *args: Any, **kwargs: Any) -> None:
        """Ignored."""


def decode_steps(steps: list[StepRecord], batch: int, k: int) -> list[StepRecord]:
    """Pure decode steps with exactly `batch` sequences each verifying k+1 tokens."""
    return [
        s
        for s in steps
        if s.ctx_requests == 0 and s.gen_requests == batch and s.gen_tokens == batch * (k + 1)
    ]


def prefill_steps(steps: list[StepRecord], tokens: int) -> list[StepRecord]:
    """Prefill-only steps that processed exactly `tokens` prompt tokens."""
    return [s for s in steps if s.gen_requests == 0 and s.ctx_tokens == tokens]
