"""A vLLM scheduler that enforces specsim's queue rule: while more than `max_waiting` requests wait,
the drafts proposed after a step have at most `k` tokens.

vLLM decides K for the drafts proposed at the end of a step inside `Scheduler.schedule()`
(`num_spec_tokens_to_schedule`, from `dynamic_sd_lookup[len(num_scheduled_tokens)]`; read in
vllm/v1/core/sched/scheduler.py, 0.32) and the model runner hands it to every drafter it runs itself
(ngram, suffix, draft model, EAGLE, MTP, Medusa: `GPUModelRunner.propose_draft_token_ids`). This
subclass caps that value by the waiting queue as it stands when the step is scheduled (in
`_update_after_schedule`, the last thing `schedule()` does, so AsyncScheduler's draft placeholders see
the capped value too), the same
moment the simulator applies the rule. It records steps too when `$SPECSIM_STEP_LOG` is set
(`specsim.vllmkit.recorder`). The rule travels in `$SPECSIM_QUEUE_RULE` as "max_waiting:k".
"""

from __future__ import annotations

import os
from typing import Any

ENV = "SPECSIM_QUEUE_RULE"
SCHEDULER = "specsim.vllmkit.policy_scheduler.PolicyScheduler"
ASYNC_SCHEDULER = "specsim.vllmkit.policy_scheduler.PolicyAsyncScheduler"


def rule_text(max_waiting: int, k: int) -> str:
    return f"{int(max_waiting)}:{int(k)}"


def parse_rule(text: str | None) -> tuple[int, int] | None:
    """'max_waiting:k' -> (max_waiting, k); None or '' -> None."""
    if not text:
        return None
    try:
        a, b = text.split(":")
        rule = int(a), int(b)
    except ValueError:
        raise ValueError(f"${ENV} must read 'max_waiting:k', got {text!r}") from None
    if rule[0] < 0 or rule[1] < 0:
        raise ValueError(f"${ENV} needs max_waiting >= 0 and k >= 0, got {text!r}")
    return rule


class _QueueCap:
    """The capping half, mixed over vLLM's (recording) scheduler classes."""

    _queue_rule: tuple[int, int] | None

    def _cap(self, out: Any) -> Any:
        rule = self._queue_rule
        if rule is not None:
            waiting = self.get_request_counts()[1]  # type: ignore[attr-defined]
            if waiting > rule[0] and out.num_spec_tokens_to_schedule > rule[1]:
                out.num_spec_tokens_to_schedule = rule[1]
        return out


def _make(base: type) -> type:
    class Policy(_QueueCap, base):  # type: ignore[valid-type, misc]
        def __init__(self, *args: Any, queue_rule: tuple[int, int] | None = None, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._queue_rule = queue_rule if queue_rule is not None else parse_rule(os.environ.get(ENV))

        def _update_after_schedule(self, scheduler_output: Any) -> None:
            # NOTE: capped here, inside schedule(), not after it returns: AsyncScheduler's
            # _update_after_schedule sizes the next step's draft placeholders from this value
            super()._update_after_schedule(self._cap(scheduler_output))

    return Policy


def _async_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    vcfg = kwargs.get("vllm_config", args[0] if args else None)
    return bool(getattr(getattr(vcfg, "scheduler_config", None), "async_scheduling", False))


def __getattr__(name: str) -> type:
    # NOTE: built on first use so that importing specsim never imports vLLM
    from specsim.vllmkit import recorder

    if name == "PolicyScheduler":
        cls = _make(recorder.RecordingScheduler)

        def __new__(klass: type, *args: Any, **kwargs: Any) -> Any:  # noqa: N807
            # NOTE: `--scheduler-cls` names one class, but vLLM decides async scheduling per
            # configuration (VllmConfig.__post_init__: on by default on GPU for EAGLE, MTP, draft
            # models; off for suffix and CPU). A sync subclass under async scheduling would lose the
            # batch queue's overlap, so this class builds the async variant when the engine is async.
            if klass is cls and _async_of(args, kwargs):
                return __getattr__("PolicyAsyncScheduler")(*args, **kwargs)
            return object.__new__(klass)

        cls.__new__ = staticmethod(__new__)  # type: ignore[method-assign, assignment]
    elif name == "PolicyAsyncScheduler":
        cls = _make(recorder.RecordingAsyncScheduler)
    else:
        raise AttributeError(name)
    cls.__name__ = cls.__qualname__ = name
    cls.__module__ = __name__
    globals()[name] = cls
    return cls
