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
from specsim.formats.policy import SCHEDULE_TOP, AcceptanceFloor, DrafterRef, EngineKnobs, Policy
from specsim.formats.profile import Profile

OFF = "off"
TOP = SCHEDULE_TOP
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
        names = list(profile.drafters) if drafters is None else list(drafters)
        for n in names:
            if n not in profile.drafters:
                raise SpecsimError(f"drafter {n!r} is not in the profile (it measured: {', '.join(profile.drafters)})")
            if not profile.traces_for(n):
                raise SpecsimError(f"the profile has no acceptance traces for drafter {n!r}")
        if not names:
            raise SpecsimError("no drafters to search")
        k_cap = min([profile.k_max, *(profile.drafters[n].k_max for n in names)])
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
            f"drafters {self.drafters}{' or off' if self.include_off else ''}, K {self.k_min}..{self.k_max}, "
            f"<= {self.max_segments} segment(s), breakpoints {self.grid[0]}..{self.grid[-1]} "
            f"({len(self.grid)} points){', off-threshold' if self.threshold else ''}"
            f"{', monotone' if self.monotone else ''}"
        )

    # ---- sampling ------------------------------------------------------------------------------
    def suggest(self, trial: optuna.trial.BaseTrial) -> dict[str, Any]:
        """Sample one point (define-by-run); returns the trial's params."""
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
            if self.max_hysteresis > 0:
                trial.suggest_int("hysteresis", 0, self.max_hysteresis)
            if self.floor and trial.suggest_categorical("use_floor", [False, True]):
                trial.suggest_float("floor_rate", 0.05, 0.6)
        if self.max_num_seqs:
            trial.suggest_categorical("max_num_seqs", self.max_num_seqs)
        if self.max_num_batched_tokens:
            trial.suggest_categorical("max_num_batched_tokens", self.max_num_batched_tokens)
        return dict(trial.params)

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
        sched = self.schedule(params)
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
    spec = profile.drafters[name]
    return DrafterRef(name=name, method=spec.method, model=spec.model, params=dict(spec.params))


def describe(policy: Policy) -> str:
    """Short human description of a policy's schedule, e.g. 'draft_model K=4 for B<=32, off above'."""
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
    return f"{policy.drafter.name}: {'; '.join(parts)}{tail}{extra}"


