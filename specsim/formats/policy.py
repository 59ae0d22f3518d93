"""The policy contract: which drafter, and how K adapts to load, that the server enforces.

The K schedule has vLLM's `num_speculative_tokens_per_batch_size` shape: inclusive, sorted,
non-overlapping ranges `[[lo, hi, K], ...]`; batch sizes no range covers get K = 0 (off).
Version 2 adds the `family` of adaptive rule (vLLM / specsim schedules, SGLang's adaptive
steps, TensorRT-LLM's draft_len_schedule with its acceptance gate) and specsim's queue and
context rules; version 1 files read unchanged (family vllm).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from specsim.errors import SpecsimError
from specsim.formats._common import _Strict, load_document
from specsim.formats.drafters import drafter_problem, normalized_params
from specsim.io import atomic_write_text

if TYPE_CHECKING:
    from specsim.formats.profile import Profile

SCHEMA = "specsim.policy"
VERSIONS = (1, 2)
SCHEDULE_TOP = 1 << 16
"""A range reaching this batch size covers every batch size an engine can have."""


class DrafterRef(_Strict):
    """The drafter a policy uses; `name` is a key of the profile's drafters."""

    name: str
    method: str
    """vLLM speculative method (ngram, suffix, draft_model, eagle, ...)."""
    model: str | None = None
    """Draft model path (draft_model / eagle / mtp)."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Only the numeric or boolean settings `specsim.formats.drafters.METHODS` lists for the method."""

    @model_validator(mode="after")
    def _allowed(self) -> DrafterRef:
        # NOTE: a policy must never name code: no custom_class, no parameter that replaces the method or model
        if why := drafter_problem(self.method, self.model, self.params):
            raise ValueError(why)
        return self

    @classmethod
    def from_profile(cls, profile: Profile, name: str) -> DrafterRef:
        """The reference to one of a profile's drafters, with the method, model and parameters it was
        measured with (a one-line error when the profile has no such drafter)."""
        spec = profile.drafters.get(name)
        if spec is None:
            have = ", ".join(profile.drafters) or "none"
            raise SpecsimError(f"drafter {name!r} is not in the profile (it has: {have})")
        return cls(name=name, method=spec.method, model=spec.model, params=dict(spec.params))


def floor_trips(accepted: int, drafted: int, verify_steps: int, min_rate: float, warmup_steps: int) -> bool:
    """The acceptance floor's rule, the one place it is written (the simulator's compiled loop and the
    live proposer both call it): after `warmup_steps` verifications, a request whose accepted / drafted
    rate is below `min_rate` stops speculating."""
    return min_rate > 0.0 and verify_steps >= warmup_steps and accepted < min_rate * drafted


class AcceptanceFloor(_Strict):
    """Stop speculating for a request whose running acceptance rate falls below `min_rate`."""

    min_rate: float = Field(gt=0.0, le=1.0)
    """Accepted / drafted tokens below which the request decodes without drafts."""
    warmup_steps: int = Field(default=4, ge=1, le=1 << 40)
    """Verification steps observed before the floor applies."""


class EngineKnobs(_Strict):
    """Engine settings the policy was tuned with (None = engine default)."""

    max_num_seqs: int | None = Field(default=None, ge=1)
    max_num_batched_tokens: int | None = Field(default=None, ge=1)


class Provenance(_Strict):
    """Where a policy came from and what it is predicted to achieve."""

    created_by: str = "specsim"
    created_at: str | None = None
    profile_sha256: str | None = None
    traffic_sha256: str | None = None
    objective: str | None = None
    slo: dict[str, float] = Field(default_factory=dict)
    predicted: dict[str, Any] = Field(default_factory=dict)
    """Predicted metrics under the tuning traffic (throughput, goodput, percentiles)."""
    baselines: dict[str, Any] = Field(default_factory=dict)
    runners_up: list[dict[str, Any]] = Field(default_factory=list)
    """The tuner's next-best distinct policies (provenance excluded), best first: `specsim verify
    --runners-up N` measures them too."""
    verification: dict[str, Any] = Field(default_factory=dict)
    """What `specsim verify` measured on the live server: verdict, per-candidate measured objective with
    confidence intervals beside the prediction (empty until verified)."""
    notes: str = ""


