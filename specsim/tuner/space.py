"""The search space: drafter (or off), a K schedule over batch size, optional guards and engine knobs.

A schedule with S segments is sampled as S values of K (0..K_max) and S-1 breakpoints on a log
grid of batch sizes, plus an optional "off above" threshold from the same grid. Segment 0 covers
batch sizes 1..b1, segment i covers b_i+1..b_(i+1), the last runs to the top; every batch size
above the threshold gets K = 0. By default K is made monotone non-increasing in batch size
(cumulative minimum), which is what the cost structure favours (verification gets dearer as the
batch grows) and shrinks the space; `monotone=False` lifts it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import optuna

from specsim.errors import SpecsimError
from specsim.formats.policy import (
    SCHEDULE_TOP,
    AcceptanceFloor,
    DrafterRef,
    EngineKnobs,
    Policy,
    QueueRule,
    SGLangAdaptive,
    SGLangSlot,
    TrtllmSchedule,
    sglang_default_slots,
    trtllm_min_draft_len,
)
from specsim.formats.profile import Profile

OFF = "off"
FAMILIES = ("vllm", "specsim", "sglang", "trtllm")
TOP = SCHEDULE_TOP
QUEUE_WAITING = (0, 1, 2, 4, 8, 16, 32, 64)
"""specsim family: candidate queue lengths above which the queue rule caps K."""
CONTEXT_CUTS = (256, 512, 1024, 2048, 4096, 8192)
"""specsim family: candidate context lengths above which the context axis caps K."""
CONTEXT_TOP = 1 << 40
TRTLLM_WINDOWS = (16, 32, 64, 128, 256)
"""trtllm family: candidate acceptance_rate_window_size values."""
"""Upper end of the last schedule range (any batch size an engine can have)."""


def log_grid(lo: int, hi: int, ratio: float = 2.0) -> list[int]:
    """Distinct integers lo, lo*ratio, lo*ratio^2, ... up to hi (hi included)."""
    if lo < 1 or hi < lo:
        raise SpecsimError(f"log grid needs 1 <= lo <= hi, got {lo}..{hi}")
    if not ratio > 1.0:
        raise SpecsimError(f"log grid ratio must be > 1, got {ratio}")
    out: list[int] = []
    x = float(lo)
    while x < hi * (1 + 1e-9):
        v = int(round(x))
        if not out or v > out[-1]:
            out.append(v)
        x = max(x * ratio, out[-1] + 0.5)  # a ratio near 1 still reaches hi in at most 2 (hi - lo) steps
    if out[-1] != hi:
        out.append(hi)
    return out


NO_ACCEPTANCE = ("the profile has costs but no acceptance for it (profiled --costs-only?): give per-position rates "
                 "with `specsim profile ... --acceptance-rates` or `profile-analytic --acceptance-rates`")


def tunable_drafters(profile: Profile) -> tuple[list[str], dict[str, str]]:
    """The profile's drafters a study can search (in profile order), and why each other one is left out."""
    ok: list[str] = []
    refused: dict[str, str] = {}
    for n in profile.drafters:
        if not profile.traces_for(n):
            refused[n] = NO_ACCEPTANCE
        else:
            ok.append(n)
    return ok, refused


