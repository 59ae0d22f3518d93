"""Requests that name a prompt replay that prompt's own acceptance trace; the others draw by category."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from specsim.formats.policy import DrafterRef, Policy
from specsim.formats.profile import AcceptanceTrace
from specsim.formats.traffic import Traffic, load_traffic, save_traffic
from specsim.profiler.analytic import constant_profile
from specsim.simulator.acceptance import AcceptanceReplay
from specsim.simulator.config import SimConfig
from specsim.simulator.run import simulate


def _trace(pid: str, cat: str, r: list[int]) -> AcceptanceTrace:
    return AcceptanceTrace(prompt_id=pid, category=cat, drafter="draft", prompt_length=8, output_length=len(r),
                           k_max=4, r=r)


TRACES = [_trace("all", "x", [4] * 16), _trace("none", "x", [0] * 16), _trace("y-0", "y", [2] * 16)]


def test_named_prompt_gets_its_own_trace_and_unknown_falls_back_to_category() -> None:
    rep = AcceptanceReplay(TRACES, seed=3)
    start, length = rep.assign(("x", "x", "y", "x"), prompt_ids=("none", "all", None, "missing"))
    assert rep.prompt_matches == 2
    pos = np.zeros(4, dtype=np.int64)
    got = rep.accepted(start, length, pos, 4)
    assert got[0] == 0 and got[1] == 4  # exactly the named traces
    assert got[2] == 2  # category y has one trace
    assert got[3] in (0, 4)  # category x draw


def test_without_prompt_ids_the_seeded_draws_are_unchanged() -> None:
    a = AcceptanceReplay(TRACES, seed=5).assign(("x",) * 20)
    b = AcceptanceReplay(TRACES, seed=5).assign(("x",) * 20, prompt_ids=(None,) * 20)
    assert np.array_equal(a[0], b[0])


def test_simulation_follows_the_named_prompts() -> None:
    prof = constant_profile(step_ms=10.0, draft_ratio=0.0, alpha=0.5, k_max=4, traces=2)
    prof = prof.model_copy(update={"acceptance": TRACES})
    pol = Policy.static(DrafterRef(name="draft", method="draft_model", model="draft"), 4)
    n = 6
    base = dict(timestamps=np.arange(n) * 100.0, input_lengths=[8] * n, output_lengths=[16] * n,
                categories=["x"] * n)
    fast = simulate(prof, Traffic.from_arrays(**base, prompt_ids=["all"] * n), pol, SimConfig())
    slow = simulate(prof, Traffic.from_arrays(**base, prompt_ids=["none"] * n), pol, SimConfig())
    assert fast.summary["acceptance_prompt_matches"] == n
    assert fast.summary["acceptance_rate"] == 1.0 and slow.summary["acceptance_rate"] == 0.0
    assert fast.summary["tpot_mean"] < slow.summary["tpot_mean"]


def test_prompt_ids_round_trip_and_change_the_digest(tmp_path: Path) -> None:
    plain = Traffic.from_arrays([0.0, 1.0], [4, 5], [2, 3], categories=["a", None])
    named = Traffic.from_arrays([0.0, 1.0], [4, 5], [2, 3], categories=["a", None], prompt_ids=["p1", None])
    assert plain.prompt_ids is None and plain.digest() != named.digest()
    save_traffic(named, tmp_path / "t.jsonl")
    back = load_traffic(tmp_path / "t.jsonl")
    assert back.prompt_ids == ("p1", None)
    assert back.select(np.array([1])).prompt_ids == (None,)
    assert back.rate_scaled(2.0).prompt_ids == ("p1", None)
    save_traffic(plain, tmp_path / "p.jsonl")
    assert load_traffic(tmp_path / "p.jsonl").prompt_ids is None
    assert "prompt_id" not in (tmp_path / "p.jsonl").read_text()