class SGLangSlot(_Strict):
    """One batch-size slot of SGLang's adaptive speculation (PR 24055)."""

    lo: int = Field(ge=1)
    """Smallest (CUDA-graph-padded) decode batch size of the slot; it runs to the next slot's lo."""
    steps: list[int]
    """Candidate speculative steps (draft tokens per round), increasing; 0 = off (later SGLang)."""
    up_hysteresis: float = 0.0
    """Go up from c_i when EMA > c_i - 0.5 + up."""
    down_hysteresis: float = 0.0
    """Go down to c_(i-1) when EMA <= c_(i-1) - 0.5 + down (0.5 + down when c_(i-1) is 0)."""
    ceiling_coeff: float = Field(default=0.0, ge=0.0)
    """Caps a move that does not rise at ceil(EMA * coeff) steps (0: off; SGLang 0.5.23)."""

    @field_validator("steps")
    @classmethod
    def _steps(cls, v: list[int]) -> list[int]:
        if not v or any(x < 0 for x in v) or any(b <= a for a, b in zip(v, v[1:], strict=False)):
            raise ValueError("steps must be non-empty, >= 0 and strictly increasing")
        return v


def sglang_default_slots() -> list[SGLangSlot]:
    """SGLang's defaults as PR 24055 introduced them (DEFAULT_BS_STEPS / DEFAULT_BS_HYSTERESIS)."""
    return [SGLangSlot(lo=1, steps=[1, 3, 7], up_hysteresis=0.0, down_hysteresis=-0.25),
            SGLangSlot(lo=64, steps=[1, 2, 5], up_hysteresis=0.0, down_hysteresis=0.0),
            SGLangSlot(lo=128, steps=[1, 2, 6], up_hysteresis=-0.1, down_hysteresis=0.25)]


def sglang_release_slots() -> list[SGLangSlot]:
    """What SGLang 0.5.23 runs with `--speculative-adaptive` and no config file
    (DEFAULT_ADAPTIVE_CONFIG in sglang/srt/speculative/adaptive_spec_params.py; step 0 = off)."""
    return [SGLangSlot(lo=1, steps=[1, 3, 5, 7], up_hysteresis=0.0, down_hysteresis=-0.25),
            SGLangSlot(lo=8, steps=[0, 1, 3]),
            SGLangSlot(lo=32, steps=[0, 1]),
            SGLangSlot(lo=64, steps=[0])]