@dataclass
class SearchSpace:
    """What the tuner may choose; `suggest` samples one point, `policy` turns params into a Policy."""

    drafters: list[str]
    """Profile drafters to search over."""
    k_max: int
    """Largest K searched (at most the profile's k_max)."""
    grid: list[int]
    """Breakpoint candidates (batch sizes) on a log grid."""
    include_off: bool = True
    """Also consider speculation off entirely (K = 0 in the first range)."""
    k_min: int = 0
    """Smallest K searched for ranges after the first (0 = a range may turn speculation off)."""
    max_segments: int = 2
    """Most K ranges in the schedule (before the off threshold)."""
    threshold: bool = True
    """Search an 'off above batch size b' threshold."""
    monotone: bool = True
    """K non-increasing in batch size."""
    max_hysteresis: int = 0
    """Search a hysteresis band 0..this (0 = not searched)."""
    floor: bool = False
    """Search an optional per-request acceptance floor."""
    max_num_seqs: list[int] = field(default_factory=list)
    """Candidate max_num_seqs values (empty = engine knob not searched)."""
    max_num_batched_tokens: list[int] = field(default_factory=list)
    """Candidate max_num_batched_tokens values (empty = not searched)."""
    family: str = "vllm"
    """Which engine's adaptive rule is searched: vllm (batch-size schedule, optional hysteresis and floor),
    specsim (that plus the queue rule or the context-length axis), sglang (adaptive step slots with
    their EMA knobs), trtllm (draft_len_schedule and the acceptance gate)."""

    @classmethod
    def for_profile(
        cls,
        profile: Profile,
        max_batch: int = 256,
        grid_ratio: float = 2.0,
        drafters: list[str] | None = None,
        **kw: Any,
    ) -> SearchSpace:
        """Every drafter the profile measured, K up to what it measured, breakpoints 1..max_batch."""
        if not profile.drafters:
            raise SpecsimError(
                "the profile has no drafters: nothing to tune (profile one with `specsim profile --drafter ...`)"
            )
        if drafters is None:
            names, refused = tunable_drafters(profile)
            if not names:
                why = "; ".join(f"{n}: {r}" for n, r in refused.items())
                raise SpecsimError(f"no drafter of the profile can be tuned ({why})")
        else:
            names = list(drafters)
        for n in names:
            if n not in profile.drafters:
                raise SpecsimError(f"drafter {n!r} is not in the profile (it measured: {', '.join(profile.drafters)})")
            if not profile.traces_for(n):
                raise SpecsimError(f"drafter {n!r}: {NO_ACCEPTANCE}")
        if not names:
            raise SpecsimError("no drafters to search")
        # NOTE: a tree's K is its size whatever K a trial draws (SearchSpace.policy), so trees do not cap K
        chains = [profile.drafters[n].k_max for n in names if profile.drafters[n].family_kind != "tree"]
        k_cap = min([profile.k_max, *chains]) if chains else 1
        k_max = int(kw.pop("k_max", k_cap))
        if k_cap < 1:
            raise SpecsimError("the profile covers no K >= 1: nothing to tune")
        if k_max > k_cap:
            raise SpecsimError(f"--k-max {k_max} is above the profile's k_max {k_cap} (the largest K it measured "
                               f"for {', '.join(names)}); pass --k-max {k_cap} or less")
        if k_max < 1:
            raise SpecsimError(f"--k-max must be >= 1, got {k_max}")
        space = cls(drafters=names, k_max=k_max, grid=log_grid(1, max_batch, grid_ratio), **kw)
        space.validate()
        return space

    def validate(self) -> None:
        """Raise SpecsimError for an inconsistent space."""
        if not self.drafters:
            raise SpecsimError("the search space has no drafter")
        if not 0 <= self.k_min <= self.k_max:
            raise SpecsimError(f"K range {self.k_min}..{self.k_max} is empty")
        if self.max_segments < 1:
            raise SpecsimError("max_segments must be >= 1")
        if self.max_hysteresis < 0:
            raise SpecsimError("max_hysteresis must be >= 0")
        if self.family not in FAMILIES:
            raise SpecsimError(f"unknown family {self.family!r} (choose from {', '.join(FAMILIES)})")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (stored with the study so extra workers rebuild the same space)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SearchSpace:
        """Inverse of to_dict."""
        return cls(**d)

    @property
    def size_hint(self) -> str:
        """Rough description for the console."""
        return (
            f"family {self.family}: drafters {self.drafters}{' or off' if self.include_off else ''}, "
            f"K {self.k_min}..{self.k_max}, "
            f"<= {self.max_segments} segment(s), breakpoints {self.grid[0]}..{self.grid[-1]} "
            f"({len(self.grid)} points){', off-threshold' if self.threshold else ''}"
            f"{', monotone' if self.monotone else ''}"
        )

    # ---- sampling ------------------------------------------------------------------------------
    def suggest(self, trial: optuna.trial.BaseTrial) -> dict[str, Any]:
        """Sample one point (define-by-run); returns the trial's params."""
        if self.family == "sglang":
            return self._suggest_sglang(trial)
        if self.family == "trtllm":
            return self._suggest_trtllm(trial)
        if len(self.drafters) > 1:
            trial.suggest_categorical("drafter", self.drafters)
        # speculation off is K = 0 in the first range (then every range is 0 when monotone)
        k0 = trial.suggest_int("k0", 0 if self.include_off else max(1, self.k_min), self.k_max)
        if k0 > 0 or not self.monotone:
            segs = trial.suggest_int("segments", 1, self.max_segments) if self.max_segments > 1 else 1
            for i in range(1, segs):
                trial.suggest_int(f"k{i}", self.k_min, self.k_max)
            for i in range(1, segs):
                trial.suggest_int(f"b{i}_idx", 0, len(self.grid) - 1)
            if self.threshold:
                trial.suggest_int("off_above_idx", 0, len(self.grid))  # len(grid) = never
            # NOTE: vLLM runs the queue rule in its scheduler and the rest in specsim's proposer, which
            # cannot be combined (see policies/export.py), so a queue rule excludes the others
            queue = self.family == "specsim" and trial.suggest_categorical("use_queue", [False, True])
            if queue:
                trial.suggest_int("queue_waiting_idx", 0, len(QUEUE_WAITING) - 1)
                trial.suggest_int("queue_k", 0, self.k_max)
            else:
                if self.family == "specsim" and trial.suggest_categorical("use_context", [False, True]):
                    trial.suggest_int("context_cut_idx", 0, len(CONTEXT_CUTS) - 1)
                    trial.suggest_int("context_k", 0, self.k_max)
                if self.max_hysteresis > 0:
                    trial.suggest_int("hysteresis", 0, self.max_hysteresis)
                if self.floor and trial.suggest_categorical("use_floor", [False, True]):
                    trial.suggest_float("floor_rate", 0.05, 0.6)
        self._suggest_engine(trial)
        return dict(trial.params)

    def _suggest_engine(self, trial: optuna.trial.BaseTrial) -> None:
        if self.max_num_seqs:
            trial.suggest_categorical("max_num_seqs", self.max_num_seqs)
        if self.max_num_batched_tokens:
            trial.suggest_categorical("max_num_batched_tokens", self.max_num_batched_tokens)

    def _drafter_choice(self, trial: optuna.trial.BaseTrial) -> str:
        """The drafter, or OFF, for the engine families (their rules have no K = 0 first range)."""
        choices = [*self.drafters, OFF] if self.include_off else list(self.drafters)
        if len(choices) == 1:
            return choices[0]
        return str(trial.suggest_categorical("drafter", choices))

    def _suggest_sglang(self, trial: optuna.trial.BaseTrial) -> dict[str, Any]:
        """SGLang's adaptive speculation: up to `sglang_max_slots` batch-size slots (the first from 1), each
        with its candidate steps (up to 3 evenly spread in 1..top, optionally 0 = off) and hysteresis,
        and the EMA's alpha, update interval and warm-up."""
        if self._drafter_choice(trial) != OFF:
            slots = trial.suggest_int("sg_slots", 1, self.sglang_max_slots)
            for i in range(slots):
                if i > 0:
                    trial.suggest_int(f"sg_lo{i}_idx", 1, len(self.grid) - 1)
                trial.suggest_int(f"sg_top{i}", 0, self.k_max)
                trial.suggest_int(f"sg_n{i}", 1, 3)
                trial.suggest_categorical(f"sg_zero{i}", [False, True])
                trial.suggest_float(f"sg_up{i}", -0.5, 0.5)
                trial.suggest_float(f"sg_down{i}", -0.5, 0.5)
            trial.suggest_float("sg_alpha", 0.05, 0.6)
            trial.suggest_int("sg_interval", 1, 10)
            trial.suggest_int("sg_warmup", 0, 20)
        self._suggest_engine(trial)
        return dict(trial.params)

    def _suggest_trtllm(self, trial: optuna.trial.BaseTrial) -> dict[str, Any]:
        """TensorRT-LLM: max_draft_len, a non-increasing draft_len_schedule whose last key is the last
        batch size that drafts (or none: max_draft_len everywhere), and the acceptance gate."""
        if self._drafter_choice(trial) != OFF:
            trial.suggest_int("tr_k0", 1, self.k_max)
            segs = trial.suggest_int("tr_segments", 1, self.max_segments) if self.max_segments > 1 else 1
            for i in range(1, segs):
                trial.suggest_int(f"tr_k{i}", 0, self.k_max)
                trial.suggest_int(f"tr_b{i}_idx", 0, len(self.grid) - 1)
            trial.suggest_int("tr_last_idx", 0, len(self.grid))  # len(grid) = no last key
            if trial.suggest_categorical("tr_gate", [False, True]):
                trial.suggest_int("tr_window_idx", 0, len(TRTLLM_WINDOWS) - 1)
                trial.suggest_float("tr_threshold", 0.05, 0.7)
        self._suggest_engine(trial)
        return dict(trial.params)

    @property
    def sglang_max_slots(self) -> int:
        """Most SGLang batch-size slots searched: --segments, but at least SGLang's own three."""
        return min(6, max(3, self.max_segments))

    def starting_points(self) -> list[dict[str, Any]]:
        """Trials queued before the sampler's own: the family's engine defaults (SGLang's PR 24055 slots,
        steps capped at k_max), so a search starts from what the engine ships with."""
        if self.family != "sglang":
            return []
        grid = self.grid
        out = []
        for drafter in self.drafters:
            params: dict[str, Any] = {"sg_slots": 3}
            if len(self.drafters) > 1 or self.include_off:
                params["drafter"] = drafter
            for i, slot in enumerate(sglang_default_slots()):
                if i > 0:
                    params[f"sg_lo{i}_idx"] = max(1, min(range(len(grid)), key=lambda j: abs(grid[j] - slot.lo)))
                params.update({f"sg_top{i}": min(max(slot.steps), self.k_max), f"sg_n{i}": 3, f"sg_zero{i}": False,
                               f"sg_up{i}": slot.up_hysteresis, f"sg_down{i}": slot.down_hysteresis})
            params.update(sg_alpha=0.2, sg_interval=5, sg_warmup=10)
            out.append(params)
        return out

    # ---- params -> policy ----------------------------------------------------------------------
    def schedule(self, params: dict[str, Any]) -> list[tuple[int, int, int]]:
        """The K schedule a parameter set encodes (uncovered batch sizes are off)."""
        segs = int(params.get("segments", 1))
        ks = [int(params.get(f"k{i}", 0)) for i in range(segs)]
        if self.monotone:
            for i in range(1, segs):
                ks[i] = min(ks[i], ks[i - 1])
        his = [self.grid[int(params[f"b{i}_idx"])] for i in range(1, segs)] if segs > 1 else []
        his = sorted(his)
        ranges: list[tuple[int, int, int]] = []
        lo = 1
        for i, k in enumerate(ks):
            hi = his[i] if i < len(his) else TOP
            if hi >= lo:
                ranges.append((lo, hi, k))
                lo = hi + 1
        idx = params.get("off_above_idx")
        if idx is not None and int(idx) < len(self.grid):
            cut = self.grid[int(idx)]
            ranges = [(lo, min(hi, cut), k) for lo, hi, k in ranges if lo <= cut]
        return normalise_schedule(ranges)

    def policy(self, params: dict[str, Any], profile: Profile) -> Policy:
        """The Policy a parameter set encodes, with the drafter's configuration from the profile."""
        drafter = params.get("drafter", self.drafters[0])
        knobs = EngineKnobs(
            max_num_seqs=params.get("max_num_seqs"), max_num_batched_tokens=params.get("max_num_batched_tokens")
        )
        if drafter == OFF:
            return Policy(engine=knobs)
        if self.family == "sglang":
            return self._sglang_policy(params, drafter_ref(profile, drafter), knobs)
        if self.family == "trtllm":
            return self._trtllm_policy(params, drafter_ref(profile, drafter), knobs)
        sched = self.schedule(params)
        fam = profile.drafters[drafter].family if drafter in profile.drafters else None
        if fam is not None and fam.kind == "tree" and fam.tree_size is not None:
            # NOTE: a tree is verified whole (its traces were made for its sizes): K = 1..k_max picks one of
            # the sizes by rank, so the search over K is a search over the tree size per batch size
            sizes = fam.sizes
            pick = [sizes[min(len(sizes) - 1, (k - 1) * len(sizes) // max(self.k_max, 1))] if k > 0 else 0
                    for _, _, k in sched]
            sched = normalise_schedule([(lo, hi, z) for (lo, hi, _), z in zip(sched, pick, strict=True)])
        if self.family == "specsim" and sched:
            queue = None
            if params.get("use_queue"):
                queue = QueueRule(max_waiting=QUEUE_WAITING[int(params["queue_waiting_idx"])],
                                  k=int(params["queue_k"]))
            ctx: list[tuple[int, int, int]] = []
            if params.get("use_context"):
                ctx = [(CONTEXT_CUTS[int(params["context_cut_idx"])] + 1, CONTEXT_TOP, int(params["context_k"]))]
            floor = AcceptanceFloor(min_rate=float(params["floor_rate"])) if params.get("use_floor") else None
            return Policy(drafter=drafter_ref(profile, drafter), family="specsim", k_schedule=sched,
                          hysteresis=int(params.get("hysteresis", 0)), acceptance_floor=floor, queue=queue,
                          context_schedule=ctx, engine=knobs)
        floor = None
        if params.get("use_floor"):
            floor = AcceptanceFloor(min_rate=float(params["floor_rate"]))
        return Policy(
            drafter=drafter_ref(profile, drafter) if sched else None,
            k_schedule=sched,
            hysteresis=int(params.get("hysteresis", 0)) if sched else 0,
            acceptance_floor=floor if sched else None,
            engine=knobs,
        )


    def _sglang_policy(self, params: dict[str, Any], drafter: DrafterRef, knobs: EngineKnobs) -> Policy:
        n = int(params.get("sg_slots", 1))
        slots: dict[int, SGLangSlot] = {}
        for i in range(n):
            lo = 1 if i == 0 else self.grid[int(params[f"sg_lo{i}_idx"])]
            top, count = int(params[f"sg_top{i}"]), int(params[f"sg_n{i}"])
            steps = sorted({round(1 + (top - 1) * j / max(1, count - 1)) for j in range(count)} if top > 0 else set())
            if params.get(f"sg_zero{i}") or not steps:
                steps = [0, *steps]
            slots.setdefault(lo, SGLangSlot(lo=lo, steps=steps, up_hysteresis=float(params[f"sg_up{i}"]),
                                            down_hysteresis=float(params[f"sg_down{i}"])))
        sg = SGLangAdaptive(slots=[slots[k] for k in sorted(slots)], ema_alpha=float(params["sg_alpha"]),
                            update_interval=int(params["sg_interval"]), warmup_batches=int(params["sg_warmup"]))
        if sg.max_steps == 0:
            return Policy(engine=knobs)
        return Policy(drafter=drafter, family="sglang", sglang=sg, engine=knobs)

    def _trtllm_policy(self, params: dict[str, Any], drafter: DrafterRef, knobs: EngineKnobs) -> Policy:
        k0 = int(params["tr_k0"])
        floor = trtllm_min_draft_len(drafter.method)
        segs = int(params.get("tr_segments", 1))
        cuts = sorted((self.grid[int(params[f"tr_b{i}_idx"])], int(params[f"tr_k{i}"])) for i in range(1, segs))
        last = int(params["tr_last_idx"])
        last_key = self.grid[last] if last < len(self.grid) else None
        # ranges: K0 up to the first cut, then each cut's K (non-increasing, at least the engine's floor)
        keys: dict[int, int] = {}
        k_prev, bounds = k0, [b for b, _ in cuts] + [last_key if last_key is not None else TOP]
        ks = [k0] + [k for _, k in cuts]
        for b, k in zip(bounds, ks, strict=True):
            k = max(floor, min(k, k_prev))
            if last_key is not None and b > last_key:
                b = last_key
            if keys and b <= max(keys):
                continue
            keys[b] = k
            k_prev = k
            if last_key is not None and b >= last_key:
                break
        merged: dict[int, int] = {}
        for b in sorted(keys):  # adjacent keys with the same draft length are one range
            if merged and merged[max(merged)] == keys[b]:
                del merged[max(merged)]
            merged[b] = keys[b]
        keys = merged
        sched: dict[int, int] | None = keys if (len(keys) > 1 or max(keys) < TOP) else None
        gate = params.get("tr_gate")
        t = TrtllmSchedule(max_draft_len=k0, draft_len_schedule=sched, min_draft_len=floor,
                           acceptance_rate_window_size=TRTLLM_WINDOWS[int(params["tr_window_idx"])] if gate else None,
                           acceptance_rate_threshold=float(params["tr_threshold"]) if gate else None)
        return Policy(drafter=drafter, family="trtllm", trtllm=t, engine=knobs)


def measured_batch_cap(profile: Profile, max_num_seqs: int) -> int:
    """Where a search's batch breakpoints stop: the engine's max_num_seqs, or the most requests per
    step the profile measured when that is fewer (beyond it the costs are extrapolated)."""
    comp = profile.target.composition
    measured = comp.measured.get("requests") if comp is not None else None
    return max_num_seqs if measured is None else min(max_num_seqs, int(measured))


def normalise_schedule(ranges: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """Drop K = 0 ranges (uncovered means off) and merge adjacent ranges with equal K."""
    out: list[tuple[int, int, int]] = []
    for lo, hi, k in ranges:
        if k <= 0 or hi < lo:
            continue
        if out and out[-1][2] == k and out[-1][1] + 1 == lo:
            out[-1] = (out[-1][0], hi, k)
        else:
            out.append((lo, hi, k))
    return out


def drafter_ref(profile: Profile, name: str) -> DrafterRef:
    """A policy's reference to a profile drafter, with the parameters it was measured with."""
    return DrafterRef.from_profile(profile, name)


def describe(policy: Policy) -> str:
    """Short human description of a policy's schedule, e.g. 'draft_model K=4 for B<=32, off above'."""
    if policy.drafter is not None and policy.family == "sglang" and policy.sglang is not None:
        sg = policy.sglang
        slots = "; ".join(f"B>={s.lo}: {s.steps}" for s in sg.slots)
        return f"{policy.drafter.name} (SGLang adaptive): {slots}, EMA alpha {sg.ema_alpha:.2f}"
    if policy.drafter is not None and policy.family == "trtllm" and policy.trtllm is not None:
        t = policy.trtllm
        sched = ", ".join(f"B<={b}: {k}" for b, k in t.schedule().items() if b < TOP) or f"{t.max_draft_len} always"
        gate = (f", gate {t.acceptance_rate_threshold:.2f} over {t.acceptance_rate_window_size}"
                if t.acceptance_rate_window_size and t.acceptance_rate_threshold is not None else "")
        return f"{policy.drafter.name} (TensorRT-LLM): {sched}, then {t.min_draft_len}{gate}"
    if policy.drafter is None or not policy.k_schedule:
        return "no speculation"
    parts = []
    for lo, hi, k in policy.k_schedule:
        span = f"B>={lo}" if hi >= TOP else (f"B={lo}" if lo == hi else f"B {lo}-{hi}")
        parts.append(f"K={k} {span}")
    last_hi = policy.k_schedule[-1][1]
    tail = "" if last_hi >= TOP else ", off above"
    extra = ""
    if policy.hysteresis:
        extra += f", hysteresis {policy.hysteresis}"
    if policy.acceptance_floor is not None:
        extra += f", floor {policy.acceptance_floor.min_rate:.2f}"
    if policy.queue is not None:
        extra += f", K<={policy.queue.k} while >{policy.queue.max_waiting} wait"
    for lo, _hi, k in policy.context_schedule:
        extra += f", K<={k} past {lo - 1} tokens of context"
    return f"{policy.drafter.name}: {'; '.join(parts)}{tail}{extra}"


