"""Step-for-step comparison of two simulations of the same run (the fast engine against vLLM's own
scheduler): which requests each step scheduled, with how many tokens and drafts, and who was
preempted. Used by `benchmarks/scheduler_parity.py`, the parity tests and `specsim check-scheduler`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from specsim.formats.policy import Policy
from specsim.formats.profile import Profile
from specsim.formats.traffic import Traffic
from specsim.simulator.config import SimConfig
from specsim.simulator.metrics import SimResult
from specsim.simulator.run import simulate


@dataclass
class ParityReport:
    """How far two runs agree."""

    steps: int
    """Steps with at least one scheduled row, in either run (keyed by replica and step index)."""
    identical: int
    """Steps whose rows (request, tokens, drafts, padded) are identical in both runs."""
    preemptions: tuple[int, int]
    finished: tuple[int, int]
    first_difference: tuple[int, int] | None
    """(replica, step) of the first step that differs, None when none does."""
    rows_a: list[tuple[int, ...]]
    rows_b: list[tuple[int, ...]]
    """The rows of that step in each run."""
    same_finish_times: bool
    """Every request finished at the same simulated time in both runs."""

    @property
    def share(self) -> float:
        return self.identical / self.steps if self.steps else 1.0

    @property
    def exact(self) -> bool:
        return self.identical == self.steps and self.preemptions[0] == self.preemptions[1] \
            and self.finished[0] == self.finished[1]


def _by_step(rows: np.ndarray) -> dict[tuple[int, int], list[tuple[int, ...]]]:
    out: dict[tuple[int, int], list[tuple[int, ...]]] = {}
    for rep, step, i, tok, spec, pad in rows.tolist():
        out.setdefault((rep, step), []).append((i, tok, spec, pad))
    return out


def compare(a: SimResult, b: SimResult) -> ParityReport:
    """Compare two runs made with `simulate(..., detail=True)`."""
    if a.detail is None or b.detail is None:
        raise ValueError("compare() needs runs made with detail=True")
    sa, sb = _by_step(a.detail["rows"]), _by_step(b.detail["rows"])
    keys = sorted(set(sa) | set(sb))
    same = [sa.get(k) == sb.get(k) for k in keys]
    first = next((k for k, ok in zip(keys, same, strict=True) if not ok), None)
    fa, fb = a.requests["e2e"], b.requests["e2e"]
    return ParityReport(
        steps=len(keys), identical=int(sum(same)),
        preemptions=(int(a.summary["preemptions"]), int(b.summary["preemptions"])),
        finished=(int(a.summary["completed"]), int(b.summary["completed"])),
        first_difference=first,
        rows_a=sa.get(first, []) if first else [], rows_b=sb.get(first, []) if first else [],
        same_finish_times=bool(np.allclose(fa, fb, rtol=0, atol=1e-9, equal_nan=True)),
    )


def check_against_vllm(profile: Profile, traffic: Traffic, policy: Policy,
                       cfg: SimConfig) -> tuple[ParityReport, SimResult, SimResult]:
    """Run the fast engine and vLLM's scheduler on the same inputs; (report, fast run, vLLM run)."""
    fast = simulate(profile, traffic, policy, dataclasses.replace(cfg, scheduler="fast"), detail=True)
    ref = simulate(profile, traffic, policy, dataclasses.replace(cfg, scheduler="vllm"), detail=True)
    return compare(fast, ref), fast, ref