class SGLangAdaptive(_Strict):
    """SGLang `--speculative-adaptive`: per batch-size slot, an EMA of accepted draft tokens per
    request moves the step count among the slot's candidates (sglang/srt/speculative/
    adaptive_spec_params.py, SGLang 0.5.23). The default slots are PR 24055's; `release()` gives
    what SGLang 0.5.23 runs without a config file."""

    slots: list[SGLangSlot] = Field(default_factory=sglang_default_slots)
    initial_steps: int | None = Field(default=None, ge=0)
    """`--speculative-num-steps`: each slot starts there when it is one of its candidates, else at
    its middle candidate. It must be a candidate of some slot (SGLang refuses it otherwise). None:
    SGLang's own default, the middle of all slots' candidates together (`start_steps`)."""
    ema_alpha: float = Field(default=0.2, gt=0.0, le=1.0)
    update_interval: int = Field(default=5, ge=1)
    warmup_batches: int = Field(default=10, ge=0)
    cuda_graph_batch_sizes: list[int] = Field(default_factory=list)
    """Batch sizes SGLang captured graphs for; a batch is padded up to one before its slot is chosen."""

    @model_validator(mode="after")
    def _slots(self) -> SGLangAdaptive:
        los = [s.lo for s in self.slots]
        if not los or los[0] != 1 or any(b <= a for a, b in zip(los, los[1:], strict=False)):
            raise ValueError("slots must start at lo 1 and increase")
        if len(los) > 60:
            raise ValueError("at most 60 slots")
        if self.initial_steps is not None and self.initial_steps not in self.candidate_steps:
            raise ValueError(f"initial_steps {self.initial_steps} is not a candidate of any slot "
                             f"{self.candidate_steps} (SGLang refuses such --speculative-num-steps)")
        return self

    @property
    def max_steps(self) -> int:
        return max(max(s.steps) for s in self.slots)

    @property
    def candidate_steps(self) -> list[int]:
        """Every slot's candidates together (SGLang's resolve_candidate_steps_from_config)."""
        return sorted({x for s in self.slots for x in s.steps})

    @property
    def start_steps(self) -> int:
        """`--speculative-num-steps` as SGLang resolves it: initial_steps, else the middle of all
        candidates (arg_groups/speculative_hook.py, _init_adaptive_speculative_params, 0.5.23)."""
        if self.initial_steps is not None:
            return self.initial_steps
        union = self.candidate_steps
        return union[len(union) // 2]

    @classmethod
    def release(cls) -> SGLangAdaptive:
        """SGLang 0.5.23's built-in configuration."""
        return cls(slots=sglang_release_slots())


class TrtllmSchedule(_Strict):
    """TensorRT-LLM's dynamic draft length (DecodingBaseConfig, tensorrt_llm/llmapi/llm_args.py):
    `draft_len_schedule` keys are inclusive upper bounds of the scheduled batch size (bisect_left),
    above the last key the draft length is `min_draft_len`; `max_concurrency` is the same as
    {max_concurrency: max_draft_len}; once the mean acceptance rate of the last
    `acceptance_rate_window_size` speculating iterations falls below `acceptance_rate_threshold`,
    speculation is off for good (speculation_gate.py)."""

    max_draft_len: int = Field(ge=1)
    draft_len_schedule: dict[int, int] | None = None
    max_concurrency: int | None = Field(default=None, ge=1)
    min_draft_len: int = Field(default=0, ge=0)
    acceptance_rate_window_size: int | None = Field(default=None, ge=0, le=4096)
    acceptance_rate_threshold: float | None = Field(default=None, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _check(self) -> TrtllmSchedule:
        if self.draft_len_schedule is not None and self.max_concurrency is not None:
            raise ValueError("draft_len_schedule and max_concurrency are mutually exclusive (as in TensorRT-LLM)")
        sched = self.draft_len_schedule
        if sched is not None:
            if not sched or any(k < 1 or v < 0 or v > self.max_draft_len for k, v in sched.items()):
                raise ValueError("draft_len_schedule needs keys >= 1 and values in 0..max_draft_len")
            if sched[min(sched)] != self.max_draft_len:
                raise ValueError("draft_len_schedule's smallest key must map to max_draft_len")
        return self

    def schedule(self) -> dict[int, int]:
        if self.draft_len_schedule is not None:
            return dict(sorted(self.draft_len_schedule.items()))
        if self.max_concurrency is not None:
            return {self.max_concurrency: self.max_draft_len}
        return {SCHEDULE_TOP: self.max_draft_len}

    def k_for(self, batch_size: int) -> int:
        for key, k in self.schedule().items():
            if batch_size <= key:
                return max(k, self.min_draft_len)
        return self.min_draft_len


def trtllm_min_draft_len(method: str) -> int:
    """The draft length TensorRT-LLM falls to above the schedule's last key: 0 where the drafter can stay
    warm without drafting (Eagle3 and MTP one-model), else 1 (`min_runtime_draft_len`,
    tensorrt_llm/_torch/speculative/utils.py @011d0933)."""
    return 0 if method in ("eagle3", "mtp") else 1


class QueueRule(_Strict):
    """specsim's queue-aware rule: while more than `max_waiting` requests wait, K is at most `k`
    (vLLM RFC 54749: the K decision as more than a batch-keyed array index)."""

    max_waiting: int = Field(ge=0)
    k: int = Field(ge=0)


class Policy(_Strict):
    """A speculative-decoding policy: drafter, K schedule over batch size, and optional guards."""

    schema_name: Literal["specsim.policy"] = Field(default="specsim.policy", alias="schema")
    version: int = VERSIONS[-1]
    drafter: DrafterRef | None = None
    """None means speculation is off everywhere."""
    k_schedule: list[tuple[int, int, int]] = Field(default_factory=list)
    """Inclusive [lo, hi, K] ranges over batch size; K = 0 turns speculation off."""
    hysteresis: int = Field(default=0, ge=0, le=SCHEDULE_TOP)
    """Batch-size band: keep the current range until the batch size leaves it by more than this."""
    acceptance_floor: AcceptanceFloor | None = None
    family: Literal["vllm", "specsim", "sglang", "trtllm"] = "vllm"
    """Which engine's adaptive rule decides K (version 2). vllm: the batch-size schedule (hysteresis and
    the floor through specsim's proposer); specsim: that plus the queue and context rules; sglang and
    trtllm: their engines' own rules, with `sglang` / `trtllm` settings."""
    sglang: SGLangAdaptive | None = None
    trtllm: TrtllmSchedule | None = None
    queue: QueueRule | None = None
    context_schedule: list[tuple[int, int, int]] = Field(default_factory=list)
    """specsim: inclusive [ctx_lo, ctx_hi, K] ranges capping a request's K by its context length."""
    engine: EngineKnobs = Field(default_factory=EngineKnobs)
    provenance: Provenance = Field(default_factory=Provenance)

    @field_validator("k_schedule", mode="before")
    @classmethod
    def _strict_ints(cls, v: Any) -> Any:
        """Entries hold integers only: `true`, `4.0` and `"4"` are refused, not read as 1 and 4."""
        if not isinstance(v, (list, tuple)):
            return v
        out = []
        for i, entry in enumerate(v):
            if not isinstance(entry, (list, tuple)):
                return v  # let the type check name it
            for x in entry:
                if isinstance(x, bool) or not isinstance(x, (int, np.integer)):
                    raise ValueError(f"entry {i} {_show(entry)} must hold integers [lo, hi, K], got {_show(x)}")
                if not -(2**63) <= int(x) < 2**63:
                    raise ValueError(f"entry {i}: {x} is out of range (|value| < 2^63)")
            out.append(tuple(int(x) for x in entry))
        return out

    @field_validator("k_schedule")
    @classmethod
    def _ranges(cls, v: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
        prev_hi = 0
        for lo, hi, k in v:
            if lo < 1 or hi < lo:
                raise ValueError(f"range [{lo}, {hi}] must have 1 <= lo <= hi")
            if k < 0:
                raise ValueError(f"K must be >= 0, got {k}")
            if lo <= prev_hi:
                raise ValueError(
                    f"range [{lo}, {hi}] overlaps or is out of order (previous ends at {prev_hi})"
                )
            prev_hi = hi
        return v

    @model_validator(mode="after")
    def _drafter_needed(self) -> Policy:
        if self.version < 2:  # NOTE: version 1 reads as a vLLM schedule; its files cannot name a later rule
            late = [n for n in ("sglang", "trtllm", "queue") if getattr(self, n) is not None]
            late += ["context_schedule"] * bool(self.context_schedule) + ["family"] * (self.family != "vllm")
            if late:
                raise ValueError(f"{late[0]} is a version 2 field, in a version 1 policy (set version 2)")
        if self.drafter is None and any(k > 0 for _, _, k in self.k_schedule):
            raise ValueError("k_schedule has K > 0 but the policy names no drafter")
        if self.family == "sglang":
            if self.sglang is None or self.drafter is None:
                raise ValueError("family sglang needs a drafter and `sglang` settings")
        elif self.sglang is not None:
            raise ValueError("`sglang` settings need family sglang")
        if self.family == "trtllm":
            if self.trtllm is None or self.drafter is None:
                raise ValueError("family trtllm needs a drafter and `trtllm` settings")
        elif self.trtllm is not None:
            raise ValueError("`trtllm` settings need family trtllm")
        if self.family in ("sglang", "trtllm") and (self.k_schedule or self.hysteresis or self.acceptance_floor):
            raise ValueError(f"family {self.family} takes its K from its own settings, not k_schedule / "
                             "hysteresis / acceptance_floor")
        if (self.queue is not None or self.context_schedule) and self.family in ("sglang", "trtllm"):
            raise ValueError("queue and context rules are specsim's (family vllm or specsim)")
        prev = 0
        for lo, hi, k in self.context_schedule:
            if lo < 0 or hi < lo or k < 0 or lo <= prev and prev:
                raise ValueError("context_schedule ranges must be sorted, non-overlapping [lo, hi, K >= 0]")
            prev = hi
        return self

    @property
    def max_k(self) -> int:
        """Largest K the policy can use (vLLM's num_speculative_tokens)."""
        if self.family == "sglang" and self.sglang is not None:
            return self.sglang.max_steps
        if self.family == "trtllm" and self.trtllm is not None:
            return self.trtllm.max_draft_len
        return max((k for _, _, k in self.k_schedule), default=0)

    def k_at(self, batch_size: int) -> int:
        """K a plain lookup gives at this batch size (schedule families; TensorRT-LLM's schedule)."""
        if self.family == "trtllm" and self.trtllm is not None:
            return self.trtllm.k_for(batch_size)
        return self.k_for(batch_size)

    @property
    def static_k(self) -> int:
        """K when vLLM runs this policy without a per-batch-size schedule, else 0.

        That is one range from 1 to SCHEDULE_TOP, or any schedule enforced by specsim's custom
        proposer (hysteresis, acceptance floor). vLLM then pads newly admitted one-token requests
        to 1 + K tokens (Scheduler.schedule, "Pad new decode requests"), which it skips under a
        dynamic schedule.
        """
        if self.drafter is None or self.max_k == 0 or self.family in ("sglang", "trtllm"):
            return 0
        if self.needs_proposer:
            return self.max_k
        if self.queue is not None:  # served with vLLM's dynamic schedule and specsim's scheduler
            return 0
        sched = self.vllm_schedule()
        if len(sched) == 1 and sched[0][0] == 1 and sched[0][1] >= SCHEDULE_TOP:
            return self.max_k
        return 0

    @property
    def needs_proposer(self) -> bool:
        """True when vLLM's own schedule cannot express the policy (specsim's custom proposer)."""
        return self.drafter is not None and self.max_k > 0 and self.family in ("vllm", "specsim") and (
            self.hysteresis > 0 or self.acceptance_floor is not None or bool(self.context_schedule))

    def vllm_schedule(self) -> list[list[int]]:
        """vLLM's `num_speculative_tokens_per_batch_size` for this schedule: from 1, no gaps, an
        explicit K = 0 where specsim means off (vLLM carries the previous K into gaps and past the
        last range: vllm/v1/spec_decode/dynamic/utils.py, build_dynamic_sd_schedule_lookup)."""
        out: list[list[int]] = []
        nxt = 1
        for lo, hi, k in self.k_schedule:
            if lo > nxt:
                out.append([nxt, lo - 1, 0])
            out.append([lo, hi, k])
            nxt = hi + 1
        if out and out[-1][2] != 0 and nxt <= SCHEDULE_TOP:
            out.append([nxt, max(nxt, SCHEDULE_TOP), 0])
        merged: list[list[int]] = []
        for r in out:
            if merged and merged[-1][2] == r[2] and merged[-1][1] + 1 == r[0]:
                merged[-1][1] = r[1]
            else:
                merged.append(list(r))
        return merged

    def context_cap(self, context: int, k: int) -> int:
        """A row's K capped by the context-length axis (contexts no range covers: no cap)."""
        for lo, hi, cap in self.context_schedule:
            if lo <= context <= hi:
                return min(k, cap)
        return k

    def k_for(self, batch_size: int) -> int:
        """K for a batch size, ignoring hysteresis."""
        for lo, hi, k in self.k_schedule:
            if lo <= batch_size <= hi:
                return k
        return 0

    @classmethod
    def static(cls, drafter: DrafterRef | None, k: int, max_batch: int = SCHEDULE_TOP) -> Policy:
        """A policy with one K at every batch size (K = 0 or no drafter: speculation off)."""
        if drafter is None or k == 0:
            return cls(drafter=drafter, k_schedule=[])
        return cls(drafter=drafter, k_schedule=[(1, max_batch, k)])


def _show(x: Any) -> str:
    """A value as JSON spells it (true, not True)."""
    try:
        return json.dumps(x)
    except (TypeError, ValueError):
        return repr(x)


def check_drafter_matches(policy: Policy, profile: Profile) -> None:
    """Refuse a policy whose drafter differs from the one the profile measured under that name: another
    method (name 'ngram', method 'eagle3'), another draft model, or other parameters (n-gram lookup 7..9
    where the profile measured 2..4). The simulation would use one drafter's costs and traces for another,
    and the server would run a drafter nobody measured."""
    d = policy.drafter
    if d is None:
        return
    spec = profile.drafters.get(d.name)
    if spec is None:
        return
    if spec.method != d.method:
        raise SpecsimError(
            f"policy drafter {d.name!r} says method {d.method!r} but the profile measured {d.name!r} as "
            f"method {spec.method!r}; fix the policy's drafter.method or name"
        )
    if d.model is not None and d.model != spec.model:  # None: unstated (the profile's; serve refuses it)
        raise SpecsimError(f"policy drafter {d.name!r} names model {d.model!r} but the profile measured "
                           f"{spec.model!r}; use the profile's drafter (specsim tune writes it)")
    mine, theirs = normalized_params(d.method, d.params), normalized_params(spec.method, spec.params)
    if mine != theirs:
        diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        shown = ", ".join(f"{k} {mine.get(k)!r} (profile {theirs.get(k)!r})" for k in diff)
        raise SpecsimError(f"policy drafter {d.name!r} differs from the profile's in {shown}: those change its "
                           "costs and acceptance")


class KController:
    """Looks up K per engine step, applying the policy's hysteresis band.

    Without hysteresis this is `Policy.k_for`. With band h, once the batch size b falls in range
    [lo, hi] the controller keeps that range's K while lo - h <= b <= hi + h, so K does not flip
    back and forth when the batch size hovers at a breakpoint.
    """

    def __init__(self, policy: Policy) -> None:
        self.ranges = [tuple(r) for r in policy.k_schedule]
        self.band = policy.hysteresis
        self._current: int | None = None  # index into ranges, or None = uncovered
        self._cache: dict[int, int] = {}

    def _index(self, b: int) -> int | None:
        for i, (lo, hi, _) in enumerate(self.ranges):
            if lo <= b <= hi:
                return i
        return None

    def k(self, batch_size: int) -> int:
        """K for this step's batch size."""
        if self.band == 0:
            k = self._cache.get(batch_size)
            if k is None:
                i = self._index(batch_size)
                k = self._cache[batch_size] = self.ranges[i][2] if i is not None else 0
            return k
        cur = self._current
        if cur is not None:
            lo, hi, k = self.ranges[cur]
            if lo - self.band <= batch_size <= hi + self.band:
                return k
        self._current = self._index(batch_size)
        return self.ranges[self._current][2] if self._current is not None else 0


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy; every defect is a one-line SpecsimError.

    Example (also `specsim.load_policy`):
        >>> policy = load_policy("POL.json")
        >>> policy.k_at(1), policy.k_at(64)
    """
    return load_document(path, Policy, "policy", SCHEMA, VERSIONS)


POLICY_SHORTHAND = "off, static:K or static:K@DRAFTER"
"""What `read_policy` accepts besides a policy file."""


def read_policy(text: str | Path, profile: Profile | None = None) -> Policy:
    """A policy from a command line: `off` (no speculation), `static:K[@DRAFTER]` (K at every batch size;
    DRAFTER a profile drafter, default its first one that may use K), or a policy file (`./off` for a file
    named off). Without a profile, DRAFTER must be a drafter that needs no model (ngram, suffix)."""
    s = str(text).strip()
    if s.lower() == "off":
        return Policy()
    if not s.lower().startswith("static:"):
        return load_policy(text)
    k_text, _, name = s[len("static:"):].partition("@")
    if not k_text.strip().isdigit() or not 1 <= int(k_text) <= SCHEDULE_TOP:
        raise SpecsimError(f"cannot read policy {s!r}: give {POLICY_SHORTHAND} with K a whole number >= 1")
    k, name = int(k_text), name.strip()
    if profile is None:
        if name not in ("ngram", "suffix"):
            raise SpecsimError(f"policy {s!r} needs the profile to know drafter {name or '(the first)'!r}: give "
                               "--profile, or static:K@ngram / static:K@suffix")
        return Policy.static(DrafterRef(name=name, method=name), k)
    usable = [n for n, d in profile.drafters.items() if k in d.static_ks(profile.k_max)]
    if name and name not in profile.drafters:
        raise SpecsimError(f"policy {s!r}: drafter {name!r} is not in the profile (it has: "
                           f"{', '.join(profile.drafters) or 'none'})")
    if not name:
        if not usable:
            raise SpecsimError(f"policy {s!r}: no drafter of the profile may run K = {k}")
        name = usable[0]
    if name not in usable:
        ks = profile.drafters[name].static_ks(profile.k_max)
        raise SpecsimError(f"policy {s!r}: drafter {name!r} may run K in {ks[0]}..{ks[-1]} (a tree: {ks})"
                           if ks else f"policy {s!r}: drafter {name!r} has no static K")
    return Policy.static(DrafterRef.from_profile(profile, name), k)


def save_policy(policy: Policy, path: str | Path) -> None:
    """Write a policy as JSON atomically.

    Example (also `specsim.save_policy`): `save_policy(specsim.tune(...).policy, "POL.json")`.
    """
    atomic_write_text(path, policy.model_dump_json(by_alias=True, indent=2) + "\n")
